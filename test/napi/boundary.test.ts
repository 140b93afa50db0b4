/**
 * The N-API boundary: backend info, errors with .code, validation messages, dispose semantics,
 * concurrency, and the public entry point.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { ERROR_CODES, getBackendInfo, isMedllavaError } from '../../lib/index.js';
import { packageRoot } from '../../lib/native.js';
import { addon } from '../support/addons.js';
import { randomNormal } from '../support/reference.js';

describe('getBackendInfo', () => {
  it('has the shape docs/API.md gives', () => {
    const info = getBackendInfo();
    expect(Object.keys(info).sort()).toEqual(['cpu', 'cuda']);
    expect(Number.isInteger(info.cpu.threads) && info.cpu.threads >= 1).toBe(true);
    expect(Array.isArray(info.cpu.features)).toBe(true);
    expect(typeof info.cuda.compiled).toBe('boolean');
    expect(typeof info.cuda.available).toBe('boolean');
    expect(Array.isArray(info.cuda.devices)).toBe(true);
  });

  it.runIf(!getBackendInfo().cuda.available)('without a usable GPU: not available, no devices, and the reason from cudaGetDeviceCount', () => {
    const info = getBackendInfo();
    expect(info.cuda.available).toBe(false);
    expect(info.cuda.devices).toEqual([]);
    if (info.cuda.compiled) expect(info.cuda.reason).toMatch(/^cudaGetDeviceCount: cudaError\w+ \(.+\)$/);
    else expect(info.cuda.reason).toMatch(/no CUDA backend/);
  });

  it.runIf(getBackendInfo().cuda.available)('with a GPU: available, its devices listed (name, memory, compute capability), no reason', () => {
    const info = getBackendInfo();
    expect(info.cuda.compiled).toBe(true);
    expect(info.cuda.reason).toBeUndefined();
    expect(info.cuda.devices.length).toBeGreaterThan(0);
    for (const d of info.cuda.devices) {
      expect(d.name.length).toBeGreaterThan(0);
      expect(d.memoryBytes).toBeGreaterThan(2 ** 30);
      expect(d.computeCapability).toMatch(/^\d+\.\d+$/);
    }
  });

  it('reports the CPU features the kernels dispatch on', () => {
    const info = getBackendInfo();
    for (const f of info.cpu.features) expect(['avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512vl', 'avx512vnni']).toContain(f);
  });

  it('the CLI prints it', () => {
    const out = execFileSync(process.execPath, [join(packageRoot(), 'dist/lib/cli/main.js'), 'info', '--json'], {
      encoding: 'utf8',
    });
    expect(JSON.parse(out)).toEqual(getBackendInfo());
  });

  it('a CUDA probe child that crashes leaves this process running, with CUDA disabled and the reason given', () => {
    const out = execFileSync(process.execPath, [join(packageRoot(), 'dist/lib/cli/main.js'), 'info', '--json'], {
      encoding: 'utf8', env: { ...process.env, MEDLLAVA_PROBE_SIMULATE_CRASH: '1' },
    });
    const info = JSON.parse(out) as ReturnType<typeof getBackendInfo>;
    expect(info.cuda.available).toBe(false);
    expect(info.cuda.devices).toEqual([]);
    if (info.cuda.compiled) expect(info.cuda.reason).toMatch(/CUDA disabled: the CUDA probe process was killed by SIGSEGV/);
  });

  it('MEDLLAVA_CUDA=off keeps CUDA untouched and says so', () => {
    const out = execFileSync(process.execPath, [join(packageRoot(), 'dist/lib/cli/main.js'), 'info', '--json'], {
      encoding: 'utf8', env: { ...process.env, MEDLLAVA_CUDA: 'off' },
    });
    const info = JSON.parse(out) as ReturnType<typeof getBackendInfo>;
    expect(info.cuda.available).toBe(false);
    if (info.cuda.compiled) expect(info.cuda.reason).toMatch(/MEDLLAVA_CUDA=off/);
  });
});

describe('errors cross the boundary with .code', () => {
  const n = () => addon();
  const catchErr = (f: () => unknown): unknown => {
    try {
      f();
    } catch (e) {
      return e;
    }
    throw new Error('did not throw');
  };

  it('wrong weight type → E_ARGUMENT naming what was expected and given', () => {
    const e = catchErr(() => new (n().NativeLinear)(new Float32Array(4), 'f16', 2, 2, null));
    expect(isMedllavaError(e)).toBe(true);
    expect(e).toMatchObject({ code: 'E_ARGUMENT', message: expect.stringMatching(/Uint16Array.*got Float32Array/) });
  });

  it('weight of the wrong size → E_SHAPE', () => {
    expect(catchErr(() => new (n().NativeLinear)(new Float32Array(5), 'f32', 2, 2, null)))
      .toMatchObject({ code: 'E_SHAPE', message: expect.stringMatching(/20 bytes.*need 16/) });
  });

  it('bad dtype, bad bias, bad sizes → E_ARGUMENT / E_SHAPE', () => {
    expect(catchErr(() => new (n().NativeLinear)(new Float32Array(4), 'f64' as 'f32', 2, 2, null)))
      .toMatchObject({ code: 'E_ARGUMENT', message: expect.stringMatching(/'f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_k' or 'q6_k'/) });
    expect(catchErr(() => new (n().NativeLinear)(new Float32Array(4), 'f32', 2, 2, new Float32Array(3))))
      .toMatchObject({ code: 'E_SHAPE' });
    expect(catchErr(() => new (n().NativeLinear)(new Float32Array(4), 'f32', 2.5, 2, null)))
      .toMatchObject({ code: 'E_ARGUMENT', message: expect.stringMatching(/outFeatures must be an integer/) });
  });

  it('forward with a mis-sized input rejects synchronously with E_SHAPE; bad options with E_ARGUMENT', async () => {
    const lin = new (n().NativeLinear)(new Float32Array(6), 'f32', 2, 3, null);
    expect(catchErr(() => lin.forward(new Float32Array(5), 2, {}))).toMatchObject({ code: 'E_SHAPE' });
    expect(catchErr(() => lin.forward(new Float32Array(6), 2, { activation: 'relu' as 'gelu' })))
      .toMatchObject({ code: 'E_ARGUMENT', message: expect.stringMatching(/'none', 'gelu' or 'quick_gelu'/) });
    expect(catchErr(() => lin.forward(new Float32Array(6), 2, { device: 'tpu' as 'cpu' })))
      .toMatchObject({ code: 'E_ARGUMENT' });
    lin.dispose();
  });

  it('NativeLinear on the CUDA device: without a GPU a rejection with a code (the process survives); with one, the CPU\'s result', async () => {
    const lin = new (n().NativeLinear)(new Float32Array([1, 2, 3, 4, 5, 6]), 'f32', 2, 3, null);
    const x = new Float32Array([1, -1, 2]);
    if (getBackendInfo().cuda.available) {
      const out = await lin.forward(x, 1, { device: 'cuda' });
      expect(Array.from(out)).toEqual([5, 11]);
    } else {
      const err = await lin.forward(x, 1, { device: 'cuda' }).catch((e: unknown) => e);
      expect(isMedllavaError(err)).toBe(true);
      expect(['E_CUDA', 'E_UNSUPPORTED']).toContain((err as { code: string }).code);
    }
    lin.dispose();
  });

  it('every code we document is one the TS side recognises', () => {
    expect(ERROR_CODES).toContain('E_CONTEXT_FULL');
    expect(isMedllavaError(Object.assign(new Error('x'), { code: 'E_NOPE' }))).toBe(false);
  });

  it('setCpuDispatch and setThreads validate', () => {
    expect(catchErr(() => n().setCpuDispatch('sse' as 'auto'))).toMatchObject({ code: 'E_ARGUMENT' });
    expect(catchErr(() => n().setThreads(0))).toMatchObject({ code: 'E_ARGUMENT' });
  });
});

describe('dispose', () => {
  it('a call after dispose is E_ARGUMENT, not a crash; dispose is idempotent', () => {
    const lin = new (addon().NativeLinear)(new Float32Array(6), 'f32', 2, 3, null);
    lin.dispose();
    lin.dispose();
    expect(lin.disposed).toBe(true);
    expect(() => lin.forward(new Float32Array(3), 1, {})).toThrow(expect.objectContaining({
      code: 'E_ARGUMENT', message: expect.stringMatching(/disposed/),
    }));
  });

  it('dispose while a forward is in flight: the forward still completes correctly', async () => {
    const K = 512;
    const N = 512;
    const M = 64;
    const w = randomNormal(N * K, 1);
    const a = randomNormal(M * K, 2);
    const lin = new (addon().NativeLinear)(w, 'f32', N, K, null);
    const pending = lin.forward(a, M, {});
    lin.dispose();
    const out = await pending;
    let s = 0;
    for (let k = 0; k < K; k++) s += a[k]! * w[k]!;
    expect(out[0]).toBeCloseTo(s, 3);
  });
});

describe('concurrency and memory', () => {
  it('many forwards in flight on one Linear, and on several, all correct', async () => {
    const K = 64;
    const N = 48;
    const w = randomNormal(N * K, 3);
    const lins = [0, 1, 2].map(() => new (addon().NativeLinear)(w, 'f32', N, K, null));
    const inputs = Array.from({ length: 24 }, (_, i) => randomNormal(5 * K, 100 + i));
    const outs = await Promise.all(inputs.map((x, i) => lins[i % 3]!.forward(x, 5, { activation: 'gelu' })));
    const single = new (addon().NativeLinear)(w, 'f32', N, K, null);
    for (let i = 0; i < inputs.length; i++) expect(outs[i]).toEqual(await single.forward(inputs[i]!, 5, { activation: 'gelu' }));
    for (const l of [...lins, single]) l.dispose();
  });

  it('returns a fresh Float32Array of rows × outFeatures and leaves the input untouched', async () => {
    const lin = new (addon().NativeLinear)(new Float32Array([1, 0, 0, 1]), 'f32', 2, 2, new Float32Array([10, 20]));
    const input = new Float32Array([1, 2, 3, 4]);
    const out = await lin.forward(input, 2, {});
    expect(Array.from(out)).toEqual([11, 22, 13, 24]);
    expect(Array.from(input)).toEqual([1, 2, 3, 4]);
    expect(out.buffer).not.toBe(input.buffer);
    lin.dispose();
  });

  it('rows = 0 gives an empty result', async () => {
    const lin = new (addon().NativeLinear)(new Float32Array(4), 'f32', 2, 2, null);
    expect((await lin.forward(new Float32Array(0), 0, {})).length).toBe(0);
    lin.dispose();
  });
});
