/**
 * SentencePiece model files (tokenizer.model: a protobuf ModelProto) → the vocabulary and the
 * normalizer and trainer settings that encoding depends on.
 */
import { medllavaError } from '../errors.js';
import { fields, ProtoWriter } from './protobuf.js';

/** SentencePiece piece types (sentencepiece_model.proto). */
export const PieceType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

export interface Piece {
  piece: string;
  score: number;
  type: number;
}

export interface SpModel {
  pieces: Piece[];
  /** BPE (2) is what LLaMA / Mistral / Vicuna use; UNIGRAM (1) is refused at load */
  modelType: number;
  unkId: number;
  bosId: number;
  eosId: number;
  padId: number;
  byteFallback: boolean;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
  escapeWhitespaces: boolean;
  treatWhitespaceAsSuffix: boolean;
  normalizerName: string;
  /** a precompiled normalization map (nmt_nfkc…) is present */
  hasCharsmap: boolean;
}

const decoder = new TextDecoder('utf-8', { fatal: false });

export function parseSentencePieceModel(buf: Uint8Array, what: string): SpModel {
  const m: SpModel = {
    pieces: [], modelType: 1, unkId: 0, bosId: 1, eosId: 2, padId: -1, byteFallback: false, addDummyPrefix: true,
    removeExtraWhitespaces: true, escapeWhitespaces: true, treatWhitespaceAsSuffix: false, normalizerName: '',
    hasCharsmap: false,
  };
  for (const f of fields(buf, what)) {
    if (f.number === 1 && f.bytes) {
      const p: Piece = { piece: '', score: 0, type: PieceType.NORMAL };
      for (const g of fields(f.bytes, what)) {
        if (g.number === 1 && g.bytes) p.piece = decoder.decode(g.bytes);
        else if (g.number === 2 && g.fixed32) p.score = g.fixed32.getFloat32(0, true);
        else if (g.number === 3 && g.varint !== undefined) p.type = Number(g.varint);
      }
      m.pieces.push(p);
    } else if (f.number === 2 && f.bytes) {  // TrainerSpec
      for (const g of fields(f.bytes, what)) {
        const v = g.varint !== undefined ? Number(BigInt.asIntN(64, g.varint)) : undefined;
        if (v === undefined) continue;
        if (g.number === 3) m.modelType = v;
        else if (g.number === 35) m.byteFallback = v !== 0;
        else if (g.number === 24) m.treatWhitespaceAsSuffix = v !== 0;
        else if (g.number === 40) m.unkId = v;
        else if (g.number === 41) m.bosId = v;
        else if (g.number === 42) m.eosId = v;
        else if (g.number === 43) m.padId = v;
      }
    } else if (f.number === 3 && f.bytes) {  // NormalizerSpec
      for (const g of fields(f.bytes, what)) {
        if (g.number === 1 && g.bytes) m.normalizerName = decoder.decode(g.bytes);
        else if (g.number === 2 && g.bytes) m.hasCharsmap = g.bytes.length > 0;
        else if (g.number === 3 && g.varint !== undefined) m.addDummyPrefix = g.varint !== 0n;
        else if (g.number === 4 && g.varint !== undefined) m.removeExtraWhitespaces = g.varint !== 0n;
        else if (g.number === 5 && g.varint !== undefined) m.escapeWhitespaces = g.varint !== 0n;
      }
    }
  }
  if (m.pieces.length === 0) throw medllavaError('E_FORMAT', `${what}: no pieces in the SentencePiece model`);
  if (m.modelType !== 2)
    throw medllavaError('E_UNSUPPORTED', `${what}: SentencePiece model type ${m.modelType} (only BPE, as LLaMA/Mistral use, is supported)`);
  if (m.hasCharsmap && m.normalizerName !== 'identity')
    throw medllavaError('E_UNSUPPORTED', `${what}: normalizer '${m.normalizerName}' with a precompiled map is not supported ` +
      '(LLaMA, Vicuna and Mistral use the identity normalizer)');
  if (m.treatWhitespaceAsSuffix) throw medllavaError('E_UNSUPPORTED', `${what}: treat_whitespace_as_suffix is not supported`);
  return m;
}

/** Serialises a BPE SentencePiece model in tokenizer.model's format (ModelProto), as spm_train
 * writes LLaMA-style models: identity normalizer, dummy prefix, byte fallback. */
export function writeSentencePieceModel(model: Pick<SpModel, 'pieces' | 'unkId' | 'bosId' | 'eosId' | 'padId'>): Uint8Array {
  const w = new ProtoWriter();
  for (const p of model.pieces) {
    const piece = new ProtoWriter().bytes(1, p.piece).float(2, p.score).uint(3, p.type).finish();
    w.bytes(1, piece);
  }
  const trainer = new ProtoWriter().uint(3, 2).uint(4, model.pieces.length).uint(25, true).uint(35, true)
    .uint(40, model.unkId).uint(41, model.bosId).uint(42, model.eosId).uint(43, model.padId).finish();
  w.bytes(2, trainer);
  const normalizer = new ProtoWriter().bytes(1, 'identity').uint(3, true).uint(4, false).uint(5, true).finish();
  w.bytes(3, normalizer);
  return w.finish();
}
