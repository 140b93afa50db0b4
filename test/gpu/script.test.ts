/**
 * The plumbing of `npm run test:gpu` (scripts/test-gpu.mjs), checked where there is no GPU: without
 * a driver, with a driver that fails and with one that hangs, it stops at once with a one-line
 * reason and exit code 2, and still writes its report; with a device reported, it plans a build for
 * that device's architecture only.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { packageRoot } from '../../lib/native.js';

const script = join(packageRoot(), 'scripts', 'test-gpu.mjs');

/** runs the script with PATH = a folder holding only `nvidia-smi` (the given shell body, or none) and node */
function run(smi: string | null, args: string[] = [], env: Record<string, string> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'medllava-gpu-'));
  const bin = join(dir, 'bin');
  const report = join(dir, 'report');
  spawnSync('mkdir', ['-p', bin]);
  if (smi !== null) {
    writeFileSync(join(bin, 'nvidia-smi'), `#!/bin/sh\n${smi}\n`);
    chmodSync(join(bin, 'nvidia-smi'), 0o755);
  }
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [script, ...args], {
    encoding: 'utf8', timeout: 60_000,
    env: { PATH: `${bin}:${dirname(process.execPath)}:/bin`, MEDLLAVA_GPU_REPORT_DIR: report, ...env },
  });
  return { ...r, seconds: (Date.now() - t0) / 1000, report };
}

describe('npm run test:gpu without a GPU', () => {
  it('no driver: exit 2, one clear line, a report saying why', () => {
    const r = run(null);
    expect(r.status).toBe(2);
    expect(r.stdout).toMatch(/test:gpu: no-gpu — no NVIDIA GPU to test on \(nvidia-smi is not on the PATH/);
    const rep = JSON.parse(readFileSync(join(r.report, 'gpu-report.json'), 'utf8'));
    expect(rep).toMatchObject({ status: 'no-gpu', device: null });
    expect(readFileSync(join(r.report, 'gpu-report.md'), 'utf8')).toMatch(/# medllava GPU check — no-gpu/);
  });

  it('a driver that fails: its message is the reason', () => {
    const r = run('echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver" >&2; exit 9');
    expect(r.status).toBe(2);
    expect(r.stdout).toMatch(/could not communicate with the NVIDIA driver/);
  });

  it('a driver that hangs: stopped after the probe timeout, not waited for', () => {
    const r = run('sleep 600', [], { MEDLLAVA_GPU_PROBE_TIMEOUT_MS: '1500' });
    expect(r.status).toBe(2);
    expect(r.stdout).toMatch(/did not answer within 1500 ms/);
    expect(r.seconds).toBeLessThan(20);
  });

  it('a device reported: the build targets its architecture only (planned, not run)', () => {
    const r = run('echo "NVIDIA H200, 9.0, 143771 MiB, 580.159.04"', ['--plan']);
    expect(r.status, r.stderr).toBe(0);
    const p = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(p.device).toEqual({ name: 'NVIDIA H200', arch: '90', memory: '143771 MiB', driver: '580.159.04' });
    expect(p.build).toContain('--CDCMAKE_CUDA_ARCHITECTURES=90');
    expect(p.tests).toContain('test/kernels/ops.test.ts');
  });
});
