/**
 * Trains a SentencePiece BPE vocabulary on a text corpus, the way `spm_train --model_type=bpe` builds LLaMA-style
 * tokenizers: whitespace becomes ▁ with a dummy prefix, pieces never cross a word boundary, every character of
 * the corpus is a piece, merges are taken most-frequent-pair first, and a merged piece's score is minus its merge
 * rank (so encoding, which merges the best-scoring pair first, replays training). Byte fallback covers anything
 * unseen. The result is a tokenizer.model that the sentencepiece library and our tokenizer both read.
 */
import { medllavaError } from '../errors.js';
import { PieceType, type Piece, writeSentencePieceModel } from './sentencepiece.js';

export interface TrainBpeOptions {
  /** total pieces, the 3 specials and 256 byte pieces included (default 1000) */
  vocabSize?: number;
}

const SPACE = '\u2581';

/** `lines` → the pieces and tokenizer.model bytes (ids: <unk> 0, <s> 1, </s> 2, bytes 3…258, then the vocabulary) */
export function trainBpe(lines: Iterable<string>, options: TrainBpeOptions = {}): { pieces: Piece[]; model: Uint8Array } {
  const vocabSize = options.vocabSize ?? 1000;
  // words with their counts: "▁word" symbols as arrays of characters
  const counts = new Map<string, number>();
  for (const line of lines) {
    const text = line.trim();
    if (!text) continue;
    for (const w of text.split(' ')) {
      if (!w) continue;
      const key = SPACE + w;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  const chars = new Map<string, number>();
  for (const [w, n] of counts) for (const c of w) chars.set(c, (chars.get(c) ?? 0) + n);
  const base = 3 + 256;
  if (vocabSize < base + chars.size) {
    throw medllavaError('E_ARGUMENT', `vocabSize ${vocabSize} is below the ${base} special and byte pieces plus the corpus's ${chars.size} characters`);
  }
  const words = [...counts].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([w, n]) => ({ syms: [...w], n }));
  // what spm_train allows in one piece: ▁ only first, one Unicode script (its split_by_unicode_script: here
  // letters vs the Common script of digits and punctuation), at most 16 characters
  const klass = (c: string) => c === SPACE ? 'W' : /[\p{L}\p{M}]/u.test(c) ? 'L' : 'C'; // digits share punctuation's Common script
  const pieceClass = new Map<string, string>();
  const classOf = (p: string): string => {
    let k = pieceClass.get(p);
    if (k === undefined) {
      const cs = [...p].filter((c) => c !== SPACE).map(klass);
      k = cs.length === 0 ? 'W' : cs.every((c) => c === cs[0]) ? cs[0]! : 'X';
      pieceClass.set(p, k);
    }
    return k;
  };
  const mergeable = (a: string, b: string) => {
    if (b.startsWith(SPACE)) return false;
    if ([...a].length + [...b].length > 16) return false;
    const ka = classOf(a), kb = classOf(b);
    return ka === 'W' || ka === kb;
  };
  const merges: string[] = [];
  const budget = vocabSize - base - chars.size;
  while (merges.length < budget) {
    const pairs = new Map<string, number>();
    for (const { syms, n } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        if (!mergeable(syms[i]!, syms[i + 1]!)) continue;
        const k = `${syms[i]}\u0000${syms[i + 1]}`;
        pairs.set(k, (pairs.get(k) ?? 0) + n);
      }
    }
    // the most frequent pair; ties: the shorter piece, then the smaller string (spm_train's order)
    let best: string | null = null, bestN = 1, bestLen = 0, bestStr = '';
    for (const [k, n] of pairs) {
      if (n < bestN) continue;
      const str = k.replace('\u0000', ''), len = [...str].length;
      if (n > bestN || best === null || len < bestLen || (len === bestLen && str < bestStr)) { best = k; bestN = n; bestLen = len; bestStr = str; }
    }
    if (best === null) break; // nothing left to merge (every pair occurs once)
    const [a, b] = best.split('\u0000') as [string, string];
    const merged = a + b;
    merges.push(merged);
    for (const w of words) {
      const s = w.syms;
      if (s.length < 2) continue;
      const out: string[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) { out.push(merged); i++; } else out.push(s[i]!);
      }
      w.syms = out;
    }
  }
  const pieces: Piece[] = [
    { piece: '<unk>', score: 0, type: PieceType.UNKNOWN },
    { piece: '<s>', score: 0, type: PieceType.CONTROL },
    { piece: '</s>', score: 0, type: PieceType.CONTROL },
  ];
  for (let b = 0; b < 256; b++) pieces.push({ piece: `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, score: 0, type: PieceType.BYTE });
  const seen = new Set<string>();
  merges.forEach((m, i) => { if (!seen.has(m)) { seen.add(m); pieces.push({ piece: m, score: -i, type: PieceType.NORMAL }); } });
  // characters last, most frequent first, scored below every merge
  const sortedChars = [...chars].filter(([c]) => !seen.has(c)).sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1));
  sortedChars.forEach(([c], i) => pieces.push({ piece: c, score: -(merges.length + i), type: PieceType.NORMAL }));
  return { pieces, model: writeSentencePieceModel({ pieces, unkId: 0, bosId: 1, eosId: 2, padId: -1 }) };
}
