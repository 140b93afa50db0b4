/**
 * Report-generation metrics (lib/eval/report.ts): sacrebleu's 13a tokenizer on hand-worked lines; corpus BLEU
 * against Debian's python3-nltk (corpus_bleu on the same tokens, where every n-gram order matches, so the two
 * definitions coincide) and by hand where sacrebleu's 'exp' smoothing applies; ROUGE-L by hand; the findings
 * labeller on hand-worked sentences and on the CheXpert labeller's own four sample reports and their published
 * labels; micro / macro F1 by hand.
 */
import { describe, expect, it } from 'vitest';

import { corpusBleu, findingsF1, labelReport, OBSERVATIONS, rougeL, rougeTokens, tokenize13a, type Label, type Observation } from '../../lib/eval/report.js';
import { python } from '../support/python.js';

describe('tokenize13a', () => {
  it.each([
    ['Hello, world.', 'Hello , world .'],
    ['3.5 cm and 1,000 cells', '3.5 cm and 1,000 cells'],
    ['x-ray (PA view)!', 'x-ray ( PA view ) !'],
    ['12-3 and a-b', '12 - 3 and a-b'],
    ["don't stop", "don't stop"],
    ['a&amp;b "q"', 'a & b " q "'],
    ['T2/FLAIR: bright', 'T2 / FLAIR : bright'],
  ])('%j → %j', (line, want) => expect(tokenize13a(line)).toBe(want));
});

describe('corpusBleu', () => {
  const preds = ['There is a small left pleural effusion and the heart size is normal.', 'No pneumothorax is seen in the right lung.',
    'The lungs are clear, without focal consolidation.'];
  const refs = ['There is a small left pleural effusion; the heart size is normal.', 'No pneumothorax is seen.',
    'The lungs are clear without focal consolidation or effusion.'];
  it('equals nltk corpus_bleu on the same 13a tokens (every order matched: no smoothing involved)', () => {
    const ours = corpusBleu(preds, refs);
    expect(ours.counts.every((c) => c > 0)).toBe(true);
    const ref = Number(python(`
import json, sys
from nltk.translate.bleu_score import corpus_bleu
d = json.loads(sys.stdin.read())
print(repr(corpus_bleu([[r.split(' ')] for r in d['refs']], [h.split(' ') for h in d['preds']])))
`, [], JSON.stringify({ preds: preds.map(tokenize13a), refs: refs.map(tokenize13a) })));
    expect(ours.score / 100).toBeCloseTo(ref, 12);
  });
  it("smooths an order without matches as sacrebleu's 'exp' does, and penalises brevity", () => {
    // one pair: hyp "a b c d" vs ref "a b x d e": 1-grams 3/4, 2-grams 1/3, 3-grams 0/2 → 100/(2·2), 4-grams 0/1 → 100/(4·1)
    const r = corpusBleu(['a b c d'], ['a b x d e']);
    expect(r.precisions).toEqual([75, 100 / 3, 25, 25]);
    expect(r.bp).toBeCloseTo(Math.exp(1 - 5 / 4), 15);
    expect(r.score).toBeCloseTo(Math.exp(1 - 5 / 4) * Math.exp((Math.log(75) + Math.log(100 / 3) + Math.log(25) + Math.log(25)) / 4), 10);
    expect(corpusBleu(['a'], ['b c']).score).toBeLessThan(1e-6);
    expect(corpusBleu(['the same four words'], ['the same four words']).score).toBeCloseTo(100, 10);
    // fewer tokens than the order: that order has no n-grams at all, and sacrebleu scores 0 (no effective order)
    expect(corpusBleu(['same words here'], ['same words here']).score).toBeLessThan(1e-6);
  });
});

describe('rougeL', () => {
  it('tokenises like rouge-score (lower case, non-alphanumerics separate) and scores the LCS F-measure', () => {
    expect(rougeTokens("The Cat, sat; on the mat's edge!")).toEqual(['the', 'cat', 'sat', 'on', 'the', 'mat', 's', 'edge']);
    const r = rougeL('the cat sat on the mat', 'the cat was on the mat');
    expect(r.precision).toBeCloseTo(5 / 6, 15);
    expect(r.recall).toBeCloseTo(5 / 6, 15);
    const s = rougeL('left effusion', 'there is a small left pleural effusion');  // LCS 2: P 1, R 2/7
    expect(s.fmeasure).toBeCloseTo((2 * 1 * (2 / 7)) / (1 + 2 / 7), 15);
    expect(rougeL('', 'x').fmeasure).toBe(0);
  });
});

const lab = (r: string) => Object.fromEntries(Object.entries(labelReport(r)).filter(([, v]) => v !== null));

describe('labelReport', () => {
  it.each([
    ['No pleural effusion or pneumothorax. Heart size is normal.', { 'Pleural Effusion': 0, Pneumothorax: 0, Cardiomegaly: 0, 'No Finding': 1 }],
    ['There is a small left pleural effusion.', { 'Pleural Effusion': 1 }],
    ['Possible right lower lobe pneumonia.', { Pneumonia: -1 }],
    ['Cardiomegaly with mild pulmonary edema.', { Cardiomegaly: 1, Edema: 1 }],
    ['Endotracheal tube in place. Lungs are clear.', { 'Support Devices': 1, 'No Finding': 1 }],
    ['The pneumothorax has resolved.', { Pneumothorax: 0, 'No Finding': 1 }],
    ['No focal consolidation, but a 1 cm nodule is seen in the right upper lobe.', { Consolidation: 0, 'Lung Lesion': 1 }],
    ['Findings are suggestive of heart failure.', { Edema: -1, Cardiomegaly: -1 }],
    ['Small pericardial effusion.', { 'No Finding': 1 }],
  ] as [string, Partial<Record<Observation, Label>>][])('%j', (report, want) => expect(lab(report)).toEqual(want));

  // The CheXpert labeller's sample_reports.csv and labeled_reports.csv (github.com/stanfordmlgroup/chexpert-labeler,
  // MIT licence, Copyright (c) 2018 Stanford Machine Learning Group): four reports and the labels it gives them.
  it.each([
    ['Heart size normal and lungs are clear. No edema or pneumonia. No effusion',
      { 'No Finding': 1, Cardiomegaly: 0, Edema: 0, Pneumonia: 0, 'Pleural Effusion': 0 }],
    ['1. Left pleural effusion with adjacent atelectasis. Right effusion is also present.\n\n2. Cardiomegaly without overt edema.',
      { Cardiomegaly: 1, Edema: 0, Atelectasis: 1, 'Pleural Effusion': 1 }],
    ['Minimal patchy airspace disease within the lingula, may reflect atelectasis or consolidation.',
      { 'Lung Opacity': 1, Consolidation: -1, Atelectasis: -1 }],
    ['1. Stable mild cardiomegaly. 2. Hyperexpanded but clear lungs.', { Cardiomegaly: 1 }],
  ] as [string, Partial<Record<Observation, Label>>][])('the CheXpert labeller\'s sample %#', (report, want) => expect(lab(report)).toEqual(want));
});

describe('findingsF1', () => {
  const L = (o: Partial<Record<Observation, Label>>) => ({ ...Object.fromEntries(OBSERVATIONS.map((x) => [x, null])), ...o }) as Record<Observation, Label>;
  it('micro and macro F1 over 14 and 5 classes (sklearn, zero_division 0), uncertain as negative or positive', () => {
    const refs = [L({ Cardiomegaly: 1, Edema: 1 }), L({ 'Pleural Effusion': 1 }), L({ 'No Finding': 1 })];
    const preds = [L({ Cardiomegaly: 1 }), L({ 'Pleural Effusion': -1, Edema: 1 }), L({ 'No Finding': 1 })];
    const f = findingsF1(preds, refs);
    // positives: Cardiomegaly tp1; Edema fp1 fn1; Pleural Effusion fn1 (uncertain → 0); No Finding tp1
    expect(f.perClass['Cardiomegaly']).toBe(1);
    expect(f.perClass['Edema']).toBe(0);
    expect(f.perClass['Pleural Effusion']).toBe(0);
    expect(f.perClass['No Finding']).toBe(1);
    expect(f.micro14).toBeCloseTo((2 * 2) / (2 * 2 + 1 + 2), 15);
    expect(f.macro14).toBeCloseTo(2 / 14, 15);
    expect(f.micro5).toBeCloseTo((2 * 1) / (2 * 1 + 1 + 2), 15);
    expect(f.macro5).toBeCloseTo(1 / 5, 15);
    const plus = findingsF1(preds, refs, true);
    expect(plus.perClass['Pleural Effusion']).toBe(1);
  });
});
