/**
 * loadTokenizer(source): a SentencePiece BPE tokenizer from tokenizer.model (protobuf), an HF
 * tokenizer.json, an HF model directory (with tokenizer_config.json / added_tokens.json), or a
 * GGUF file's tokenizer.ggml.* metadata.
 */
import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

import { readJsonFile } from '../util/json.js';
import { join } from 'node:path';

import { medllavaError } from '../errors.js';
import { native, type GgufKeyValue } from '../native.js';
import { parseSentencePieceModel, PieceType, type Piece, type SpModel } from './sentencepiece.js';
import { SentencePieceTokenizer, type Tokenizer } from './tokenizer.js';

type AddedToken = { id: number; content: string; special: boolean };

const readJson = readJsonFile;

/** tokenizer.ggml.* metadata (llama.cpp's "llama" = SentencePiece tokenizer) → SpModel. */
export function spModelFromGguf(metadata: GgufKeyValue[], what: string): SpModel {
  const get = (k: string) => metadata.find((m) => m.key === k)?.value;
  const model = get('tokenizer.ggml.model');
  if (model !== 'llama') {
    throw medllavaError('E_UNSUPPORTED', `${what}: tokenizer.ggml.model '${String(model)}' (only 'llama', SentencePiece BPE, is supported)`);
  }
  const tokens = get('tokenizer.ggml.tokens');
  if (!Array.isArray(tokens) || tokens.some((t) => typeof t !== 'string')) {
    throw medllavaError('E_FORMAT', `${what}: tokenizer.ggml.tokens must be an array of strings`);
  }
  const scores = get('tokenizer.ggml.scores') as Float32Array | undefined;
  const types = get('tokenizer.ggml.token_type') as Int32Array | undefined;
  if (scores && scores.length !== tokens.length) throw medllavaError('E_FORMAT', `${what}: scores and tokens differ in length`);
  if (types && types.length !== tokens.length) throw medllavaError('E_FORMAT', `${what}: token_type and tokens differ in length`);
  const pieces: Piece[] = (tokens as string[]).map((piece, i) => ({
    piece, score: scores ? scores[i]! : 0, type: types ? types[i]! : PieceType.NORMAL,
  }));
  const id = (k: string, dflt: number) => {
    const v = get(k);
    return typeof v === 'number' ? v : dflt;
  };
  const unkId = id('tokenizer.ggml.unknown_token_id', pieces.findIndex((p) => p.type === PieceType.UNKNOWN));
  return {
    pieces, modelType: 2, unkId: unkId < 0 ? 0 : unkId, bosId: id('tokenizer.ggml.bos_token_id', 1),
    eosId: id('tokenizer.ggml.eos_token_id', 2), padId: id('tokenizer.ggml.padding_token_id', -1),
    byteFallback: pieces.some((p) => p.type === PieceType.BYTE),
    addDummyPrefix: get('tokenizer.ggml.add_space_prefix') !== false, removeExtraWhitespaces: false,
    escapeWhitespaces: true, treatWhitespaceAsSuffix: false, normalizerName: 'identity', hasCharsmap: false,
  };
}

interface HfTokenizerJson {
  added_tokens?: { id: number; content: string; special?: boolean }[];
  normalizer?: unknown;
  pre_tokenizer?: unknown;
  model?: { type?: string; vocab?: Record<string, number>; merges?: (string | [string, string])[]; byte_fallback?: boolean; unk_token?: string };
}

/** An HF tokenizer.json of a SentencePiece-converted BPE (LLaMA, Mistral) → SpModel + added tokens.
 * Merge ranks become piece scores (the earliest merge producing a piece ranks it), which gives
 * SentencePiece's merge order on these vocabularies. */
export function spModelFromTokenizerJson(j: HfTokenizerJson, what: string): { model: SpModel; added: AddedToken[] } {
  const m = j.model;
  if (!m || m.type !== 'BPE' || !m.vocab || !m.merges) {
    throw medllavaError('E_UNSUPPORTED', `${what}: only BPE tokenizer.json models (LLaMA / Mistral style) are supported`);
  }
  const size = Math.max(-1, ...Object.values(m.vocab)) + 1;
  const pieces: (Piece | undefined)[] = new Array(size);
  for (const [piece, id] of Object.entries(m.vocab)) {
    const byte = /^<0x[0-9A-F]{2}>$/.test(piece);
    pieces[id] = { piece, score: 0, type: byte ? PieceType.BYTE : PieceType.NORMAL };
  }
  m.merges.forEach((merge, rank) => {
    const [a, b] = typeof merge === 'string' ? merge.split(' ') : merge;
    const id = m.vocab![`${a}${b}`];
    if (id === undefined) throw medllavaError('E_FORMAT', `${what}: merge ${rank} produces a piece outside the vocabulary`);
    const p = pieces[id]!;
    if (p.score === 0) p.score = -(rank + 1);
  });
  const added: AddedToken[] = [];
  for (const t of j.added_tokens ?? []) {
    added.push({ id: t.id, content: t.content, special: t.special ?? false });
    const p = pieces[t.id];
    if (p) p.type = t.content === m.unk_token ? PieceType.UNKNOWN : t.special ? PieceType.CONTROL : PieceType.USER_DEFINED;
  }
  // the SentencePiece part is the dense prefix of ids; added tokens may extend it
  let end = 0;
  while (end < pieces.length && pieces[end]) end++;
  const base = pieces.slice(0, end) as Piece[];
  const idOf = (s: string, dflt: number) => m.vocab![s] ?? added.find((t) => t.content === s)?.id ?? dflt;
  const text = JSON.stringify([j.normalizer, j.pre_tokenizer]);
  const prepends = /"Prepend"|"prepend_scheme":"(first|always)"|"add_prefix_space":true/.test(text);
  return {
    model: {
      pieces: base, modelType: 2, unkId: idOf(m.unk_token ?? '<unk>', 0), bosId: idOf('<s>', 1), eosId: idOf('</s>', 2),
      padId: -1, byteFallback: m.byte_fallback ?? false, addDummyPrefix: prepends, removeExtraWhitespaces: false,
      escapeWhitespaces: true, treatWhitespaceAsSuffix: false, normalizerName: 'identity', hasCharsmap: false,
    },
    added: added.filter((t) => t.id >= base.length),
  };
}

/** HF added tokens of a model directory: tokenizer_config.json's added_tokens_decoder, or added_tokens.json. */
async function addedTokensOf(dir: string): Promise<AddedToken[]> {
  const out: AddedToken[] = [];
  const cfgPath = join(dir, 'tokenizer_config.json');
  if (existsSync(cfgPath)) {
    const cfg = (await readJson(cfgPath)) as { added_tokens_decoder?: Record<string, { content: string; special?: boolean }> };
    for (const [id, t] of Object.entries(cfg.added_tokens_decoder ?? {})) out.push({ id: Number(id), content: t.content, special: t.special ?? false });
  }
  const addedPath = join(dir, 'added_tokens.json');
  if (existsSync(addedPath)) {
    const a = (await readJson(addedPath)) as Record<string, number>;
    for (const [content, id] of Object.entries(a)) if (!out.some((t) => t.id === id)) out.push({ id, content, special: false });
  }
  return out;
}

/** A tokenizer from tokenizer.model, tokenizer.json, an HF model directory or a .gguf file. */
export async function loadTokenizer(source: string): Promise<Tokenizer> {
  if (typeof source !== 'string' || !source) throw medllavaError('E_ARGUMENT', 'loadTokenizer(source): source must be a path');
  if (!existsSync(source)) throw medllavaError('E_IO', `${source} does not exist`);
  if (statSync(source).isDirectory()) {
    const added = await addedTokensOf(source);
    const spm = join(source, 'tokenizer.model');
    if (existsSync(spm)) return new SentencePieceTokenizer(parseSentencePieceModel(await readFile(spm), spm), added);
    const tj = join(source, 'tokenizer.json');
    if (existsSync(tj)) {
      const { model, added: fromJson } = spModelFromTokenizerJson((await readJson(tj)) as HfTokenizerJson, tj);
      return new SentencePieceTokenizer(model, [...fromJson, ...added.filter((a) => !fromJson.some((b) => b.id === a.id))]);
    }
    throw medllavaError('E_IO', `${source} has neither tokenizer.model nor tokenizer.json`);
  }
  if (source.endsWith('.gguf')) {
    const h = await native().readGguf(source);
    return new SentencePieceTokenizer(spModelFromGguf(h.metadata, source));
  }
  if (source.endsWith('.json')) {
    const { model, added } = spModelFromTokenizerJson((await readJson(source)) as HfTokenizerJson, source);
    return new SentencePieceTokenizer(model, added);
  }
  return new SentencePieceTokenizer(parseSentencePieceModel(await readFile(source), source));
}
