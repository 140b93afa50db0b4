/**
 * LLaVA-Med's VQA scoring, as its paper's numbers were computed (re-implemented from the documented behaviour):
 *   - answers are lower-cased and normalised the way the VQA v2 evaluation toolkit normalises (punctuation,
 *     periods, number words, articles, contractions, commas), with LLaVA-Med's punctuation set and its quirks;
 *   - closed ("yes/no") accuracy: the normalised reference is a substring of the normalised prediction — a raw
 *     substring test, for every CLOSED question (not only yes/no ones);
 *   - open recall: per question, the share of reference tokens found in the prediction, where each matching
 *     prediction token counts with the prediction's multiplicity (so repeating a right word inflates it), averaged
 *     over OPEN questions; 0 when either side is empty or nothing matches.
 * `strict` gives the variants a careful reader would want: closed = exact match of the normalised answers, open =
 * recall with each reference token matched at most as often as it occurs (clipped counts).
 */

const PUNCTUATION = [';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',', '?', '!'];
const NUMBER_WORDS: Record<string, string> = {
  none: '0', zero: '0', one: '1', two: '2', three: '3', four: '4', five: '5', six: '6', seven: '7', eight: '8', nine: '9', ten: '10',
};
const ARTICLES = new Set(['a', 'an', 'the']);
/**
 * Contractions restored, with the VQA evaluation toolkit's effective mapping on lower-cased text (LLaVA-Med uses
 * that table): a form with one apostrophe is restored from its spelling without it ("dont" → "don't"); a form with
 * several from each spelling that lacks just one of them ("couldnt've", "couldn'tve" → "couldn't've"; never the
 * bare "couldntve"). The toolkit's table has only the forms listed here — so "im", "hell", "well", "were", "its",
 * "shell" and "wed" stay as they are (its "I…" keys are capitalised and never match lower-cased text) — and one
 * entry runs backwards: "somebody'd" becomes "somebodyd". Checked entry by entry against the toolkit's table.
 */
const CONTRACTIONS: Record<string, string> = (() => {
  const forms = ["ain't", "aren't", "can't", "could've", "couldn't", "didn't", "doesn't", "don't", "hadn't", "hasn't", "haven't", "he'd",
    "he's", "how'd", "how'll", "how's", "isn't", "it'd", "it'll", "ma'am", "might've", "mightn't", "must've", "mustn't", "needn't",
    "not've", "o'clock", "oughtn't", "shan't", "should've", "shouldn't", "somebody'll", "somebody's", "someone'd", "someone'll",
    "someone's", "something'd", "something'll", "that's", "there'd", "there're", "there's", "they'd", "they'll", "they're", "they've",
    "'twas", "wasn't", "we've", "weren't", "what'll", "what're", "what's", "what've", "when's", "where'd", "where's", "where've", "who'd",
    "who'll", "who's", "who've", "why'll", "why're", "why's", "won't", "would've", "wouldn't", "y'all", "you'd", "you'll", "you're",
    "you've",
    "couldn't've", "hadn't've", "he'd've", "it'd've", "mightn't've", "she'd've", "shouldn't've", "somebody'd've", "someone'd've",
    "something'd've", "there'd've", "they'd've", "we'd've", "who'd've", "wouldn't've", "you'd've", "y'all'd've", "y'all'll", "'ow's'at"];
  const t: Record<string, string> = {};
  for (const f of forms) {
    const at = [...f.matchAll(/'/g)].map((m) => m.index!);
    if (at.length === 1) t[f.replace("'", '')] = f;
    else for (const i of at) t[f.slice(0, i) + f.slice(i + 1)] = f;
  }
  t["somebody'd"] = 'somebodyd';
  return t;
})();

const commaBetweenDigits = /(\d)(,)(\d)/;

/** LLaVA-Med's normalize_word over a lower-cased answer. */
export function normalizeAnswer(answer: string): string {
  const input = answer.toLowerCase();
  // punctuation: deleted where the original has it next to a space (or has a digit,digit anywhere), else a space
  let out = input;
  for (const p of PUNCTUATION) {
    const remove = input.includes(`${p} `) || input.includes(` ${p}`) || commaBetweenDigits.test(input);
    out = out.split(p).join(remove ? '' : ' ');
  }
  // periods not followed by a digit are deleted — only the first 32 of them (upstream passes re.UNICODE, 32, as
  // re.sub's count)
  let removed = 0;
  out = out.replace(/\.(?!\d)/g, (m) => (removed++ < 32 ? '' : m));
  // words: number words to digits, articles dropped, contractions restored
  const words: string[] = [];
  for (const w of out.split(/\s+/).filter((x) => x !== '')) {
    const mapped = NUMBER_WORDS[w] ?? w;
    if (ARTICLES.has(mapped)) continue;
    words.push(CONTRACTIONS[mapped] ?? mapped);
  }
  return words.join(' ').replaceAll(',', '');
}

function tokens(s: string): string[] {
  return s.toLowerCase().trim().split(/\s+/).filter((x) => x !== '');
}

/** Closed: the paper's substring hit (strict: exact match) over normalised answers. */
export function closedHit(prediction: string, reference: string, strict = false): boolean {
  const p = normalizeAnswer(prediction), r = normalizeAnswer(reference);
  return strict ? p === r : p.includes(r);
}

/** Open: the paper's recall (the prediction's multiplicity; strict: clipped to the reference's counts), in [0, 1]. */
export function openRecall(prediction: string, reference: string, strict = false): number {
  const pc = new Map<string, number>(), rc = new Map<string, number>();
  for (const t of tokens(normalizeAnswer(prediction))) pc.set(t, (pc.get(t) ?? 0) + 1);
  for (const t of tokens(normalizeAnswer(reference))) rc.set(t, (rc.get(t) ?? 0) + 1);
  if (pc.size === 0 || rc.size === 0) return 0;
  let tp = 0, fn = 0;
  for (const [w, n] of pc) if (rc.has(w)) tp += strict ? Math.min(n, rc.get(w)!) : n;
  for (const [w, n] of rc) if (!pc.has(w)) fn += n;
  if (tp === 0) return 0;
  return tp / (tp + fn);
}

export interface VqaItem { answerType: string; reference: string; prediction: string }
export interface VqaScore { open: number; closed: number; openCount: number; closedCount: number }

/** Open recall and closed accuracy, in percent, over items (CLOSED by answer type, everything else OPEN). */
export function scoreVqa(items: VqaItem[], options: { strict?: boolean } = {}): VqaScore {
  let open = 0, closed = 0, nOpen = 0, nClosed = 0;
  for (const it of items) {
    if (it.answerType.toUpperCase() === 'CLOSED') {
      nClosed++;
      if (closedHit(it.prediction, it.reference, options.strict)) closed++;
    } else {
      nOpen++;
      open += openRecall(it.prediction, it.reference, options.strict);
    }
  }
  return { open: nOpen ? (100 * open) / nOpen : NaN, closed: nClosed ? (100 * closed) / nClosed : NaN, openCount: nOpen, closedCount: nClosed };
}
