/**
 * Data-parallel training over MPI (Open MPI from Debian: `mpirun --allow-run-as-root --oversubscribe -np 2`):
 *   - 2 ranks give the losses and the final weights of one process with the same global batch (each rank trains half
 *     of every step's micro-batches; the gradients are summed). Tolerance: the only difference is the fp32 order in
 *     which the two halves' gradients are added (one process accumulates micro-batch 2 into micro-batch 1's buffer
 *     inside its GEMMs; two ranks add two finished buffers), ~1e-7 relative per gradient, carried through 6 AdamW
 *     steps: losses within 1e-6 relative, weights within 1e-5 of their largest magnitude (measured ~1e-8 and 2.6e-7);
 *   - rank 0 alone writes checkpoints, curves and the model; SIGUSR1 to mpirun (which forwards it; SIGINT / SIGTERM kill the job)
 *     reaches every rank's `medllava train`, which agree to stop at the next step boundary and save; `--resume` with 2 ranks continues with exactly the
 *     losses of an uninterrupted 2-rank run; resuming with another rank count is refused (E_ARGUMENT);
 *   - ZeRO-1: the moments sharded (each rank holds its share), results byte-identical to the unsharded run's, a
 *     sharded run resumes bit-identically;
 *   - a rank that dies makes the job fail, not hang; a rank that hangs makes the others fail with E_TIMEOUT.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { loadModel } from '../../lib/index.js';
import { modelInternals } from '../../lib/model/model.js';
import { packageRoot } from '../../lib/native.js';
import { native } from '../../lib/native.js';
import { trainFixture, type TinyDataset } from '../support/train-data.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-mpi-'));
const driver = join(packageRoot(), 'test', 'support', 'mpi-train.mjs');
const cli = join(packageRoot(), 'dist', 'lib', 'cli', 'main.js');
// containers often forbid the cross-memory-attach single-copy path of Open MPI's shared-memory transport
const env = { ...process.env, OMPI_MCA_btl_vader_single_copy_mechanism: 'none', OMPI_MCA_rmaps_base_oversubscribe: '1' };
const mpirun = (np: number, args: string[]) => ['--allow-run-as-root', '--oversubscribe', '-np', String(np), process.execPath, ...args];
let v15: string;
let data: TinyDataset;

type Line = { type: string; step?: number; loss?: number; rank?: number; worldSize?: number; steps?: number };
const lines = (out: string): Line[] => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Line);
const losses = (ls: Line[]) => new Map(ls.filter((l) => l.type === 'step').map((l) => [l.step!, l.loss!]));

beforeAll(async () => {
  ({ v15, data } = await trainFixture(root));
}, 300_000);

describe('MPI', () => {
  it('is built in and Open MPI is here', () => {
    expect(native().mpi.info().compiled, 'the addon was built without mpi.h (apt-get install libopenmpi-dev, rebuild)').toBe(true);
    expect(spawnSync('mpirun', ['--version']).status, 'mpirun (Debian: openmpi-bin) is needed').toBe(0);
  });

  it('bad calls are refused with a code; this process (not under mpirun) never initialises MPI', async () => {
    const mpi = native().mpi;
    expect(() => mpi.allreduce(new Int32Array(2) as unknown as Float32Array, 'sum')).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
    expect(() => mpi.allreduce(new Float32Array(2), 'min' as 'sum')).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
    await expect(mpi.allreduce(new Float32Array(2), 'sum', 1000)).rejects.toMatchObject({ code: 'E_ARGUMENT', message: expect.stringMatching(/not initialised/) });
    await expect(mpi.barrier(1000)).rejects.toMatchObject({ code: 'E_ARGUMENT' });
    expect(mpi.info().initialized).toBe(false);
  });

  it('2 ranks = 1 process with the same global batch: losses and final weights', async () => {
    const o = { stage: 'instruct', model: v15, data: data.conversations, images: data.images, batchSize: 4, microBatchSize: 2, epochs: 2,
      learningRate: 2e-3, saveSteps: 2 };
    const two = spawnSync('mpirun', mpirun(2, [driver, JSON.stringify({ ...o, output: join(root, 'two') })]), { encoding: 'utf8', env, timeout: 240_000 });
    expect(two.status, two.stderr).toBe(0);
    const one = spawnSync(process.execPath, [driver, JSON.stringify({ ...o, output: join(root, 'one') })], { encoding: 'utf8', timeout: 240_000 });
    expect(one.status, one.stderr).toBe(0);
    const l2 = losses(lines(two.stdout)), l1 = losses(lines(one.stdout));
    expect([...l2.keys()]).toEqual([1, 2, 3, 4, 5, 6]);
    for (const [s, l] of l1) expect(Math.abs(l2.get(s)! - l) / l, `step ${s}`).toBeLessThan(1e-6);  // measured ~1e-8
    expect(lines(two.stdout).filter((l) => l.type === 'done').map((l) => `${l.rank}/${l.worldSize}`).sort()).toEqual(['0/2', '1/2']);
    // rank 0 wrote the checkpoints (save_total_limit 1) and the model
    expect(readdirSync(join(root, 'two')).filter((f) => f.startsWith('checkpoint-'))).toEqual(['checkpoint-6']);
    const a = await loadModel(join(root, 'one'), { device: 'cpu' }), b = await loadModel(join(root, 'two'), { device: 'cpu' });
    try {
      let worst = 0;
      for (const p of a.parameters().filter((q) => q.name.startsWith('model.'))) {
        const read = async (m: typeof a) => (p.name.startsWith('model.mm_projector') ? modelInternals(m).trainingParts().vision! : modelInternals(m).trainingParts().llm)
          .readParameter(p.name);
        const x = await read(a), y = await read(b);
        let diff = 0, mag = 0;
        for (let i = 0; i < x.length; i++) diff = Math.max(diff, Math.abs(x[i]! - y[i]!)), mag = Math.max(mag, Math.abs(x[i]!));
        worst = Math.max(worst, diff / Math.max(mag, 1e-12));
      }
      expect(worst).toBeLessThan(1e-5);  // measured 2.6e-7
      expect(worst).toBeGreaterThanOrEqual(0);
    } finally {
      await a.dispose();
      await b.dispose();
    }
  }, 600_000);

  it('ZeRO-1: each rank holds a share of the AdamW moments; the steps, the model and the checkpoint are exactly the '
    + 'unsharded run\'s; a sharded run resumes bit-identically', () => {
    const o = { stage: 'instruct', model: v15, data: data.conversations, images: data.images, batchSize: 4, microBatchSize: 2, epochs: 2,
      learningRate: 2e-3, saveSteps: 3, saveTotalLimit: 2, schedule: 'constant', warmupRatio: 0 };
    const go = (extra: Record<string, unknown>) => {
      const r = spawnSync('mpirun', mpirun(2, [driver, JSON.stringify({ ...o, ...extra })]), { encoding: 'utf8', env, timeout: 240_000 });
      expect(r.status, r.stderr).toBe(0);
      return lines(r.stdout) as (Line & { optimizerBytes?: number })[];
    };
    const plain = go({ output: join(root, 'z-plain') }), zero = go({ output: join(root, 'z-one'), zero1: true });
    expect(losses(zero)).toEqual(losses(plain));
    const bytes = (ls: typeof plain) => ls.filter((l) => l.type === 'done').map((l) => l.optimizerBytes!);
    const full = bytes(plain)[0]!, shares = bytes(zero);
    expect(shares).toHaveLength(2);
    expect(shares[0]! + shares[1]!).toBe(full);
    for (const b of shares) expect(b).toBeLessThan(full * 0.75);
    for (const f of ['model.safetensors', 'checkpoint-6/trainer/optimizer.safetensors', 'checkpoint-3/trainer/optimizer.safetensors']) {
      expect(readFileSync(join(root, 'z-one', f)).equals(readFileSync(join(root, 'z-plain', f))), f).toBe(true);
    }
    // stopped after 3 (a constant schedule: the step count does not move the learning rate), resumed to 6
    go({ output: join(root, 'z-resume'), zero1: true, maxSteps: 3 });
    const rest = losses(go({ output: join(root, 'z-resume'), zero1: true, maxSteps: 6, resume: true }));
    expect([...rest.keys()]).toEqual([4, 5, 6]);
    for (const [s, l] of rest) expect(l, `step ${s}`).toBe(losses(plain).get(s));
  }, 600_000);

  it('SIGUSR1 to mpirun: every rank stops at the same boundary and saves; --resume with 2 ranks is bit-identical', async () => {
    const args = (out: string, extra: string[] = []) => [cli, 'train', '--stage', 'instruct', '--model', v15, '--data', data.conversations,
      '--images', data.images, '--output', out, '--batch-size', '4', '--micro-batch-size', '2', '--epochs', '100', '--lr', '1e-3',
      '--save-steps', '1000', '--json', ...extra];
    const ref = spawnSync('mpirun', mpirun(2, args(join(root, 'ref'))), { encoding: 'utf8', env, timeout: 300_000 });
    expect(ref.status, ref.stderr).toBe(0);
    const full = losses(lines(ref.stdout));
    expect(full.size).toBe(300);
    const out = join(root, 'stopped');
    const child = spawn('mpirun', mpirun(2, args(out)), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', sent = false;
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (!sent && losses(lines(stdout)).has(3)) sent = true, child.kill('SIGUSR1');
    });
    const code = await new Promise<number | null>((res) => child.on('exit', (c) => res(c)));
    expect(code).not.toBe(0);
    const seen = losses(lines(stdout));
    const last = Math.max(...seen.keys());
    expect(last).toBeGreaterThanOrEqual(3);
    expect(last).toBeLessThan(300);
    expect(existsSync(join(out, `checkpoint-${last}`, 'run_state.json'))).toBe(true);
    for (const [s, l] of seen) expect(l, `step ${s}`).toBe(full.get(s));
    const resumed = spawnSync('mpirun', mpirun(2, args(out, ['--resume'])), { encoding: 'utf8', env, timeout: 300_000 });
    expect(resumed.status, resumed.stderr).toBe(0);
    const rest = losses(lines(resumed.stdout));
    expect(Math.min(...rest.keys())).toBe(last + 1);
    for (const [s, l] of rest) expect(l, `step ${s}`).toBe(full.get(s));
    // one process cannot resume a 2-rank checkpoint
    const wrong = spawnSync(process.execPath, args(join(root, 'ref'), ['--resume']), { encoding: 'utf8' });
    expect(wrong.status).toBe(1);
    expect(wrong.stderr).toMatch(/trained by 2 rank\(s\); resume it with as many \(this run has 1\) \(E_ARGUMENT\)/);
  }, 900_000);

  it('a rank that dies fails the job; a rank that hangs makes the others fail with E_TIMEOUT', () => {
    const o = { stage: 'instruct', model: v15, data: data.conversations, images: data.images, batchSize: 4, microBatchSize: 2, epochs: 200,
      learningRate: 1e-3, saveSteps: 0, collectiveTimeoutMs: 3000 };
    for (const fault of ['die', 'hang'] as const) {
      const t0 = Date.now();
      const r = spawnSync('mpirun', mpirun(2, [driver, JSON.stringify({ ...o, output: join(root, `fault-${fault}`) }), fault]),
        { encoding: 'utf8', env, timeout: 120_000 });
      const text = r.stdout + r.stderr;
      expect(r.status, `${fault}: ${text.slice(-2000)}`).not.toBe(0);
      expect(r.signal, `${fault}: mpirun was still running after 120 s`).toBeNull();
      expect(Date.now() - t0).toBeLessThan(60_000);
      if (fault === 'die') expect(text).toMatch(/signal 9|Killed/);
      else expect(text).toMatch(/E_TIMEOUT/);
    }
  }, 600_000);
});
