/**
 * nvcc compiles every CUDA kernel for sm_80/86/89/90 with -Xptxas -v (scripts/ptxas-report.mjs):
 * the per-kernel register / spill / shared-memory report lands in build/ptxas-report.txt, and no
 * kernel may spill or keep arrays on the stack (a hot loop's arrays must live in registers).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { packageRoot } from '../../lib/native.js';

const nvcc = spawnSync(process.env.CUDACXX || 'nvcc', ['--version'], { encoding: 'utf8' }).status === 0;

describe('nvcc register report', () => {
  it.skipIf(!nvcc)('every kernel compiles for sm_80/86/89/90 without spills', () => {
    const root = packageRoot();
    const r = spawnSync(process.execPath, [join(root, 'scripts', 'ptxas-report.mjs')], { cwd: root, encoding: 'utf8' });
    const summary = r.stdout.trim().split('\n').pop();
    console.log(summary);
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    const kernels = JSON.parse(readFileSync(join(root, 'build', 'ptxas-report.json'), 'utf8')) as
      { name: string; arch: string; registers: number; spillStores: number; spillLoads: number; stack: number }[];
    const names = new Set(kernels.map((k) => k.name.replace(/<.*$/, '')));
    for (const k of ['matmul_tiled_kernel', 'matmul_wmma_kernel', 'matmul_q_gemv_kernel', 'rmsnorm_kernel', 'layernorm_kernel',
      'rope_kernel', 'silu_mul_kernel', 'activation_kernel', 'residual_kernel', 'embed_kernel', 'kv_append_kernel',
      'flash_attention_kernel', 'attention_decode_kernel', 'decode_combine_kernel', 'topk_kernel']) {
      expect(names, `${k} is in the report`).toContain(k);
    }
    expect(new Set(kernels.map((k) => k.arch))).toEqual(new Set(['sm_80', 'sm_86', 'sm_89', 'sm_90']));
    for (const k of kernels) {
      expect(k.spillStores + k.spillLoads, `${k.name} (${k.arch}) spills`).toBe(0);
      expect(k.stack, `${k.name} (${k.arch}) keeps ${k.stack} bytes on the stack`).toBe(0);
    }
    expect(execFileSync('grep', ['-c', 'Used [0-9]* registers', join(root, 'build', 'ptxas-report.txt')], { encoding: 'utf8' }).trim())
      .toBe(String(kernels.length));
  }, 300_000);
});
