/**
 * The evaluation runners around the metrics: `evalVqa` (answers in upstream's answer-file layout, in order, the
 * scores recomputed from that file), `evalChat` with a judge on a loopback OpenAI-protocol server (the judge's
 * prompt carries caption, mentions, question, reference as Assistant 1 and the model's answer as Assistant 2; the
 * relative score is the mean of ratios; a judge that does not answer with two scores fails clearly), and the
 * ground-truth chat scorer on hand-worked cases.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { evalChat, parseJudgeScores, truthScore } from '../../lib/eval/chat.js';
import { evalReport, scoreReports } from '../../lib/eval/report.js';
import { evalVqa, readVqaFile } from '../../lib/eval/vqa.js';
import { scoreVqa } from '../../lib/eval/vqa-metrics.js';
import { generateFixture } from '../../lib/fixtures/generate.js';
import { loadModel, type Model } from '../../lib/model/model.js';
import type { Truth } from '../../lib/synth/truth.js';
import { writeSyntheticWorld, type World } from '../../lib/synth/world.js';

let dir: string;
let world: World;
let model: Model;
let server: Server;
let judgeUrl: string;
let judgeReply = '8 6\nAssistant 2 is shorter.';
const judged: { role: string; content: string }[][] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'medllava-eval-'));
  world = await writeSyntheticWorld({ out: join(dir, 'world'), count: 80, seed: 2, size: 48 });
  const paths = await generateFixture({ layout: 'llava-med-v1.5', out: join(dir, 'model') });
  model = await loadModel(paths['dir']!, { threads: 1 });
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => { body += c.toString(); });
    req.on('end', () => {
      judged.push((JSON.parse(body) as { messages: { role: string; content: string }[] }).messages);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ choices: [{ message: { role: 'assistant', content: judgeReply } }] }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  judgeUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
}, 120_000);

afterAll(async () => {
  await model?.dispose();
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

describe('evalVqa', () => {
  it('answers every question in order, writes upstream\'s answer layout, and scores what it wrote', async () => {
    const answers = join(dir, 'answers.jsonl');
    const r = await evalVqa({ model, data: world.files.vqaTest, images: world.dir, answers, modelId: 'tiny' });
    const qs = readVqaFile(world.files.vqaTest);
    const lines = readFileSync(answers, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { question_id: string; prompt: string; text: string; answer_id: string; model_id: string });
    expect(lines.map((l) => l.question_id)).toEqual(qs.map((q) => q.id));
    expect(lines.every((l) => l.model_id === 'tiny' && typeof l.text === 'string' && l.answer_id)).toBe(true);
    expect(lines[0]!.prompt).toBe(qs[0]!.question);
    expect(lines[0]!.prompt).not.toContain('<image>');
    const again = scoreVqa(qs.map((q, i) => ({ answerType: q.answerType, reference: q.answer, prediction: lines[i]!.text })));
    expect(r.open).toBeCloseTo(again.open, 10);
    expect(r.closed).toBeCloseTo(again.closed, 10);
    expect(r.openCount + r.closedCount).toBe(qs.length);
    expect(r.dataset).toBe('vqa');
    // the answers are the model's greedy answers to the bare question with the image
    const chat = model.createChat();
    const first = await chat.send({ text: qs[0]!.question, image: join(world.dir, qs[0]!.image!) }, { temperature: 0, maxTokens: 64 });
    chat.dispose();
    expect(lines[0]!.text).toBe(first.text.trim());
  });

  it('refuses a missing image with the path and the option to fix it, before answering anything', async () => {
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify([{ id: 'q1', image: 'nope.png', answer_type: 'CLOSED', conversatons: [{ from: 'human', value: 'Is it?\n<image>' }, { from: 'gpt', value: 'yes' }] }]));
    await expect(evalVqa({ model, data: bad })).rejects.toMatchObject({ code: 'E_IO', message: expect.stringContaining('--images') });
  });
});

describe('evalChat', () => {
  it('asks the judge with caption, mentions, question, reference (1) and answer (2); relative = mean of ratios', async () => {
    judged.length = 0;
    judgeReply = '8 6\nAssistant 2 is shorter.';
    const r = await evalChat({ model, questions: world.files.chatTest, images: world.dir, judge: { endpoint: judgeUrl, model: 'j' }, limit: 4 });
    expect(r.judge).toBe('endpoint');
    expect(r.overall.count).toBe(4);
    expect(r.overall.relative).toBeCloseTo(75, 10);
    const q = JSON.parse(readFileSync(world.files.chatTest, 'utf8').split('\n')[0]!) as { text: string; gpt4_answer: string; fig_caption: string; in_text_mention: { tokens: string }[] };
    const user = judged[0]![1]!.content;
    expect(judged[0]![0]!.role).toBe('system');
    expect(user).toContain(q.fig_caption);
    for (const m of q.in_text_mention) expect(user).toContain(`\t- ${m.tokens}`);
    expect(user).toContain(`[Question]\n${q.text.replace('\n<image>', '')}\n`);
    expect(user.indexOf(q.gpt4_answer)).toBeLessThan(user.indexOf('[Assistant 2]'));
    expect(user).toContain(`[Assistant 2]\n${r.rows[0]!.answer}\n\n[End of Assistant 2]`);
  });

  it('fails clearly when the judge does not put two scores on its first line', async () => {
    judgeReply = 'I think both are fine.';
    await expect(evalChat({ model, questions: world.files.chatTest, images: world.dir, judge: { endpoint: judgeUrl, retries: 2 }, limit: 1 }))
      .rejects.toMatchObject({ code: 'E_IO', message: expect.stringContaining('not two scores') });
    judgeReply = '8 6';
  });

  it('scores against the world\'s ground truth when no judge is given', async () => {
    const r = await evalChat({ model, questions: world.files.chatTest, images: world.dir, limit: 6 });
    expect(r.judge).toBe('truth');
    expect(r.rows.every((x) => x.referenceScore === 10 && x.modelScore >= 1 && x.modelScore <= 10)).toBe(true);
    expect(r.overall.hallucinationRate).toBeGreaterThanOrEqual(0);
  });
});

describe('evalReport', () => {
  it('generates a report per record, writes LLaVA-Rad\'s output layout and scores those rows', async () => {
    const answers = join(dir, 'reports.jsonl');
    const r = await evalReport({ model, data: world.files.reportTest, images: world.dir, answers, generate: { maxTokens: 24 } });
    const rows = readFileSync(answers, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: string; query: string; reference: string; prediction: string });
    const refs = JSON.parse(readFileSync(world.files.reportTest, 'utf8')) as { id: string; conversations: { value: string }[] }[];
    expect(rows.map((x) => x.id)).toEqual(refs.map((x) => x.id));
    expect(rows.every((x, i) => x.reference === refs[i]!.conversations[1]!.value && x.query === 'Describe the findings of the chest x-ray.')).toBe(true);
    const again = scoreReports(rows.map((x) => x.prediction), rows.map((x) => x.reference));
    expect(r.bleu4).toBe(again.bleu4);
    expect(r.rougeL).toBe(again.rougeL);
    expect(r.f1).toEqual(again.f1);
    expect(r.count).toBe(refs.length);
    expect(refs.length).toBeGreaterThan(0);
  });
});

describe('the ground-truth chat scorer', () => {
  const nodule: Truth = { id: 'x', modality: 'chest_xray', view: 'PA', organ: 'chest', finding: 'nodule', side: 'right', location: 'upper zone', sizeMm: 12, count: 1 };
  const normal: Truth = { ...nodule, finding: 'none', side: null, location: null, sizeMm: null, count: null };
  const ref = 'There is a 12 mm nodule in the right upper zone.';
  it.each([
    ['There is a nodule in the right upper zone.', 10, []],
    ['A nodule is seen on the right.', 10 * 2 / 3, []],                            // finding, side; not the zone
    ['There is a mass in the left lung.', 1, ['mass', 'left side']],               // nothing right, two false claims
    ['No nodule is seen; the lungs are clear.', 1, []],                             // a negated finding is not stated
    ['There is a nodule in the right upper zone and a pleural effusion.', 5, ['pleural effusion']],
  ] as const)('%j', (answer, score, hallucinations) => {
    const s = truthScore(answer, ref, nodule);
    expect(s.score).toBeCloseTo(score, 10);
    expect(s.hallucinations).toEqual(hallucinations);
  });
  it('normal cases: normality is the fact; asserting a finding is a hallucination, denying one is not', () => {
    const r = 'The image appears normal: no acute cardiopulmonary abnormality.';
    expect(truthScore('This chest X-ray is normal.', r, normal).score).toBe(10);
    expect(truthScore('There is no pneumothorax and the study is unremarkable.', r, normal)).toEqual({ score: 10, reference: 10, hallucinations: [] });
    expect(truthScore('There is a left pneumothorax.', r, normal)).toEqual({ score: 1, reference: 10, hallucinations: ['pneumothorax'] });
  });
  it('parses the judge\'s first line like upstream (exactly two numbers)', () => {
    expect(parseJudgeScores('7 9\nbecause')).toEqual([7, 9]);
    expect(parseJudgeScores('7, 9')).toEqual([7, 9]);
    expect(parseJudgeScores('7 9 10')).toBeNull();
    expect(parseJudgeScores('seven nine')).toBeNull();
  });
});
