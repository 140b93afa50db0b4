/**
 * The SIMT emulator itself: warp collectives, atomics, shared memory (static and dynamic), wmma,
 * block orders — each checked against results computed here in TypeScript — and its diagnostics,
 * which must turn CUDA's undefined behaviour into errors.
 */
import { afterEach, describe, expect, it } from 'vitest';

import { simt } from '../support/addons.js';
import { fromHalfBits, randomNormal, relativeError, toHalfBits } from '../support/reference.js';

const iota = (n: number) => Float32Array.from({ length: n }, (_, i) => i);

afterEach(() => simt().setOptions({ blockOrder: 'forward' }));

describe('warp collectives', () => {
  it('__shfl_xor_sync butterfly sums each warp', async () => {
    const input = randomNormal(256, 3).map((x) => Math.round(x * 100));
    const out = await simt().run('warp_sum', input, 8, [2, 1, 1], [128, 1, 1], 0, 0, 0, 'nan');
    for (let w = 0; w < 8; w++) {
      let s = 0;
      for (let l = 0; l < 32; l++) s += input[w * 32 + l]!;
      expect(out[w]).toBe(s);
    }
  });

  for (const [delta, width] of [[1, 32], [3, 32], [5, 8], [2, 4], [9, 16], [0, 1]] as const) {
    it(`__shfl / _up / _down / _xor with operand ${delta}, width ${width}`, async () => {
      const out = await simt().run('shfl_variants', iota(64).map((x) => x + 1000), 256, [1, 1, 1], [64, 1, 1], 0,
        delta, width, 'nan');
      for (let t = 0; t < 64; t++) {
        const lane = t % 32;
        const warpBase = t - lane;
        const seg = lane - (lane % width);
        const v = (l: number) => 1000 + warpBase + l;
        expect(out[4 * t]).toBe(v(seg + (delta % width)));
        expect(out[4 * t + 1]).toBe(lane - delta >= seg ? v(lane - delta) : v(lane));
        expect(out[4 * t + 2]).toBe(lane + delta < seg + width ? v(lane + delta) : v(lane));
        const x = lane ^ delta;
        expect(out[4 * t + 3]).toBe(x >= seg + width ? v(lane) : v(x));
      }
    });
  }

  it('__ballot_sync, __any_sync, __all_sync', async () => {
    const pred = new Float32Array(96);
    for (let i = 0; i < 96; i++) pred[i] = i < 32 ? (i % 3 === 0 ? 1 : 0) : i < 64 ? 1 : 0;
    const out = new Uint32Array((await simt().run('votes', pred, 288, [1, 1, 1], [96, 1, 1], 0, 0, 0, 'nan')).buffer);
    for (let t = 0; t < 96; t++) {
      const w = Math.floor(t / 32);
      let ballot = 0;
      for (let l = 0; l < 32; l++) if (pred[w * 32 + l]) ballot |= 1 << l;
      expect(out[3 * t]).toBe(ballot >>> 0);
      expect(out[3 * t + 1]).toBe(ballot !== 0 ? 1 : 0);
      expect(out[3 * t + 2]).toBe(ballot >>> 0 === 0xffffffff ? 1 : 0);
    }
  });
});

describe('memory', () => {
  it('atomicAdd on float and atomicMax on int across blocks', async () => {
    const input = Float32Array.from({ length: 512 }, (_, i) => ((i * 37) % 101) / 4);
    const out = await simt().run('atomics', input, 2, [4, 1, 1], [128, 1, 1], 0, 0, 0, 'zero');
    expect(out[0]).toBeCloseTo(input.reduce((s, x) => s + x, 0), 2);
    expect(new Int32Array(out.buffer)[1]).toBe(Math.max(...Array.from(input, (x) => Math.trunc(x * 1000))));
  });

  it('dynamic shared memory through MEDLLAVA_DYNAMIC_SHARED', async () => {
    const out = await simt().run('reverse_dynamic', iota(192), 192, [3, 1, 1], [64, 1, 1], 64 * 4, 0, 0, 'nan');
    for (let b = 0; b < 3; b++)
      for (let t = 0; t < 64; t++) expect(out[b * 64 + t]).toBe(b * 64 + 63 - t);
  });

  it('dynamic shared memory used without asking for it is an error', async () => {
    await expect(simt().run('reverse_dynamic', iota(64), 64, [1, 1, 1], [64, 1, 1], 0, 0, 0, 'nan'))
      .rejects.toMatchObject({ code: 'E_CUDA', message: expect.stringMatching(/dynamic shared memory/) });
  });

  it('poisons __shared__ before every block: a read before any write sees NaN, not the last block\'s data', async () => {
    const out = await simt().run('read_before_write', new Float32Array(1), 5, [5, 1, 1], [32, 1, 1], 0, 0, 0, 'zero');
    for (const v of out) expect(v).toBeNaN();
  });

  it('a block-wide shared-memory reduction is right with its barriers, in every block order', async () => {
    const input = randomNormal(1024, 11).map((x) => Math.round(x * 8));
    for (const blockOrder of ['forward', 'reverse', 'shuffle'] as const) {
      simt().setOptions({ blockOrder, seed: 5 });
      const out = await simt().run('block_sum', input, 4, [4, 1, 1], [256, 1, 1], 0, 0, 0, 'nan');
      for (let b = 0; b < 4; b++) expect(out[b]).toBe(input.slice(b * 256, b * 256 + 256).reduce((s, x) => s + x, 0));
    }
  });

  it('the same reduction without its loop barrier gives wrong sums (the schedule exposes the race)', async () => {
    const input = Float32Array.from({ length: 256 }, () => 1);
    const out = await simt().run('block_sum', input, 1, [1, 1, 1], [256, 1, 1], 0, 1, 0, 'nan');
    expect(out[0]).not.toBe(256);
  });
});

describe('wmma', () => {
  it('16×16×16 f16 mma with fp32 accumulation matches a float64 product of the rounded inputs', async () => {
    const input = randomNormal(512, 21);
    const out = await simt().run('wmma_tile', input, 256, [1, 1, 1], [32, 1, 1], 0, 0, 0, 'nan');
    const h = (i: number) => fromHalfBits(toHalfBits(input[i]!));
    const ref = new Float64Array(256);
    for (let i = 0; i < 16; i++)
      for (let j = 0; j < 16; j++) {
        let s = 0;
        for (let k = 0; k < 16; k++) s += h(i * 16 + k) * h(256 + j * 16 + k); // b is column-major
        ref[i * 16 + j] = 2 * s; // the kernel doubles every fragment element
      }
    expect(relativeError(out, ref)).toBeLessThan(1e-6);
  });
});

describe('diagnostics', () => {
  const cases: [string, number[], RegExp][] = [
    ['bad_exited_lane', [32, 1, 1], /names exited lane\(s\) 0x20|lane 5 of warp 0, which has exited/],
    ['bad_divergent_barrier', [32, 1, 1], /divergent __syncthreads/],
    ['bad_barrier_sites', [32, 1, 1], /divergent __syncthreads: .* waits at .*simt_selftest\.cuh:\d+ while .*simt_selftest\.cuh:\d+/],
    ['bad_deadlock', [64, 1, 1], /deadlock .* wait at __syncthreads .* warp 0 waits in __shfl_sync/],
    ['bad_missing_lanes', [48, 1, 1], /do not exist in warp 1 \(it has 16 lanes\)/],
    ['bad_wmma_divergent', [32, 1, 1], /wmma collective .*exited/],
  ];
  for (const [kernel, block, message] of cases) {
    it(`${kernel} is reported, and the emulator keeps working afterwards`, async () => {
      await expect(simt().run(kernel, iota(64), 64, [1, 1, 1], block, 0, 0, 0, 'nan'))
        .rejects.toMatchObject({ code: 'E_CUDA', message: expect.stringMatching(message) });
      const out = await simt().run('warp_sum', iota(32), 1, [1, 1, 1], [32, 1, 1], 0, 0, 0, 'nan');
      expect(out[0]).toBe(496);
    });
  }

  it('rejects invalid launch configurations', async () => {
    await expect(simt().run('warp_sum', iota(32), 1, [1, 1, 1], [2048, 1, 1], 0, 0, 0, 'nan'))
      .rejects.toMatchObject({ code: 'E_CUDA', message: expect.stringMatching(/invalid launch configuration/) });
    await expect(simt().run('warp_sum', iota(32), 1, [0, 1, 1], [32, 1, 1], 0, 0, 0, 'nan'))
      .rejects.toMatchObject({ code: 'E_CUDA' });
  });

  it('counts its work (for the bench)', async () => {
    const before = simt().stats();
    await simt().run('warp_sum', iota(64), 2, [1, 1, 1], [64, 1, 1], 0, 0, 0, 'nan');
    const after = simt().stats();
    expect(after.launches - before.launches).toBe(1);
    expect(after.threads - before.threads).toBe(64);
    expect(after.switches).toBeGreaterThan(before.switches + 64 * 5);
  });
});
