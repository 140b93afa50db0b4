/**
 * `medllava train` as a user runs it (the built CLI, a child process):
 *   - JSON lines when stdout is not a terminal: a log line, one line per optimizer step, checkpoints, a 'done' line;
 *   - `kill -9` while a checkpoint is being written (caught by watching the output folder for the checkpoint's
 *     temporary directory) leaves the previous checkpoint complete; `--resume` continues from it and its
 *     steps' losses equal an uninterrupted run's exactly;
 *   - bad options fail with a message and a non-zero exit, writing nothing.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, watch } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { packageRoot } from '../../lib/native.js';
import { trainFixture, type TinyDataset } from '../support/train-data.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-cli-train-'));
const cli = join(packageRoot(), 'dist', 'lib', 'cli', 'main.js');
let v15: string;
let data: TinyDataset;

beforeAll(async () => {
  ({ v15, data } = await trainFixture(root));
}, 300_000);

const args = (out: string, extra: string[] = []) => ['train', '--stage', 'instruct', '--model', v15, '--data', data.conversations,
  '--images', data.images, '--output', out, '--batch-size', '4', '--micro-batch-size', '2', '--epochs', '2', '--lr', '2e-3',
  '--save-steps', '1', '--save-total-limit', '2', ...extra];

type Line = { type: string; step?: number; loss?: number; path?: string; message?: string; steps?: number; stopped?: boolean };
const parse = (stdout: string): Line[] => stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Line);
const stepLosses = (lines: Line[]) => new Map(lines.filter((l) => l.type === 'step').map((l) => [l.step!, l.loss!]));

describe('medllava train', () => {
  it('prints JSON lines and trains to the end', () => {
    const r = spawnSync(process.execPath, [cli, ...args(join(root, 'full'))], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const lines = parse(r.stdout);
    expect(lines[0]!.type).toBe('log');
    expect([...stepLosses(lines).keys()]).toEqual([1, 2, 3, 4, 5, 6]);
    expect(lines.filter((l) => l.type === 'checkpoint').map((l) => l.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(lines[lines.length - 1]).toMatchObject({ type: 'done', steps: 6, stopped: false });
    expect(readdirSync(join(root, 'full')).filter((f) => f.startsWith('checkpoint-')).sort()).toEqual(['checkpoint-5', 'checkpoint-6']);
  }, 300_000);

  it('kill -9 during a save: the previous checkpoint stays loadable and --resume is bit-identical', async () => {
    const full = stepLosses(parse(spawnSync(process.execPath, [cli, ...args(join(root, 'ref'))], { encoding: 'utf8' }).stdout));
    expect(full.size).toBe(6);
    // kill the child the moment it starts writing checkpoint 3 (its temporary directory appears); a kill that
    // lands after the save finished does not test anything, so try again on a fresh folder
    let out = '', caught = false;
    for (let attempt = 0; attempt < 5 && !caught; attempt++) {
      out = join(root, `killed-${attempt}`);
      const { mkdirSync } = await import('node:fs');
      mkdirSync(out, { recursive: true });
      const child = spawn(process.execPath, [cli, ...args(out)], { stdio: ['ignore', 'pipe', 'pipe'] });
      const watcher = watch(out, (_event, name) => {
        if (name === '.checkpoint-3.tmp' && child.exitCode === null) child.kill('SIGKILL');
      });
      const code = await new Promise<string | null>((res) => child.on('exit', (_c, sig) => res(sig)));
      watcher.close();
      expect(code).toBe('SIGKILL');
      caught = existsSync(join(out, '.checkpoint-3.tmp')) && !existsSync(join(out, 'checkpoint-3', 'run_state.json'));
    }
    expect(caught, 'no kill landed inside a save in 5 tries').toBe(true);
    expect(existsSync(join(out, 'checkpoint-2', 'run_state.json'))).toBe(true);
    const { loadModel } = await import('../../lib/index.js');
    await (await loadModel(join(out, 'checkpoint-2'), { device: 'cpu' })).dispose();  // the model in it loads
    const r = spawnSync(process.execPath, [cli, ...args(out, ['--resume'])], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const lines = parse(r.stdout);
    expect(lines.some((l) => l.type === 'log' && l.message === `resumed from ${join(out, 'checkpoint-2')} at step 2`)).toBe(true);
    const rest = stepLosses(lines);
    expect([...rest.keys()]).toEqual([3, 4, 5, 6]);
    for (const s of [3, 4, 5, 6]) expect(rest.get(s)).toBe(full.get(s));
    expect(existsSync(join(out, '.checkpoint-3.tmp'))).toBe(false);  // the leftover was cleared by the next save
  }, 600_000);

  it('the curriculum from the command line: align → instruct → finetune, and lora; each output chats', () => {
    const stage = (name: string, model: string, dataFile: string, extra: string[] = []) => {
      const out = join(root, `cli-${name}`);
      const r = spawnSync(process.execPath, [cli, 'train', '--stage', name, '--model', model, '--data', dataFile, '--images', data.images,
        '--output', out, '--batch-size', '4', '--micro-batch-size', '2', '--epochs', '1', '--lr', '2e-3', ...extra], { encoding: 'utf8' });
      expect(r.status, `${name}: ${r.stderr}`).toBe(0);
      expect(parse(r.stdout).pop()).toMatchObject({ type: 'done', steps: 3, stopped: false });
      const chat = spawnSync(process.execPath, [cli, 'chat', '--model', out, '--image', join(data.images, 'images', 'img0.png'), '--prompt',
        'What is seen?', '--max-tokens', '4', '--device', 'cpu'], { encoding: 'utf8' });
      expect(chat.status, `${name} chat: ${chat.stderr}`).toBe(0);
      return out;
    };
    const align = stage('align', v15, data.captions);
    const instruct = stage('instruct', align, data.conversations);
    stage('finetune', instruct, data.conversations);
    const lora = stage('lora', instruct, data.conversations, ['--lora-r', '4', '--lora-alpha', '8']);
    expect(existsSync(join(lora, 'adapter_config.json'))).toBe(true);
  }, 300_000);

  it('a fresh run into a folder with an earlier run\'s checkpoints is refused unless --overwrite', () => {
    const out = join(root, 'full');  // the first test's run, with checkpoint-5 and -6
    const again = spawnSync(process.execPath, [cli, ...args(out)], { encoding: 'utf8' });
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/holds checkpoints of an earlier run \(checkpoint-\d, checkpoint-\d\): pass resume .*\(E_ARGUMENT\)/);
    expect(readdirSync(out).filter((f) => f.startsWith('checkpoint-')).sort()).toEqual(['checkpoint-5', 'checkpoint-6']);
    const r = spawnSync(process.execPath, [cli, ...args(out, ['--overwrite', '--max-steps', '2'])], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(readdirSync(out).filter((f) => f.startsWith('checkpoint-')).sort()).toEqual(['checkpoint-1', 'checkpoint-2']);
  }, 300_000);

  it('bad options: a clear message, exit 1, nothing written', () => {
    const out = join(root, 'bad');
    const r = spawnSync(process.execPath, [cli, ...args(out, ['--batch-size', '3'])], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/batchSize 3 is not a multiple of microBatchSize 2 \(E_ARGUMENT\)/);
    expect(existsSync(join(out, 'metrics.jsonl'))).toBe(false);
  }, 300_000);
});
