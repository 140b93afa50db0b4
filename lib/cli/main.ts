#!/usr/bin/env node
/** The `medllava` command: info, build, chat, convert, fixture (train and eval join with their issues). */
import { Command } from 'commander';

import { getBackendInfo } from '../backend.js';
import { isMedllavaError } from '../errors.js';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import cliProgress from 'cli-progress';

import { convertModel } from '../convert/convert.js';
import { loadModel } from '../model/model.js';
import { packageRoot } from '../native.js';
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

program.parseAsync(process.argv).catch((e: unknown) => {
  process.stderr.write(`medllava: ${e instanceof Error ? e.message : String(e)}${isMedllavaError(e) ? ` (${e.code})` : ''}\n`);
  process.exit(1);
});
