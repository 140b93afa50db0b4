#!/usr/bin/env node
/** The `medllava` command: info, build, chat, convert, fixture, train, synth, generate-instruct, eval, train-demo. */
import { Command } from 'commander';

import { getBackendInfo } from '../backend.js';
import { isMedllavaError } from '../errors.js';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import cliProgress from 'cli-progress';

import { convertModel } from '../convert/convert.js';
import { intArg, numArg } from './args.js';
import { registerDataCommands } from './data-commands.js';
import { loadModel } from '../model/model.js';
import { packageRoot } from '../native.js';
import { train, type TrainOptions } from '../train/run.js';
import type { TrainingStage } from '../train/trainer.js';
import { FIXTURE_LAYOUTS, FIXTURE_SIZES, generateFixture, type FixtureLayout, type FixtureSize } from '../fixtures/generate.js';

function formatBytes(n: number): string {
  return `${(n / 2 ** 30).toFixed(1)} GiB`;
}

export function formatBackendInfo(info: ReturnType<typeof getBackendInfo>): string {
  const lines = [
    `cpu:  ${info.cpu.threads} threads, features ${info.cpu.features.join(' ') || '(none)'}, kernels ${info.cpu.dispatch}`,
    `cuda: ${info.cuda.compiled ? 'compiled' : 'not compiled'}, ${info.cuda.available ? 'available' : 'not available'}`,
  ];
  if (info.cuda.reason) lines.push(`      reason: ${info.cuda.reason}`);
  for (const d of info.cuda.devices)
    lines.push(`      ${d.name} (sm ${d.computeCapability}, ${formatBytes(d.memoryBytes)})`);
  return lines.join('\n');
}

/** Progress for long writes: a bar on a terminal, plain lines otherwise. Messages 'what i/n' move the
 * bar; any other message is shown as its label. */
function progressReporter(): { report: (message: string) => void; stop: () => void } {
  if (!process.stderr.isTTY) return { report: (m) => process.stderr.write(`${m}\n`), stop: () => {} };
  const bar = new cliProgress.SingleBar({ format: '{bar} {percentage}% | {label}', stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic);
  let started = false;
  let phase = '';
  return {
    report: (message) => {
      const m = /^(.*?)(\d+)\/(\d+)$/.exec(message);
      if (m) {
        if (!started || m[1] !== phase) {
          if (started) bar.stop();
          bar.start(Number(m[3]), 0, { label: message });
          started = true;
          phase = m[1]!;
        }
        bar.update(Number(m[2]), { label: message });
      } else if (started) {
        bar.update({ label: message });
      } else {
        process.stderr.write(`${message}\n`);
      }
    },
    stop: () => { if (started) bar.stop(); },
  };
}

const program = new Command();
program.name('medllava').description('LLaVA-Med and LLaVA-Rad biomedical vision-language models for Node.js');
program
  .command('info')
  .description('show the CPU and CUDA backends this build can use')
  .option('--json', 'print the getBackendInfo() object as JSON')
  .action((opts: { json?: boolean }) => {
    const info = getBackendInfo();
    process.stdout.write(opts.json ? `${JSON.stringify(info, null, 2)}\n` : `${formatBackendInfo(info)}\n`);
  });

program
  .command('build')
  .description('compile the addon from source here (for a platform with no prebuilt binary); needs cmake ≥ 3.19 and a C++17 compiler')
  .option('--no-cuda', 'leave the CUDA backend out even when nvcc is found')
  .action((opts: { cuda: boolean }) => {
    const r = spawnSync(process.execPath, [join(packageRoot(), 'scripts', 'build-native.mjs')], {
      stdio: 'inherit', env: { ...process.env, ...(opts.cuda ? {} : { MEDLLAVA_CUDA: 'off' }) },
    });
    process.exitCode = r.status ?? 1;
  });

program
  .command('chat')
  .description('chat with a model: one answer to --prompt, or an interactive session without it')
  .requiredOption('--model <path>', 'HF checkpoint directory, .gguf file, or directory of .gguf files')
  .option('--vision-tower <dir>', 'the vision tower, when it is not beside the checkpoint or in the HF cache')
  .option('--mmproj <file>', 'the mmproj of a .gguf model')
  .option('--image <file>', 'an image to ask about')
  .option('--prompt <text>', 'ask once and exit')
  .option('--temperature <t>', 'sampling temperature (0 = greedy)', Number.parseFloat, 0)
  .option('--max-tokens <n>', 'longest answer', (v) => Number.parseInt(v, 10), 256)
  .option('--seed <n>', 'sampling seed', (v) => Number.parseInt(v, 10))
  .option('--device <device>', 'auto | cpu | cuda', 'auto')
  .option('--context <n>', 'context length', (v) => Number.parseInt(v, 10))
  .action(async (opts: { model: string; visionTower?: string; mmproj?: string; image?: string; prompt?: string; temperature: number;
    maxTokens: number; seed?: number; device: 'auto' | 'cpu' | 'cuda'; context?: number }) => {
    process.stderr.write(`loading ${opts.model} …\n`);
    const progress = progressReporter();
    const mib = (b: number) => Math.ceil(b / (1 << 20));
    const model = await loadModel(opts.model, {
      visionTower: opts.visionTower, mmproj: opts.mmproj, device: opts.device, contextLength: opts.context,
      onProgress: (p) => progress.report(`reading weights (MiB) ${mib(p.loadedBytes)}/${mib(p.totalBytes)}`),
    }).finally(progress.stop);
    process.stderr.write(`${model.spec.family}: ${model.spec.llm.layers} layers × ${model.spec.llm.hidden}, template ${model.spec.template}\n`);
    const chat = model.createChat();
    // Ctrl-C stops the answer being written (a fresh signal per answer, so the next question still
    // runs); a Ctrl-C while no answer is running leaves, as a terminal user expects
    let answering: AbortController | undefined;
    process.on('SIGINT', () => {
      if (answering) answering.abort();
      else process.exit(130);
    });
    const ask = async (text: string, image?: string) => {
      answering = new AbortController();
      try {
        const gen = chat.stream({ text, ...(image ? { image } : {}) },
          { temperature: opts.temperature, maxTokens: opts.maxTokens, seed: opts.seed, signal: answering.signal });
        for await (const piece of gen) process.stdout.write(piece);
        process.stdout.write('\n');
      } finally {
        answering = undefined;
      }
    };
    if (opts.prompt !== undefined) {
      await ask(opts.prompt, opts.image);
    } else {
      process.stderr.write('type a question; /image PATH attaches an image to the next one, /clear starts over, /quit leaves\n');
      // async iteration buffers lines that arrive while an answer is being written (piped input)
      const rl = createInterface({ input: process.stdin, terminal: false });
      let image = opts.image;
      process.stderr.write('> ');
      for await (const raw of rl) {
        const line = raw.trim();
        if (line === '/quit') break;
        if (line === '/clear') chat.reset();
        else if (line.startsWith('/image ')) image = line.slice(7).trim();
        else if (line) {
          try {
            await ask(line, image);
            image = undefined;
          } catch (e) {
            process.stderr.write(`medllava: ${(e as Error).message}${isMedllavaError(e) ? ` (${e.code})` : ''}\n`);
          }
        }
        process.stderr.write('> ');
      }
      rl.close();
    }
    await model.dispose();
  });

program
  .command('convert')
  .description('convert an HF LLaVA checkpoint to a llama.cpp GGUF pair or to one safetensors checkpoint')
  .requiredOption('--model <path>', 'HF checkpoint directory (LLaVA-Med v1.5 / v1.0, LLaVA-1.5, LLaVA-Rad)')
  .requiredOption('--to <format>', 'gguf | safetensors')
  .requiredOption('--out <dir>', 'output directory')
  .option('--quant <type>', 'gguf: f16 (default), f32, bf16, q8_0, q4_0; safetensors: bf16 (default), f16, f32')
  .option('--vision-tower <path>', 'the vision tower, when it is not beside the checkpoint or in the HF cache')
  .option('--base-model <dir>', 'LLaVA-Rad: the base LLM the LoRA adapter applies to')
  .action(async (opts: { model: string; to: string; out: string; quant?: string; visionTower?: string; baseModel?: string }) => {
    const started = Date.now();
    const progress = progressReporter();
    const paths = await convertModel({
      model: opts.model, to: opts.to as 'gguf' | 'safetensors', out: opts.out, quant: opts.quant,
      visionTower: opts.visionTower, baseModel: opts.baseModel, onProgress: progress.report,
    }).finally(progress.stop);
    for (const [k, v] of Object.entries(paths)) process.stdout.write(`${k}: ${v}\n`);
    process.stderr.write(`done in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  });

program
  .command('fixture')
  .description('write a random-weight checkpoint in a real layout (for tests and benchmarks)')
  .requiredOption('--layout <layout>', `one of ${FIXTURE_LAYOUTS.join(', ')}`)
  .option('--size <size>', `one of ${FIXTURE_SIZES.join(', ')}`, 'tiny')
  .requiredOption('--out <dir>', 'output directory')
  .option('--gguf-type <type>', 'GGUF LLM tensor type: F16, F32, BF16, Q8_0, Q4_0', 'F16')
  .option('--seed <n>', 'weights seed', (v) => Number.parseInt(v, 10), 1234)
  .action(async (opts: { layout: string; size: string; out: string; ggufType: string; seed: number }) => {
    const started = Date.now();
    const progress = progressReporter();
    const paths = await generateFixture({
      layout: opts.layout as FixtureLayout, size: opts.size as FixtureSize, out: opts.out, ggufType: opts.ggufType,
      seed: opts.seed, onProgress: progress.report,
    }).finally(progress.stop);
    for (const [k, v] of Object.entries(paths)) process.stdout.write(`${k}: ${v}\n`);
    process.stderr.write(`done in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  });


function seconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = Math.floor(s % 60);
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(r).padStart(2, '0')}s` : `${r}s`;
}

program
  .command('train')
  .description('train a stage (align, instruct, finetune, lora, full) on LLaVA conversation data; checkpoints resume bit for bit')
  .requiredOption('--stage <stage>', 'align | instruct | finetune | lora | full')
  .requiredOption('--model <dir>', 'HF LLaVA checkpoint (or a previous stage\'s output)')
  .requiredOption('--data <file>', 'LLaVA conversation JSON / JSON lines (LLaVA-Med VQA train.json included)')
  .option('--images <dir>', 'the folder image paths are relative to (default: the data file\'s folder)')
  .requiredOption('--output <dir>', 'checkpoints, the final model, metrics.jsonl / .csv, loss.png')
  .option('--resume', 'continue from the newest complete checkpoint in --output')
  .option('--overwrite', "start again in an --output that holds an earlier run's checkpoints (removing them)")
  .option('--recipe <name>', "defaults from 'llava-med', 'llava-1.5' or 'llava-rad' (default: by the model's family)")
  .option('--epochs <n>', 'epochs', numArg)
  .option('--batch-size <n>', 'samples per optimizer step (global)', intArg)
  .option('--micro-batch-size <n>', 'samples per forward/backward (gradient accumulation = batch / micro)', intArg)
  .option('--lr <x>', 'learning rate', numArg)
  .option('--projector-lr <x>', "the projector's learning rate (LLaVA's mm_projector_lr)", numArg)
  .option('--weight-decay <x>', 'AdamW weight decay', numArg)
  .option('--warmup-ratio <x>', 'warmup share of the steps', numArg)
  .option('--schedule <kind>', 'cosine | linear | constant')
  .option('--max-grad-norm <x>', "global-norm clipping (default 1.0; 'off' turns it off)")
  .option('--max-length <n>', 'tokens per sample, images expanded', intArg)
  .option('--lora-r <n>', 'LoRA rank (lora stage; default 64)', intArg)
  .option('--lora-alpha <x>', 'LoRA alpha (default 128)', numArg)
  .option('--lora-dropout <p>', 'LoRA dropout (default 0.05)', numArg)
  .option('--seed <n>', 'data order, new adapters, dropout (default 42)', intArg)
  .option('--no-group-by-modality', "don't group batches by modality and length")
  .option('--save-steps <n>', 'a checkpoint every n optimizer steps (default 500; 0: at the end only)', intArg)
  .option('--save-total-limit <n>', 'checkpoints kept (default 1)', intArg)
  .option('--max-steps <n>', 'stop after n optimizer steps', intArg)
  .option('--on-problem <what>', "a sample that cannot be used: 'skip' (reported by id) or 'stop'", 'skip')
  .option('--device <device>', 'cpu | cuda | auto', 'cpu')
  .option('--threads <n>', 'CPU threads', intArg)
  .option('--vision-tower <path>', 'the vision tower, when it is not beside the checkpoint')
  .option('--base-model <dir>', 'the base checkpoint of an adapter or projector output, when not where its config says')
  .option('--zero1', 'under mpirun: shard the AdamW state across the ranks (ZeRO-1; the CPU engine)')
  .option('--json', 'JSON lines on stdout (the default when stdout is not a terminal)')
  .action(async (opts: Record<string, unknown>) => {
    const stop = new AbortController();
    let signals = 0;
    const onSignal = () => {
      signals++;
      if (signals > 1) process.exit(130);  // a second ^C: leave now (the last complete checkpoint stays)
      process.stderr.write('\nstopping: saving a checkpoint of the last complete step (^C again to quit at once)\n');
      stop.abort();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    // under mpirun, which kills the job on SIGINT / SIGTERM but forwards SIGUSR1 to every rank: `kill -USR1 <mpirun>`
    process.on('SIGUSR1', onSignal);
    const mgn = opts['maxGradNorm'] as string | undefined;
    const lora = { r: opts['loraR'], alpha: opts['loraAlpha'], dropout: opts['loraDropout'] } as TrainOptions['lora'];
    const o: TrainOptions = {
      stage: opts['stage'] as TrainingStage, model: opts['model'] as string, data: opts['data'] as string, images: opts['images'] as string | undefined,
      output: opts['output'] as string, resume: opts['resume'] === true, overwrite: opts['overwrite'] === true, recipe: opts['recipe'] as TrainOptions['recipe'],
      epochs: opts['epochs'] as number | undefined, batchSize: opts['batchSize'] as number | undefined,
      microBatchSize: opts['microBatchSize'] as number | undefined, learningRate: opts['lr'] as number | undefined,
      projectorLearningRate: opts['projectorLr'] as number | undefined, weightDecay: opts['weightDecay'] as number | undefined,
      warmupRatio: opts['warmupRatio'] as number | undefined, schedule: opts['schedule'] as TrainOptions['schedule'],
      maxGradNorm: mgn === undefined ? undefined : mgn === 'off' ? null : numArg(mgn), maxLength: opts['maxLength'] as number | undefined,
      lora: Object.values(lora ?? {}).some((v) => v !== undefined) ? lora : undefined, seed: opts['seed'] as number | undefined,
      groupByModalityLength: opts['groupByModality'] === false ? false : undefined, saveSteps: opts['saveSteps'] as number | undefined,
      saveTotalLimit: opts['saveTotalLimit'] as number | undefined, maxSteps: opts['maxSteps'] as number | undefined,
      onProblem: opts['onProblem'] as 'skip' | 'stop', device: opts['device'] as TrainOptions['device'], threads: opts['threads'] as number | undefined,
      visionTower: opts['visionTower'] as string | undefined, baseModel: opts['baseModel'] as string | undefined, signal: stop.signal,
      zero1: opts['zero1'] === true,
    };
    const json = opts['json'] === true || !process.stdout.isTTY;
    const bar = json ? undefined : new cliProgress.SingleBar({
      format: '{bar} {value}/{total} | loss {loss} | {tps} tok/s | ETA {eta_h}', stream: process.stdout, hideCursor: true,
    }, cliProgress.Presets.shades_classic);
    let started = false;
    const run = train(o);
    try {
      for await (const e of run) {
        if (json) {
          process.stdout.write(`${JSON.stringify(e)}\n`);
          continue;
        }
        if (e.type === 'step') {
          const payload = { loss: e.loss.toFixed(4), tps: Math.round(e.tokensPerSecond), eta_h: seconds(e.eta) };
          if (!started) bar!.start(e.totalSteps, e.step, payload), started = true;
          else bar!.update(e.step, payload);
        } else if (e.type === 'log' || e.type === 'checkpoint' || e.type === 'problem') {
          const line = e.type === 'log' ? e.message : e.type === 'checkpoint' ? `checkpoint ${e.path}` : `skipped sample ${e.id} (record ${e.index}): ${e.reason}`;
          if (started) bar!.stop(), started = false;
          process.stdout.write(`${line}\n`);
        }
      }
      const r = await run;
      if (started) bar!.stop();
      const summary = `${r.stopped ? 'stopped' : 'done'} after ${r.steps} steps, loss ${r.finalLoss.toFixed(4)}; ` +
        `${r.problems.length} sample(s) skipped${r.problems.length ? ` (see ${join(r.output, 'problems.jsonl')})` : ''}; model in ${r.output}`;
      if (json) process.stdout.write(`${JSON.stringify({ type: 'done', ...r, problems: r.problems.length })}\n`);
      else process.stdout.write(`${summary}\n`);
      if (r.stopped) process.exitCode = 130;
    } finally {
      if (started) bar!.stop();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      process.off('SIGUSR1', onSignal);
    }
  });

registerDataCommands(program);

program.parseAsync(process.argv).catch((e: unknown) => {
  process.stderr.write(`medllava: ${e instanceof Error ? e.message : String(e)}${isMedllavaError(e) ? ` (${e.code})` : ''}\n`);
  process.exit(1);
});
