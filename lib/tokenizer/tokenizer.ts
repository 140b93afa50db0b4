/**
 * SentencePiece BPE exactly as LLaMA, Vicuna and Mistral use it: identity normalization with the
 * `▁` dummy prefix and space escaping, merges by piece score (ties: leftmost pair first), byte
 * fallback to `<0xXX>` pieces, control / unknown / byte piece types. Checked id-for-id against
 * Debian's python3-sentencepiece (test/tokenizer/).
 */
import { medllavaError } from '../errors.js';
import { PieceType, type Piece, type SpModel } from './sentencepiece.js';

/** LLaVA's IMAGE_TOKEN_INDEX: where an image's projected patches go. */
export const IMAGE_TOKEN_INDEX = -200;

export interface Tokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly vocabSize: number;
  /** SentencePiece encoding of `text` (special-token strings in it are plain text). */
  encode(text: string, options?: { addBos?: boolean }): number[];
  decode(ids: ArrayLike<number>): string;
  /** LLaVA's tokenizer_image_token: split on '<image>', tokenize each chunk as the HF LlamaTokenizer
   * does (BOS, special-token strings like '</s>' become their ids), insert -200 between chunks. */
  encodePrompt(prompt: string): number[];
  /** A streaming decoder: push ids, get text, never splitting a UTF-8 character. */
  createDecoder(): { push(id: number): string; flush(): string };
  /** the piece string of an id */
  piece(id: number): string;
}

const SPACE = '\u2581';
const UNK_SURFACE = ' \u2047 ';

interface Symbol {
  text: string;
  prev: number;
  next: number;
}
interface Pair {
  left: number;
  right: number;
  score: number;
  text: string;
}

/** Max-heap on (score, then smaller left index): SentencePiece's agenda order. */
class Agenda {
  private heap: Pair[] = [];
  private static before(a: Pair, b: Pair): boolean {
    return a.score > b.score || (a.score === b.score && a.left < b.left);
  }
  get size() { return this.heap.length; }
  push(p: Pair) {
    const h = this.heap;
    h.push(p);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!Agenda.before(h[i]!, h[parent]!)) break;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }
  pop(): Pair {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < h.length && Agenda.before(h[l]!, h[best]!)) best = l;
        if (r < h.length && Agenda.before(h[r]!, h[best]!)) best = r;
        if (best === i) break;
        [h[i], h[best]] = [h[best]!, h[i]!];
        i = best;
      }
    }
    return top;
  }
}

export class SentencePieceTokenizer implements Tokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly vocabSize: number;
  private readonly model: SpModel;
  /** pieces that text can produce: NORMAL, USER_DEFINED (UNUSED pieces never come out of encoding) */
  private readonly vocab = new Map<string, number>();
  private readonly userDefined: string[] = [];
  private readonly byteIds: Int32Array = new Int32Array(256).fill(-1);
  /** control pieces the HF tokenizer recognises inside prompt text ('<s>', '</s>', …), longest first */
  private readonly specialStrings: [string, number][] = [];

  /**
   * `addedTokens` are HF "added tokens" beyond the SentencePiece vocabulary (LLaVA-Med v1.0's
   * <im_start> <im_patch> <im_end>, for example): encodePrompt() matches them in text, as the HF
   * tokenizer does; encode() (plain SentencePiece) does not.
   */
  constructor(model: SpModel, addedTokens: { id: number; content: string; special: boolean }[] = []) {
    const spSize = model.pieces.length; // ids the SentencePiece model itself can produce
    const pieces = [...model.pieces];
    for (const t of addedTokens) {
      if (t.id < spSize) continue; // already a piece of the model (e.g. '<s>')
      pieces[t.id] = { piece: t.content, score: 0, type: t.special ? PieceType.CONTROL : PieceType.USER_DEFINED };
    }
    for (let i = 0; i < pieces.length; i++) {
      if (!pieces[i]) throw medllavaError('E_FORMAT', `added tokens leave id ${i} without a piece`);
    }
    this.model = { ...model, pieces };
    this.bosId = model.bosId;
    this.eosId = model.eosId;
    this.vocabSize = pieces.length;
    pieces.forEach((p: Piece, id: number) => {
      if (id < spSize && (p.type === PieceType.NORMAL || p.type === PieceType.USER_DEFINED)) {
        if (!this.vocab.has(p.piece)) this.vocab.set(p.piece, id);
      }
      if (id < spSize && p.type === PieceType.USER_DEFINED) this.userDefined.push(p.piece);
      if (p.type === PieceType.BYTE) {
        const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(p.piece);
        if (m) this.byteIds[parseInt(m[1]!, 16)] = id;
      }
      // HF splits prompt text on special tokens and added tokens before SentencePiece sees it
      if ((p.type === PieceType.CONTROL || p.type === PieceType.UNKNOWN || id >= spSize) && p.piece) {
        this.specialStrings.push([p.piece, id]);
      }
    });
    this.userDefined.sort((a, b) => b.length - a.length);
    this.specialStrings.sort((a, b) => b[0].length - a[0].length);
    if (model.unkId < 0 || model.unkId >= spSize) throw medllavaError('E_FORMAT', `unk id ${model.unkId} is outside the vocabulary`);
  }

  /** The full vocabulary (added tokens included) and its special ids, for writing GGUF metadata. */
  vocabulary(): { pieces: Piece[]; bosId: number; eosId: number; unkId: number } {
    return { pieces: this.model.pieces, bosId: this.bosId, eosId: this.eosId, unkId: this.model.unkId };
  }

  piece(id: number): string {
    const p = this.model.pieces[id];
    if (!p) throw medllavaError('E_ARGUMENT', `token id ${id} is outside the vocabulary (size ${this.vocabSize})`);
    return p.piece;
  }

  private normalize(text: string): string {
    let t = text;
    if (this.model.removeExtraWhitespaces) t = t.replace(/ +/g, ' ').replace(/^ | $/g, '');
    if (!t) return '';
    if (this.model.escapeWhitespaces) t = t.replaceAll(' ', SPACE);
    if (this.model.addDummyPrefix) t = (this.model.escapeWhitespaces ? SPACE : ' ') + t;
    return t;
  }

  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    const ids = options.addBos ? [this.bosId] : [];
    const normalized = this.normalize(text);
    if (!normalized) return ids;
    // initial symbols: user-defined pieces whole, otherwise one Unicode character each
    const symbols: Symbol[] = [];
    for (let i = 0; i < normalized.length;) {
      let len = 0;
      for (const u of this.userDefined) if (normalized.startsWith(u, i)) { len = u.length; break; }
      if (!len) len = normalized.codePointAt(i)! > 0xffff ? 2 : 1;
      symbols.push({ text: normalized.slice(i, i + len), prev: symbols.length - 1, next: symbols.length + 1 });
      i += len;
    }
    symbols[symbols.length - 1]!.next = -1;
    const agenda = new Agenda();
    const consider = (left: number, right: number) => {
      if (left < 0 || right < 0) return;
      const text = symbols[left]!.text + symbols[right]!.text;
      const id = this.vocab.get(text);
      if (id === undefined) return;
      agenda.push({ left, right, score: this.model.pieces[id]!.score, text });
    };
    for (let i = 1; i < symbols.length; i++) consider(i - 1, i);
    while (agenda.size) {
      const top = agenda.pop();
      const l = symbols[top.left]!;
      const r = symbols[top.right]!;
      // stale: one side has been merged away or grown since this pair was queued
      if (!l.text || !r.text || l.text + r.text !== top.text || l.next !== top.right) continue;
      l.text = top.text;
      r.text = '';
      l.next = r.next;
      if (r.next >= 0) symbols[r.next]!.prev = top.left;
      consider(l.prev, top.left);
      consider(top.left, l.next);
    }
    for (let i = 0; i >= 0 && i < symbols.length; i = symbols[i]!.next) {
      const s = symbols[i]!;
      const id = this.vocab.get(s.text);
      if (id !== undefined) {
        ids.push(id);
      } else if (this.model.byteFallback) {
        for (const b of new TextEncoder().encode(s.text)) {
          const bid = this.byteIds[b]!;
          ids.push(bid >= 0 ? bid : this.model.unkId);
        }
      } else {
        ids.push(this.model.unkId);
      }
    }
    return ids;
  }

  /** HF LlamaTokenizer semantics for one chunk: special-token strings become their ids, each text
   * run between them is SentencePiece-encoded (with the dummy prefix, the 'legacy' behaviour LLaVA
   * was trained with), BOS first. */
  private encodeHf(text: string): number[] {
    const ids = [this.bosId];
    let rest = text;
    while (rest.length) {
      let at = -1;
      let hit: [string, number] | undefined;
      for (const s of this.specialStrings) {
        const k = rest.indexOf(s[0]);
        if (k >= 0 && (at < 0 || k < at)) { at = k; hit = s; }
      }
      if (!hit) { ids.push(...this.encode(rest)); break; }
      if (at > 0) ids.push(...this.encode(rest.slice(0, at)));
      ids.push(hit[1]);
      rest = rest.slice(at + hit[0].length);
    }
    return ids;
  }

  encodePrompt(prompt: string): number[] {
    const chunks = prompt.split('<image>').map((c) => this.encodeHf(c));
    // tokenizer_image_token: keep the first chunk's BOS, drop the others', -200 between chunks
    const out: number[] = [];
    chunks.forEach((c, i) => {
      if (i > 0) out.push(IMAGE_TOKEN_INDEX);
      out.push(...(i === 0 ? c : c.slice(1)));
    });
    return out;
  }

  createDecoder(): { push(id: number): string; flush(): string } {
    const utf8 = new TextDecoder('utf-8', { fatal: false });
    const enc = new TextEncoder();
    let first = true;
    const push = (id: number): string => {
      const p = this.model.pieces[id];
      if (!p) throw medllavaError('E_ARGUMENT', `token id ${id} is outside the vocabulary (size ${this.vocabSize})`);
      if (p.type === PieceType.CONTROL) return '';
      if (p.type === PieceType.BYTE) {
        const b = parseInt(p.piece.slice(3, 5), 16);
        first = false;
        return utf8.decode(new Uint8Array([b]), { stream: true });
      }
      let text = p.type === PieceType.UNKNOWN ? UNK_SURFACE : p.piece.replaceAll(SPACE, ' ');
      if (first && this.model.addDummyPrefix && text.startsWith(' ')) text = text.slice(1);
      first = false;
      return utf8.decode(enc.encode(text), { stream: true });
    };
    return { push, flush: () => utf8.decode() };
  }

  decode(ids: ArrayLike<number>): string {
    const d = this.createDecoder();
    let out = '';
    for (let i = 0; i < ids.length; i++) out += d.push(ids[i]!);
    return out + d.flush();
  }
}
