/**
 * Typed arrays at the N-API boundary: every native method that takes one refuses every other
 * element kind with E_ARGUMENT (a Uint8Array read as float32 would make a worker read 4× past its
 * buffer), refuses a detached buffer, and reads a copy — so transferring the buffer while the
 * worker runs changes nothing. And the codes of failures that are ours: E_INTERNAL / E_OOM, never
 * E_ARGUMENT.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { isMedllavaError, loadModelSpec } from '../../lib/index.js';
import { loadLlm } from '../../lib/model/llm.js';
import { loadVision } from '../../lib/model/vision.js';
import { native, type NativeLlm, type NativeVision } from '../../lib/native.js';
import { simt } from '../support/addons.js';
import { randomNormal } from '../support/reference.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-typed-'));
let llm: NativeLlm;
let vision: NativeVision;
let hidden = 0;
let imageSize = 0;

beforeAll(async () => {
  const f = (await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'v15') })) as { dir: string; tower: string };
  const spec = await loadModelSpec(f.dir, { visionTower: f.tower });
  llm = await loadLlm(spec);
  vision = await loadVision(spec);
  hidden = spec.llm.hidden;
  imageSize = spec.vision.imageSize;
}, 120_000);

/** Every TypedArray kind, `n` elements each. */
const KINDS = {
  Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, Float32Array, Float64Array,
  BigInt64Array, BigUint64Array,
} as const;
type Kind = keyof typeof KINDS;
const make = (k: Kind, n: number) => new KINDS[k](n) as ArrayBufferView;
const others = (k: Kind) => (Object.keys(KINDS) as Kind[]).filter((x) => x !== k);

/** The error `f` throws synchronously or rejects with. */
async function failure(f: () => unknown): Promise<{ code?: string; message: string }> {
  try {
    await f();
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error('did not fail');
}

/**
 * Moves `buf`'s memory to a new ArrayBuffer and detaches `buf`: ArrayBuffer.prototype.transfer()
 * where the runtime has it (Node ≥ 21), else a structuredClone transfer (Node 20) — the same detach.
 */
function transferAway(buf: ArrayBufferLike): ArrayBuffer {
  const b = buf as ArrayBuffer & { transfer?: () => ArrayBuffer };
  return b.transfer ? b.transfer() : structuredClone(b, { transfer: [b] });
}

/** A detached view: the buffer transferred away (and the new owner dropped). */
function detached(k: Kind, n: number): ArrayBufferView {
  const v = make(k, n);
  transferAway(v.buffer);
  return v;
}

describe('every native method checks the element type of its typed arrays', () => {
  // [method, the kind it takes, a call with a given array of the right length]
  const cases: [string, Kind, (a: ArrayBufferView) => unknown][] = [
    ['NativeLlmContext.eval tokens', 'Int32Array', (a) => llm.createContext().eval(a as Int32Array)],
    ['NativeLlmContext.eval embeddings', 'Float32Array', (a) => llm.createContext().eval(new Int32Array([1, -1]), { embeddings: a as Float32Array })],
    ['NativeLlmContext.evalSample history', 'Int32Array', (a) => llm.createContext().evalSample(new Int32Array([1]), { history: a as Int32Array })],
    ['sampleLogits logits', 'Float32Array', (a) => native().sampleLogits(a as Float32Array, {}, new Int32Array(0), 1)],
    ['NativeVision.encode pixels', 'Float32Array', (a) => vision.encode(a as Float32Array)],
    ['NativeLinear weight (f32)', 'Float32Array', (a) => new (native().NativeLinear)(a as Float32Array, 'f32', 4, 32, null)],
    ['NativeLinear weight (f16)', 'Uint16Array', (a) => new (native().NativeLinear)(a as Uint16Array, 'f16', 4, 32, null)],
    ['NativeLinear weight (q8_0)', 'Uint8Array', (a) => new (native().NativeLinear)(a as Uint8Array, 'q8_0', 4, 32, null)],
    ['NativeLinear bias', 'Float32Array', (a) => new (native().NativeLinear)(new Float32Array(128), 'f32', 4, 32, a as Float32Array)],
    ['NativeLinear.forward input', 'Float32Array', (a) => new (native().NativeLinear)(new Float32Array(128), 'f32', 4, 32, null).forward(a as Float32Array, 2, {})],
    ['ggmlQuantize values', 'Float32Array', (a) => native().ggmlQuantize('Q8_0', a as Float32Array)],
    ['ggmlDequantize data', 'Uint8Array', (a) => native().ggmlDequantize('Q8_0', a as Uint8Array, 32)],
    ['writeGguf tensor data', 'Float32Array', (a) => native().writeGguf(join(root, 'x.gguf'), [],
      [{ name: 't', dims: [32], type: 'F32', data: a as Float32Array }], 32)],
  ];
  // the right length for each case, in elements of the right kind
  const lengths: Record<string, () => number> = {
    'NativeLlmContext.eval tokens': () => 2,
    'NativeLlmContext.eval embeddings': () => 2 * hidden,
    'NativeLlmContext.evalSample history': () => 3,
    'sampleLogits logits': () => 8,
    'NativeVision.encode pixels': () => 3 * imageSize * imageSize,
    'NativeLinear weight (f32)': () => 128,
    'NativeLinear weight (f16)': () => 128,
    'NativeLinear weight (q8_0)': () => 4 * 34,
    'NativeLinear bias': () => 4,
    'NativeLinear.forward input': () => 64,
    'ggmlQuantize values': () => 32,
    'ggmlDequantize data': () => 34,
    'writeGguf tensor data': () => 32,
  };

  for (const [name, kind, call] of cases) {
    it(`${name}: the ${kind} is accepted, every other kind is E_ARGUMENT, and so is a detached ${kind}`, async () => {
      const n = lengths[name]!();
      await call(make(kind, n)); // the right kind and length: accepted
      for (const k of others(kind)) {
        // a wrong kind with the same element count, and with the same byte length (the case that overreads)
        const sameBytes = Math.max(1, Math.floor(n * new KINDS[kind](0).BYTES_PER_ELEMENT / new KINDS[k](0).BYTES_PER_ELEMENT));
        for (const len of new Set([n, sameBytes, n * 4])) {
          if (kind === 'Float32Array' && k === 'Uint8Array' && name === 'writeGguf tensor data') continue; // raw GGML bytes: a valid input
          const e = await failure(() => call(make(k, len)));
          expect(isMedllavaError(e), `${name} with a ${k}(${len}): ${e.message}`).toBe(true);
          expect(e.code, `${name} with a ${k}(${len}): ${e.message}`).toBe('E_ARGUMENT');
          expect(e.message).toContain(k);
        }
      }
      const d = await failure(() => call(detached(kind, n)));
      expect(d.code, d.message).toBe('E_ARGUMENT');
      expect(d.message).toMatch(/detached/);
    });
  }

  it('writeSafetensors takes raw bytes or elements of the dtype\'s width, nothing else', async () => {
    const path = join(root, 'x.safetensors');
    await native().writeSafetensors(path, [{ name: 'a', dtype: 'F32', shape: [4], data: new Float32Array(4) }], {});
    await native().writeSafetensors(path, [{ name: 'a', dtype: 'F32', shape: [4], data: new Uint8Array(16) }], {});
    await native().writeSafetensors(path, [{ name: 'a', dtype: 'BF16', shape: [4], data: new Uint16Array(4) }], {});
    for (const data of [new Float64Array(2), new Uint16Array(8), new BigInt64Array(2)]) {
      const e = await failure(() => native().writeSafetensors(path, [{ name: 'a', dtype: 'F32', shape: [4], data }], {}));
      expect(e.code, e.message).toBe('E_ARGUMENT');
    }
    const d = await failure(() => native().writeSafetensors(path, [{ name: 'a', dtype: 'F32', shape: [4], data: detached('Float32Array', 4) }], {}));
    expect(d.message).toMatch(/detached/);
  });
});

describe('a buffer transferred while the worker runs changes nothing (the worker reads a copy)', () => {
  const gc = () => (globalThis as { gc?: () => void }).gc?.();

  it('NativeLlmContext.eval: tokens and embeddings transferred away mid-eval, logits as without', async () => {
    const T = 40;
    const tokens = Int32Array.from({ length: T }, (_, i) => (i % 7 === 3 ? -1 : 5 + i));
    const emb = randomNormal(T * hidden, 7);
    const expected = await llm.createContext().eval(tokens.slice(), { embeddings: emb.slice(), allLogits: true });
    const t = tokens.slice();
    const e = emb.slice();
    const pending = llm.createContext().eval(t, { embeddings: e, allLogits: true });
    // take the memory away and overwrite it: a worker still reading it would see garbage (or freed pages)
    const tb = transferAway(t.buffer);
    const eb = transferAway(e.buffer);
    new Int32Array(tb).fill(0x7fffffff);
    new Float32Array(eb).fill(Number.NaN);
    expect(t.length).toBe(0);
    gc();
    expect(await pending).toEqual(expected);
  });

  it('NativeVision.encode: pixels transferred away mid-encode, features as without', async () => {
    const px = randomNormal(3 * imageSize * imageSize, 8);
    const expected = await vision.encode(px.slice());
    const p = px.slice();
    const pending = vision.encode(p);
    new Float32Array(transferAway(p.buffer)).fill(Number.NaN);
    expect(await pending).toEqual(expected);
  });

  it('NativeLinear: weight transferred after construction, input transferred mid-forward', async () => {
    const N = 64;
    const K = 96;
    const w = randomNormal(N * K, 9);
    const a = randomNormal(8 * K, 10);
    const ref = new (native().NativeLinear)(w.slice(), 'f32', N, K, null);
    const expected = await ref.forward(a.slice(), 8, {});
    const wc = w.slice();
    const lin = new (native().NativeLinear)(wc, 'f32', N, K, null);
    new Float32Array(transferAway(wc.buffer)).fill(Number.NaN);
    const ac = a.slice();
    const pending = lin.forward(ac, 8, {});
    new Float32Array(transferAway(ac.buffer)).fill(Number.NaN);
    expect(await pending).toEqual(expected);
    ref.dispose();
    lin.dispose();
  });
});

describe('failures that are ours are not E_ARGUMENT', () => {
  // the test addon throws each C++ exception kind through the addon's own guard and PromiseWorker
  for (const where of ['sync', 'async'] as const) {
    it(`${where}: std::system_error / logic_error / a non-std throw → E_INTERNAL; bad_alloc → E_OOM; ours keep their code`, async () => {
      const t = (kind: string) => failure(() => (simt() as unknown as { throwFrom(k: string, w: string): unknown }).throwFrom(kind, where));
      for (const kind of ['system_error', 'logic', 'unknown']) {
        const e = await t(kind);
        expect(e.code, `${kind}: ${e.message}`).toBe('E_INTERNAL');
        expect(isMedllavaError(e)).toBe(true);
        expect(e.message).toMatch(/internal error in medllava/);
      }
      expect((await t('bad_alloc')).code).toBe('E_OOM');
      expect((await t('medllava')).code).toBe('E_SHAPE');
    });
  }
});
