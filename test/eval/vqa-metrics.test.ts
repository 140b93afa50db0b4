/**
 * LLaVA-Med's VQA metrics (lib/eval/vqa-metrics.ts) on hand-computed cases: every normalisation rule and quirk
 * (punctuation deleted next to a space or anywhere after a digit,digit, else a space; periods not before a digit
 * deleted — the first 32 only; number words; articles; contractions; commas), the paper's closed substring test
 * (its quirk: the reference inside a longer word counts) and open recall with the prediction's multiplicity, and
 * the strict variants.
 */
import { describe, expect, it } from 'vitest';

import { closedHit, normalizeAnswer, openRecall, scoreVqa } from '../../lib/eval/vqa-metrics.js';

describe('normalizeAnswer', () => {
  it.each([
    ['Yes.', 'yes'],
    ['The left lung', 'left lung'],
    ['Two nodules', '2 nodules'],
    ['none', '0'],
    ['3.5 cm', '3.5 cm'],                  // a period before a digit stays
    ['left, right', 'left right'],         // ', ' in the input: commas deleted
    ['left,right', 'left right'],          // no space next to it: a space instead
    ['1,000 cells', '1000 cells'],         // a digit,digit anywhere: every punctuation mark deleted
    ['a/b', 'b'],                          // '/' → ' ', then the article 'a' goes
    ['(axial) CT', 'axial ct'],            // ' (' in the input: deleted
    ['dont know', "don't know"],
    ['isnt it', "isn't it"],
    ['  many   spaces  ', 'many spaces'],
    // the VQA toolkit's contraction table exactly (compared entry by entry with its vqaEval.py):
    ["couldnt've", "couldn't've"],          // several apostrophes: restored from a spelling missing one
    ["couldn'tve", "couldn't've"],
    ['couldntve', 'couldntve'],            // … never from the bare spelling
    ['well defined', 'well defined'],      // no "we'll", "he'll", "we're", "it's", "I'm" entries
    ['im sure its here', 'im sure its here'],
    ["somebody'd", 'somebodyd'],           // the one entry that runs backwards
    ['twas', "'twas"],
  ])('%j → %j', (input, want) => {
    expect(normalizeAnswer(input)).toBe(want);
  });
  it('deletes only the first 32 periods (upstream passes re.UNICODE as re.sub\'s count)', () => {
    expect(normalizeAnswer('x.'.repeat(33))).toBe(`${'x'.repeat(33)}.`);
    expect(normalizeAnswer('x.'.repeat(32))).toBe('x'.repeat(32));
  });
});

describe('closed and open', () => {
  it('closed: the normalised reference as a substring of the normalised prediction; strict: equal', () => {
    expect(closedHit('No, there is no effusion.', 'no')).toBe(true);
    expect(closedHit('No, there is no effusion.', 'no', true)).toBe(false);
    expect(closedHit('Yes', 'no')).toBe(false);
    expect(closedHit('A nodule', 'no')).toBe(true);       // the quirk: 'no' inside 'nodule'
    expect(closedHit('A nodule', 'no', true)).toBe(false);
    expect(closedHit('None', 'no')).toBe(false);          // 'none' becomes '0' first
    expect(closedHit('Yes.', 'yes', true)).toBe(true);
  });
  it('open: recall with the prediction\'s multiplicity; strict clips it to the reference\'s counts', () => {
    expect(openRecall('left left', 'left lung')).toBeCloseTo(2 / 3, 12);   // tp 2 (left ×2), fn 1 (lung)
    expect(openRecall('left left', 'left lung', true)).toBeCloseTo(1 / 2, 12);
    expect(openRecall('The left lung.', 'left lung')).toBe(1);
    expect(openRecall('right', 'left')).toBe(0);
    expect(openRecall('', 'left')).toBe(0);
    expect(openRecall('left', '')).toBe(0);
  });
  it('scoreVqa: percent over CLOSED and OPEN questions', () => {
    const s = scoreVqa([
      { answerType: 'CLOSED', reference: 'yes', prediction: 'Yes, it is.' },
      { answerType: 'CLOSED', reference: 'no', prediction: 'Yes.' },
      { answerType: 'OPEN', reference: 'left lung', prediction: 'the left lung' },
      { answerType: 'OPEN', reference: 'left lung', prediction: 'left left' },
    ]);
    expect(s.closed).toBe(50);
    expect(s.open).toBeCloseTo((100 * (1 + 2 / 3)) / 2, 10);
    expect([s.closedCount, s.openCount]).toEqual([2, 2]);
    expect(scoreVqa([]).open).toBeNaN();
  });
});
