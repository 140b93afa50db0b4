/** `medllava synth`, `generate-instruct`, `eval vqa` and `train-demo`: the synthetic world, its data and evaluation. */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import cliProgress from 'cli-progress';
import type { Command } from 'commander';

import { buildDemo, DEMO_STAGES, type DemoBuild } from '../demo/build.js';
import { medllavaError } from '../errors.js';
import { intArg } from './args.js';
import { evaluateDemo } from '../demo/evaluate.js';
import { demoCard, packDemo } from '../demo/pack.js';
import { chatTable, evalChat } from '../eval/chat.js';
import { evalReport, reportTable, scoreReports } from '../eval/report.js';
import { evalVqa, vqaTable } from '../eval/vqa.js';
import { loadModel } from '../model/model.js';
import { generateInstruct } from '../synth/instruct.js';
import { writeSyntheticWorld } from '../synth/world.js';


/** a progress bar on a terminal (stderr), nothing otherwise; `update(done, total)` */
function bar(label: string) {
  if (!process.stderr.isTTY) return { update: (_d: number, _t: number) => {}, stop: () => {} };
  const b = new cliProgress.SingleBar({ format: `${label} {bar} {value}/{total} | ETA {eta_formatted}`, stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic);
  let started = false;
  return {
    update: (d: number, t: number) => { if (!started) { b.start(t, d); started = true; } else b.update(d); },
    stop: () => { if (started) b.stop(); },
  };
}

/** Ctrl-C / SIGTERM abort `ctl` once; a second one leaves at once */
function stopOnSignal(what: string): { signal: AbortSignal; done: () => void } {
  const ctl = new AbortController();
  let n = 0;
  const on = () => {
    if (++n > 1) process.exit(130);
    process.stderr.write(`\nstopping ${what} (^C again to quit at once)\n`);
    ctl.abort();
  };
  process.on('SIGINT', on);
  process.on('SIGTERM', on);
  return { signal: ctl.signal, done: () => { process.off('SIGINT', on); process.off('SIGTERM', on); } };
}

/** a finished demo build's record (work/build.json) */
function readBuild(work: string): DemoBuild {
  let b: DemoBuild & { outputs: DemoBuild['outputs'] };
  try {
    b = JSON.parse(readFileSync(join(work, 'build.json'), 'utf8')) as DemoBuild;
  } catch (e) {
    throw medllavaError('E_IO', `${work} holds no finished demo build (build.json: ${(e as Error).message}); run \`medllava train-demo --work ${work}\` first`);
  }
  return { ...b, world: join(work, 'world') };
}

export function registerDataCommands(program: Command): void {
  program
    .command('synth')
    .description('write a synthetic biomedical world: images in five modalities with ground truth, captions, citing sentences, alignment pairs, VQA splits')
    .requiredOption('--out <dir>', 'output folder')
    .option('--count <n>', 'cases, dealt round-robin over chest x-ray, CT, MRI, histology, gross pathology', intArg, 1000)
    .option('--seed <n>', 'seed (the same seed gives the same world)', intArg, 1)
    .option('--size <px>', 'image side in pixels', intArg, 224)
    .option('--questions <n>', 'VQA questions per image', intArg, 5)
    .action(async (o: { out: string; count: number; seed: number; size: number; questions: number }) => {
      const b = bar('rendering');
      const w = await writeSyntheticWorld({ out: o.out, count: o.count, seed: o.seed, size: o.size, questionsPerImage: o.questions,
        onProgress: b.update }).finally(b.stop);
      const n = { train: 0, val: 0, test: 0 };
      for (const c of w.cases) n[c.split]++;
      process.stdout.write(`${w.cases.length} cases (train ${n.train}, val ${n.val}, test ${n.test}) in ${o.out}\n`);
      for (const [k, v] of Object.entries(w.files)) process.stdout.write(`  ${k}: ${v}\n`);
    });

  program
    .command('generate-instruct')
    .description("write instruction conversations from figure captions (LLaVA-Med's self-instruct): an OpenAI-compatible endpoint, or the offline rule-based writer")
    .requiredOption('--figures <file>', "figures.json ({domain: [figure…]}, as `medllava synth` writes it)")
    .requiredOption('--out <file>', 'the conversation JSON to write (resumes from <out>.partial.jsonl)')
    .option('--endpoint <url>', 'OpenAI-compatible base URL, e.g. http://localhost:8000/v1 (default: the rule-based writer)')
    .option('--model <name>', 'the endpoint\'s model', 'gpt-4')
    .option('--api-key <key>', 'bearer token (default: $OPENAI_API_KEY)')
    .option('--no-inline-mentions', 'give the LLM the caption only, not the sentences citing the figure')
    .option('--split <name>', 'only figures of this split (train, val, test)')
    .option('--max-size <n>', 'at most n conversations', intArg)
    .option('--concurrency <n>', 'requests in flight', intArg, 3)
    .option('--retries <n>', 'attempts per figure', intArg, 4)
    .option('--seed <n>', 'seed of the rule-based writer and of the <image> placement', intArg, 0)
    .action(async (o: Record<string, unknown>) => {
      const stop = stopOnSignal('generation (finished conversations are kept; a rerun resumes)');
      const b = bar('conversations');
      try {
        const r = await generateInstruct({
          figures: o['figures'] as string, out: o['out'] as string, endpoint: o['endpoint'] as string | undefined, model: o['model'] as string,
          apiKey: (o['apiKey'] as string | undefined) ?? process.env['OPENAI_API_KEY'], inlineMentions: o['inlineMentions'] !== false,
          split: o['split'] as string | undefined, maxSize: o['maxSize'] as number | undefined, concurrency: o['concurrency'] as number,
          retries: o['retries'] as number, seed: o['seed'] as number, signal: stop.signal, onProgress: (p) => b.update(p.done, p.total),
        });
        b.stop();
        process.stdout.write(`${r.written} conversations (${r.writer === 'rules' ? 'rule-based writer' : 'endpoint'}) in ${r.out}\n`);
        for (const f of r.failed) process.stdout.write(`  failed ${f.id}: ${f.reason}\n`);
        if (r.failed.length) process.exitCode = 2;
      } finally {
        b.stop();
        stop.done();
      }
    });

  const ev = program.command('eval').description("evaluate a model: vqa (LLaVA-Med's open recall / closed accuracy), chat (judged relative score), report (LLaVA-Rad's report metrics)");
  ev.command('vqa')
    .description('answer a VQA test file (VQA-RAD / SLAKE / PathVQA layout) and score it as the LLaVA-Med paper does')
    .option('--model <dir>', 'the model (default: the bundled demo model)')
    .requiredOption('--data <file...>', 'test.json file(s); each is a dataset named by its folder')
    .option('--images <dir>', 'the folder image paths are relative to (default: each data file\'s folder)')
    .option('--answers <file>', 'write the answers as JSON lines (upstream\'s answer-file layout); with several data files, <file>.<dataset>.jsonl')
    .option('--strict', 'stricter variants: closed = exact match, open = recall with clipped counts')
    .option('--limit <n>', 'only the first n questions of each file', intArg)
    .option('--max-tokens <n>', 'answer length limit', intArg, 64)
    .option('--threads <n>', 'CPU threads', intArg)
    .option('--json', 'print the scores as JSON')
    .action(async (o: { model?: string; data: string[]; images?: string; answers?: string; strict?: boolean; limit?: number; maxTokens: number; threads?: number; json?: boolean }) => {
      const model = await loadModel(o.model, { threads: o.threads });
      const stop = stopOnSignal('evaluation');
      const rows: Parameters<typeof vqaTable>[0] = [];
      const results: unknown[] = [];
      try {
        for (const data of o.data) {
          const b = bar(data);
          const answers = o.answers && o.data.length > 1 ? `${o.answers}.${results.length}.jsonl` : o.answers;
          const r = await evalVqa({ model, data, images: o.images, answers, strict: o.strict, limit: o.limit,
            generate: { maxTokens: o.maxTokens }, signal: stop.signal, onProgress: b.update }).finally(b.stop);
          rows.push({ name: o.model ?? 'medllava-demo', dataset: r.dataset, score: r });
          results.push({ dataset: r.dataset, data, open: r.open, closed: r.closed, openCount: r.openCount, closedCount: r.closedCount, byModality: r.byModality, answers });
        }
      } finally {
        stop.done();
        await model.dispose();
      }
      if (o.json) process.stdout.write(`${JSON.stringify(results, null, 1)}\n`);
      else process.stdout.write(`${vqaTable(rows)}\n${o.strict ? '(strict: closed = exact match, open = clipped recall)\n' : ''}`);
    });

  ev.command('chat')
    .description("LLaVA-Med's visual-chat score: the model answers qa50-layout questions; a judge endpoint (or, on the synthetic world, its ground truth) scores them against the references")
    .option('--model <dir>', 'the model (default: the bundled demo model)')
    .requiredOption('--questions <file>', 'qa50-layout JSON lines ({question_id, image, text, gpt4_answer, fig_caption, domain, type})')
    .option('--images <dir>', "the folder image paths are relative to (default: the questions file's parent folder)")
    .option('--judge <url>', 'OpenAI-compatible judge endpoint (default: score against the synthetic world\'s ground truth)')
    .option('--judge-model <name>', "the judge's model", 'gpt-4')
    .option('--api-key <key>', 'bearer token for the judge (default: $OPENAI_API_KEY)')
    .option('--world <dir>', "the synthetic world's folder, for ground-truth scoring (default: the questions file's parent folder)")
    .option('--answers <file>', 'write answers and scores as JSON lines')
    .option('--limit <n>', 'only the first n questions', intArg)
    .option('--threads <n>', 'CPU threads', intArg)
    .option('--json', 'print the scores as JSON')
    .action(async (o: { model?: string; questions: string; images?: string; judge?: string; judgeModel: string; apiKey?: string; world?: string; answers?: string; limit?: number; threads?: number; json?: boolean }) => {
      const model = await loadModel(o.model, { threads: o.threads });
      const stop = stopOnSignal('evaluation');
      const b = bar('chat');
      try {
        const r = await evalChat({ model, questions: o.questions, images: o.images, world: o.world, answers: o.answers, limit: o.limit, signal: stop.signal,
          judge: o.judge ? { endpoint: o.judge, model: o.judgeModel, apiKey: o.apiKey ?? process.env['OPENAI_API_KEY'] } : undefined, onProgress: b.update });
        b.stop();
        if (o.json) process.stdout.write(`${JSON.stringify({ judge: r.judge, overall: r.overall, byType: r.byType, byDomain: r.byDomain }, null, 1)}\n`);
        else process.stdout.write(`${chatTable([{ name: o.model ?? 'medllava-demo', result: r }])}\n(relative score = 100 × mean of model / reference scores; ${r.judge === 'endpoint' ? 'judged by the endpoint' : 'scored against the ground truth'})\n`);
      } finally {
        b.stop();
        stop.done();
        await model.dispose();
      }
    });

  ev.command('report')
    .description('report generation (LLaVA-Rad): BLEU-1/4 (sacrebleu semantics), ROUGE-L (rouge-score), findings F1 by a CheXpert-style rule labeller')
    .option('--model <dir>', 'the model (default: the bundled demo model)')
    .option('--data <file>', 'LLaVA conversation JSON: image, prompt (first human turn), reference (first gpt turn)')
    .option('--images <dir>', "the folder image paths are relative to (default: the data file's folder)")
    .option('--predictions <file>', 'score existing predictions instead (JSON lines with reference and prediction)')
    .option('--answers <file>', 'write {id, query, reference, prediction} JSON lines')
    .option('--limit <n>', 'only the first n reports', intArg)
    .option('--threads <n>', 'CPU threads', intArg)
    .option('--json', 'print the scores as JSON')
    .action(async (o: { model?: string; data?: string; images?: string; predictions?: string; answers?: string; limit?: number; threads?: number; json?: boolean }) => {
      let scores;
      if (o.predictions) {
        const rows = readFileSync(o.predictions, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as { reference: string; prediction: string });
        scores = scoreReports(rows.map((r) => r.prediction), rows.map((r) => r.reference));
      } else {
        if (!o.data) throw medllavaError('E_ARGUMENT', 'pass --data (to generate and score) or --predictions (to score)');
        const model = await loadModel(o.model, { threads: o.threads });
        const stop = stopOnSignal('evaluation');
        const b = bar('reports');
        try {
          scores = await evalReport({ model, data: o.data, images: o.images, answers: o.answers, limit: o.limit, signal: stop.signal, onProgress: b.update });
        } finally {
          b.stop();
          stop.done();
          await model.dispose();
        }
      }
      const { rows: _rows, ...numbers } = scores as typeof scores & { rows?: unknown };
      if (o.json) process.stdout.write(`${JSON.stringify(numbers, null, 1)}\n`);
      else process.stdout.write(`${reportTable([{ name: o.model ?? (o.predictions ? o.predictions : 'medllava-demo'), scores }])}\n` +
        '(findings F1: uncertain counted as negative; a rule labeller in the CheXpert labeller\'s manner, not CheXbert)\n');
    });

  program
    .command('eval-demo')
    .description("the LLaVA-Med ablation on the synthetic world: each stage of a demo build on the held-out VQA and chat questions")
    .option('--work <dir>', 'the demo build (`medllava train-demo --work`)', '.demo-build')
    .option('--judge <url>', 'OpenAI-compatible judge for the chat score (default: the ground truth)')
    .option('--judge-model <name>', "the judge's model", 'gpt-4')
    .option('--limit <n>', 'only the first n VQA questions (and n/2 chat questions) per stage', intArg)
    .option('--threads <n>', 'CPU threads', intArg)
    .action(async (o: { work: string; judge?: string; judgeModel: string; limit?: number; threads?: number }) => {
      const stop = stopOnSignal('evaluation');
      try {
        const r = await evaluateDemo({ work: o.work, limit: o.limit, threads: o.threads, signal: stop.signal,
          judge: o.judge ? { endpoint: o.judge, model: o.judgeModel, apiKey: process.env['OPENAI_API_KEY'] } : undefined,
          onProgress: (what, d, n) => { if (d === n) process.stderr.write(`${what}: ${n} done\n`); } });
        process.stdout.write(`${r.markdown}\n`);
      } finally {
        stop.done();
      }
    });

  program
    .command('train-demo')
    .description('build the demo model from nothing: synthetic world → conversations → tokenizer → pretrain → align → instruct → VQA fine-tune')
    .requiredOption('--work <dir>', 'working folder (world, stage outputs)')
    .option('--cases <n>', 'synthetic cases', intArg, 2500)
    .option('--seed <n>', 'seed', intArg, 7)
    .option('--threads <n>', 'CPU threads', intArg)
    .option('--endpoint <url>', 'OpenAI-compatible endpoint for the conversations (default: the rule-based writer)')
    .option('--pack', 'then evaluate every stage and pack the final model into models/medllava-demo (what the package ships)')
    .option('--pack-only', 'evaluate and pack the build already in --work (no training)')
    .action(async (o: { work: string; cases: number; seed: number; threads?: number; endpoint?: string; pack?: boolean; packOnly?: boolean }) => {
      const stop = stopOnSignal('training');
      try {
        const r = o.packOnly ? readBuild(o.work) : await buildDemo({
          work: o.work, cases: o.cases, seed: o.seed, threads: o.threads, endpoint: o.endpoint, signal: stop.signal,
          onEvent: (s, e) => {
            if (e.type === 'log') process.stdout.write(`[${s}] ${e.message}\n`);
            else if (e.type === 'step' && (e.step === 1 || e.step % 20 === 0 || e.step === e.totalSteps)) {
              process.stdout.write(`[${s}] step ${e.step}/${e.totalSteps} loss ${e.loss.toFixed(4)} ${e.samplesPerSecond.toFixed(1)} samples/s ETA ${Math.round(e.eta)} s\n`);
            }
          },
        });
        for (const s of DEMO_STAGES) process.stdout.write(`${s}: loss ${r.firstLoss[s].toFixed(3)} → ${r.finalLoss[s].toFixed(3)} in ${r.seconds[s]!.toFixed(0)} s → ${r.outputs[s]}\n`);
        if (o.pack || o.packOnly) {
          process.stdout.write('evaluating every stage on the held-out split…\n');
          const ev = await evaluateDemo({ work: o.work, threads: o.threads, signal: stop.signal });
          writeFileSync(join(o.work, 'EVAL.md'), `${ev.markdown}\n`);
          process.stdout.write(`${ev.markdown}\n`);
          const out = await packDemo({ work: o.work, card: demoCard(r, ev.markdown) });
          process.stdout.write(`packed the demo model into ${out}\n`);
        }
      } finally {
        stop.done();
      }
    });
}
