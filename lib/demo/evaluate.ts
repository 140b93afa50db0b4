/**
 * The LLaVA-Med paper's ablation on our synthetic world (`npm run eval:demo`): each stage's model of a demo build
 * answers the held-out VQA test split (open recall / closed accuracy, LLaVA-Med's scoring) and the held-out chat
 * questions (relative score against the reference answers, judged by an endpoint when one is given, else by the
 * world's ground truth). Rows: stage 0 (captioning pretraining), stage 1 (align), 1+2 (instruct), 1+2+FT (VQA
 * fine-tune). Chest x-ray findings reports are scored too (BLEU, ROUGE-L, findings F1).
 */
import { join } from 'node:path';

import { chatTable, evalChat, type EvalChatOptions, type EvalChatResult } from '../eval/chat.js';
import { evalReport, reportTable, type ReportScores } from '../eval/report.js';
import { evalVqa, vqaTable, type EvalVqaResult } from '../eval/vqa.js';
import { loadModel } from '../model/model.js';
import type { DemoStage } from './build.js';

export const ABLATION_ROWS: { stage: DemoStage; name: string }[] = [
  { stage: 'pretrain', name: 'stage 0 (captioning from scratch)' },
  { stage: 'align', name: 'stage 1 (align)' },
  { stage: 'instruct', name: 'stages 1+2 (instruct)' },
  { stage: 'finetune', name: 'stages 1+2 + VQA fine-tune' },
];

export interface DemoEvaluation {
  vqa: { name: string; stage: DemoStage; result: EvalVqaResult }[];
  chat: { name: string; stage: DemoStage; result: EvalChatResult }[];
  report: { name: string; stage: DemoStage; scores: ReportScores }[];
  markdown: string;
}

/** chat questions scored per stage by default (each answer is up to 256 generated tokens) */
export const DEMO_CHAT_QUESTIONS = 300;

export async function evaluateDemo(o: { work: string; limit?: number; chatLimit?: number; judge?: EvalChatOptions['judge']; threads?: number;
  onProgress?: (what: string, done: number, total: number) => void; signal?: AbortSignal }): Promise<DemoEvaluation> {
  const world = join(o.work, 'world');
  const vqa: DemoEvaluation['vqa'] = [], chat: DemoEvaluation['chat'] = [], report: DemoEvaluation['report'] = [];
  for (const row of ABLATION_ROWS) {
    const model = await loadModel(join(o.work, row.stage), { threads: o.threads });
    try {
      const v = await evalVqa({ model, data: join(world, 'vqa', 'test.json'), images: world, limit: o.limit, signal: o.signal,
        onProgress: (d, n) => o.onProgress?.(`${row.stage} vqa`, d, n) });
      vqa.push({ name: row.name, stage: row.stage, result: v });
      const c = await evalChat({ model, questions: join(world, 'chat', 'test.jsonl'), images: world, world, judge: o.judge,
        limit: o.chatLimit ?? (o.limit === undefined ? DEMO_CHAT_QUESTIONS : Math.ceil(o.limit / 2)), signal: o.signal, onProgress: (d, n) => o.onProgress?.(`${row.stage} chat`, d, n) });
      chat.push({ name: row.name, stage: row.stage, result: c });
      const rep = await evalReport({ model, data: join(world, 'reports', 'test.json'), images: world, limit: o.limit, signal: o.signal,
        onProgress: (d, n) => o.onProgress?.(`${row.stage} report`, d, n) });
      report.push({ name: row.name, stage: row.stage, scores: rep });
    } finally {
      await model.dispose();
    }
  }
  const v0 = vqa[0]!.result;
  const markdown = [
    `VQA on the held-out test split (${v0.openCount} open, ${v0.closedCount} closed questions; LLaVA-Med's scoring: open = recall, closed = accuracy, %):`,
    '',
    vqaTable(vqa.map((r) => ({ name: r.name, dataset: 'synthetic', score: r.result }))),
    '',
    `Visual chat on held-out images (the first ${chat[0]!.result.overall.count} questions), relative score vs the reference answers, ` +
      (chat[0]!.result.judge === 'endpoint' ? 'judged by the endpoint:' : 'scored against the ground truth (facts stated, hallucinations halve the score):'),
    '',
    chatTable(chat.map((r) => ({ name: r.name, result: r.result }))),
    '',
    ...(chat[0]!.result.judge === 'truth' ? [`Hallucination rate (answers asserting a finding, side or abnormality the case does not have): ${chat
      .map((r) => `${r.name} ${(100 * (r.result.overall.hallucinationRate ?? 0)).toFixed(1)} %`).join('; ')}.`, ''] : []),
    `Chest x-ray findings reports (LLaVA-Rad's task; "Describe the findings of the chest x-ray."; none of the stages trained on reports):`,
    '',
    reportTable(report.map((r) => ({ name: r.name, scores: r.scores }))),
    '',
  ].join('\n');
  return { vqa, chat, report, markdown };
}
