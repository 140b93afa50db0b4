/**
 * GGUF: what we write, @huggingface/gguf (an independent reader) reads identically; what it
 * writes, we read; block quantizers byte-identical to llama.cpp's reference algorithms (restated
 * here in TypeScript); every block layout decoded as specified; hostile files give E_FORMAT.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { gguf, GGMLQuantizationType, GGUFValueType, serializeGgufMetadata } from '@huggingface/gguf';
import { describe, expect, it } from 'vitest';

import type { GgufKeyValue } from '../../lib/native.js';
import { addon } from '../support/addons.js';
import { fromBf16Bits, fromHalfBits, randomNormal, toBf16Bits, toHalfBits } from '../support/reference.js';

const dir = mkdtempSync(join(tmpdir(), 'medllava-gguf-'));
const n = () => addon();

const META: GgufKeyValue[] = [
  { key: 'general.architecture', type: 'string', value: 'llama' },
  { key: 'general.name', type: 'string', value: 'tiny ünïcode 模型' },
  { key: 'llama.context_length', type: 'u32', value: 2048 },
  { key: 'llama.rope.freq_base', type: 'f32', value: 10000 },
  { key: 'llama.attention.layer_norm_rms_epsilon', type: 'f32', value: Math.fround(1e-5) },
  { key: 'test.u8', type: 'u8', value: 255 },
  { key: 'test.i8', type: 'i8', value: -128 },
  { key: 'test.u16', type: 'u16', value: 65535 },
  { key: 'test.i16', type: 'i16', value: -32768 },
  { key: 'test.i32', type: 'i32', value: -2147483648 },
  { key: 'test.u64', type: 'u64', value: 1n << 60n },
  { key: 'test.i64', type: 'i64', value: -(1n << 62n) },
  { key: 'test.f64', type: 'f64', value: Math.PI },
  { key: 'test.bool', type: 'bool', value: true },
  { key: 'tokenizer.ggml.tokens', type: 'array', elementType: 'string', value: ['<unk>', '<s>', '</s>', '▁the', '<0x0A>'] },
  { key: 'tokenizer.ggml.scores', type: 'array', elementType: 'f32', value: new Float32Array([0, 0, 0, -1.5, -2]) },
  { key: 'tokenizer.ggml.token_type', type: 'array', elementType: 'i32', value: new Int32Array([2, 3, 3, 1, 6]) },
  { key: 'test.bools', type: 'array', elementType: 'bool', value: [true, false, true] },
  { key: 'test.u64s', type: 'array', elementType: 'u64', value: new BigUint64Array([1n, 1n << 63n]) },
  { key: 'test.nested', type: 'array', elementType: 'array', value: [{ elementType: 'u8', value: new Uint8Array([1, 2]) }] },
];

const tensorsToWrite = () => {
  const w = randomNormal(64 * 3, 1);
  return [
    { name: 'token_embd.weight', dims: [64, 3], type: 'F32', data: w },
    { name: 'blk.0.attn_q.weight', dims: [64, 3], type: 'F16', data: w },
    { name: 'blk.0.attn_k.weight', dims: [64, 3], type: 'BF16', data: w },
    { name: 'blk.0.attn_v.weight', dims: [64, 3], type: 'Q8_0', data: w },
    { name: 'blk.0.ffn_up.weight', dims: [64, 3], type: 'Q4_0', data: w },
    { name: 'output_norm.weight', dims: [64], type: 'F32', data: w.slice(0, 64) },
  ];
};

describe('GGUF round trips', () => {
  const path = join(dir, 'ours.gguf');

  it('@huggingface/gguf reads what we write: metadata, tensor infos, offsets', async () => {
    await n().writeGguf(path, META, tensorsToWrite(), 32);
    const theirs = await gguf(path, { allowLocalFile: true, typedMetadata: true });
    const tm = theirs.typedMetadata as Record<string, { value: unknown; type: GGUFValueType; subType?: GGUFValueType }>;
    expect(tm['version']!.value).toBe(3);
    expect(tm['general.name']!.value).toBe('tiny ünïcode 模型');
    expect(tm['llama.context_length']).toMatchObject({ value: 2048, type: GGUFValueType.UINT32 });
    expect(tm['test.i16']).toMatchObject({ value: -32768, type: GGUFValueType.INT16 });
    expect(tm['test.u64']!.value).toBe(1n << 60n);
    expect(tm['test.i64']!.value).toBe(-(1n << 62n));
    expect(tm['test.f64']!.value).toBe(Math.PI);
    expect(tm['test.bool']!.value).toBe(true);
    expect(tm['tokenizer.ggml.tokens']!.value).toEqual(['<unk>', '<s>', '</s>', '▁the', '<0x0A>']);
    expect(tm['tokenizer.ggml.scores']!.value).toEqual([0, 0, 0, -1.5, -2]);
    expect(tm['tokenizer.ggml.token_type']!.value).toEqual([2, 3, 3, 1, 6]);
    expect(tm['test.bools']!.value).toEqual([true, false, true]);
    const ours = await n().readGguf(path);
    expect(theirs.tensorInfos.map((t) => [t.name, t.shape.map(Number), t.dtype, Number(t.offset)])).toEqual(
      ours.tensors.map((t) => [t.name, t.dims, t.typeId, t.offset]));
    expect(Number(theirs.tensorDataOffset)).toBe(ours.dataStart);
    expect(ours.tensors.map((t) => t.typeId)).toEqual([GGMLQuantizationType.F32, GGMLQuantizationType.F16,
      GGMLQuantizationType.BF16, GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_0, GGMLQuantizationType.F32]);
  });

  it('our reader returns the metadata with its types, and every tensor decodes close to what was written', async () => {
    const h = await n().readGguf(path);
    expect(h.version).toBe(3);
    const byKey = new Map(h.metadata.map((m) => [m.key, m]));
    for (const m of META) {
      const got = byKey.get(m.key)!;
      expect(got.type, m.key).toBe(m.type);
      if (m.key === 'test.nested') {
        expect(got.value).toEqual([new Uint8Array([1, 2])]);
        continue;
      }
      expect(got.value, m.key).toEqual(m.value);
    }
    const written = tensorsToWrite();
    const tol: Record<string, number> = { F32: 0, F16: 1e-3, BF16: 8e-3, Q8_0: 1e-2, Q4_0: 0.2 };
    for (const t of written) {
      const got = (await n().readGgufTensor(path, t.name, true)) as Float32Array;
      let e = 0;
      let s = 0;
      for (let i = 0; i < got.length; i++) { e += (got[i]! - t.data[i]!) ** 2; s += t.data[i]! ** 2; }
      expect(Math.sqrt(e / s), t.type).toBeLessThanOrEqual(tol[t.type]!);
    }
  });

  it('we read a header @huggingface/gguf serialises (no tensors)', async () => {
    const header = serializeGgufMetadata({
      version: { value: 3, type: GGUFValueType.UINT32 },
      tensor_count: { value: 0n, type: GGUFValueType.UINT64 },
      kv_count: { value: 3n, type: GGUFValueType.UINT64 },
      'general.architecture': { value: 'llama', type: GGUFValueType.STRING },
      'llama.block_count': { value: 22, type: GGUFValueType.UINT32 },
      'tokenizer.ggml.tokens': { value: ['a', 'b'], type: GGUFValueType.ARRAY, subType: GGUFValueType.STRING },
    } as never);
    const p = join(dir, 'theirs.gguf');
    writeFileSync(p, header);
    const h = await n().readGguf(p);
    expect(h.metadata).toEqual([
      { key: 'general.architecture', type: 'string', value: 'llama' },
      { key: 'llama.block_count', type: 'u32', value: 22 },
      { key: 'tokenizer.ggml.tokens', type: 'array', elementType: 'string', value: ['a', 'b'] },
    ]);
  });

  it('a non-default alignment is written as general.alignment and honoured', async () => {
    const p = join(dir, 'align64.gguf');
    await n().writeGguf(p, META.slice(0, 2), tensorsToWrite().slice(0, 2), 64);
    const h = await n().readGguf(p);
    expect(h.alignment).toBe(64);
    expect(h.dataStart % 64).toBe(0);
    for (const t of h.tensors) expect(t.offset % 64).toBe(0);
    const theirs = await gguf(p, { allowLocalFile: true });
    expect(Number(theirs.tensorDataOffset)).toBe(h.dataStart);
  });
});

// ---- block formats, restated from llama.cpp's reference code --------------------------------------
function q8_0Reference(x: Float32Array): Uint8Array {
  const out = new Uint8Array((x.length / 32) * 34);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]!));
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    dv.setUint16(b * 34, toHalfBits(d), true);
    for (let j = 0; j < 32; j++) {
      const v = Math.fround(x[b * 32 + j]! * id);
      dv.setInt8(b * 34 + 2 + j, Math.sign(v) * Math.round(Math.abs(v))); // roundf: half away from zero
    }
  }
  return out;
}

function q4_0Reference(x: Float32Array): Uint8Array {
  const out = new Uint8Array((x.length / 32) * 18);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[b * 32 + j]!;
      if (amax < Math.abs(v)) { amax = Math.abs(v); max = v; }
    }
    const d = Math.fround(max / -8);
    const id = d ? Math.fround(1 / d) : 0;
    dv.setUint16(b * 18, toHalfBits(d), true);
    for (let j = 0; j < 16; j++) {
      const q0 = Math.min(15, Math.trunc(Math.fround(Math.fround(x[b * 32 + j]! * id) + 8.5)));
      const q1 = Math.min(15, Math.trunc(Math.fround(Math.fround(x[b * 32 + 16 + j]! * id) + 8.5)));
      out[b * 18 + 2 + j] = q0 | (q1 << 4);
    }
  }
  return out;
}

/** Decodes one block of each layout bit by bit, as ggml-common.h describes the structs. */
function decodeReference(type: string, bytes: Uint8Array): number[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const h = (o: number) => fromHalfBits(dv.getUint16(o, true));
  const y: number[] = [];
  const sixBit = (sc: Uint8Array, j: number): [number, number] => j < 4
    ? [sc[j]! & 63, sc[j + 4]! & 63]
    : [(sc[j + 4]! & 0xf) | ((sc[j - 4]! >> 6) << 4), (sc[j + 4]! >> 4) | ((sc[j]! >> 6) << 4)];
  switch (type) {
    case 'Q4_0': case 'Q4_1': {
      const d = h(0);
      const m = type === 'Q4_1' ? h(2) : 0;
      const qs = bytes.subarray(type === 'Q4_1' ? 4 : 2);
      for (let i = 0; i < 32; i++) {
        const q = i < 16 ? qs[i]! & 0xf : qs[i - 16]! >> 4;
        y.push(type === 'Q4_1' ? q * d + m : (q - 8) * d);
      }
      return y;
    }
    case 'Q5_0': case 'Q5_1': {
      const one = type === 'Q5_1';
      const d = h(0);
      const m = one ? h(2) : 0;
      const qh = dv.getUint32(one ? 4 : 2, true);
      const qs = bytes.subarray(one ? 8 : 6);
      for (let i = 0; i < 32; i++) {
        const lo = i < 16 ? qs[i]! & 0xf : qs[i - 16]! >> 4;
        const q = lo | (((qh >>> i) & 1) << 4); // bit i of qh is element i's fifth bit
        y.push(one ? q * d + m : (q - 16) * d);
      }
      return y;
    }
    case 'Q8_0':
      for (let i = 0; i < 32; i++) y.push(dv.getInt8(2 + i) * h(0));
      return y;
    case 'Q4_K': case 'Q5_K': {
      const five = type === 'Q5_K';
      const d = h(0);
      const dmin = h(2);
      const sc = bytes.subarray(4, 16);
      const qh = bytes.subarray(16, 48);
      const qs = bytes.subarray(five ? 48 : 16);
      for (let i = 0; i < 256; i++) {
        const sub = Math.floor(i / 32); // 8 sub-blocks of 32
        const chunk = Math.floor(i / 64);
        const l = i % 32;
        const lo = sub % 2 === 0 ? qs[chunk * 32 + l]! & 0xf : qs[chunk * 32 + l]! >> 4;
        const hi = five ? ((qh[l]! >> sub) & 1) << 4 : 0; // bit `sub` of qh[l]
        const [s, m] = sixBit(sc, sub);
        y.push(d * s * (lo | hi) - dmin * m);
      }
      return y;
    }
    case 'Q6_K': {
      const ql = bytes.subarray(0, 128);
      const qh = bytes.subarray(128, 192);
      const sc = new Int8Array(bytes.buffer, bytes.byteOffset + 192, 16);
      const d = h(208);
      for (let i = 0; i < 256; i++) {
        const half = Math.floor(i / 128); // two halves of 128
        const r = i % 128;
        const quarter = Math.floor(r / 32);
        const l = r % 32;
        const lowByte = ql[half * 64 + l + (quarter % 2) * 32]!;
        const low = quarter < 2 ? lowByte & 0xf : lowByte >> 4;
        const high = (qh[half * 32 + l]! >> (2 * quarter)) & 3;
        y.push(d * sc[half * 8 + Math.floor(l / 16) + 2 * quarter]! * ((low | (high << 4)) - 32));
      }
      return y;
    }
    default: throw new Error(type);
  }
}

describe('GGML block formats', () => {
  it('Q8_0 and Q4_0 quantizers match llama.cpp\'s reference algorithms byte for byte', () => {
    const x = randomNormal(32 * 64, 9);
    x.fill(0, 32 * 5, 32 * 6); // an all-zero block: d = 0
    x[32 * 7] = 1e-3; // a block with one tiny value
    expect(Buffer.from(n().ggmlQuantize('Q8_0', x)).equals(Buffer.from(q8_0Reference(x)))).toBe(true);
    expect(Buffer.from(n().ggmlQuantize('Q4_0', x)).equals(Buffer.from(q4_0Reference(x)))).toBe(true);
  });

  it('F16 and BF16 conversions are IEEE round-to-nearest-even', () => {
    const x = Float32Array.from([...randomNormal(200, 4), 65504, 65520, 1e-8, 6e-8, -0, Infinity, -Infinity, 3.4e38]);
    const f16 = new Uint16Array(n().ggmlQuantize('F16', x).buffer);
    const bf16 = new Uint16Array(n().ggmlQuantize('BF16', x).buffer);
    expect(Array.from(f16)).toEqual(Array.from(x, (v) => toHalfBits(v)));
    expect(Array.from(bf16)).toEqual(Array.from(x, (v) => toBf16Bits(v)));
    expect(Array.from(n().ggmlDequantize('F16', new Uint8Array(f16.buffer), x.length))).toEqual(Array.from(f16, fromHalfBits));
    expect(Array.from(n().ggmlDequantize('BF16', new Uint8Array(bf16.buffer), x.length))).toEqual(Array.from(bf16, fromBf16Bits));
  });

  const sizes: Record<string, [number, number]> = {
    Q4_0: [32, 18], Q4_1: [32, 20], Q5_0: [32, 22], Q5_1: [32, 24], Q8_0: [32, 34], Q4_K: [256, 144], Q5_K: [256, 176],
    Q6_K: [256, 210],
  };
  for (const [type, [elems, bytes]] of Object.entries(sizes)) {
    it(`${type}: random blocks decode as the layout specifies`, () => {
      const blocks = 5;
      const raw = new Uint8Array(blocks * bytes);
      let s = 12345;
      for (let i = 0; i < raw.length; i++) { s = (s * 1103515245 + 12345) >>> 0; raw[i] = s >>> 24; }
      // keep the f16 scales finite and modest
      const dv = new DataView(raw.buffer);
      for (let b = 0; b < blocks; b++) {
        const scaleOffsets = type === 'Q6_K' ? [208] : type.endsWith('_1') || type.endsWith('_K') ? [0, 2] : [0];
        for (const o of scaleOffsets) dv.setUint16(b * bytes + o, toHalfBits((b + 1) * 0.01 * (o ? -1 : 1)), true);
      }
      const got = n().ggmlDequantize(type, raw, blocks * elems);
      const want: number[] = [];
      for (let b = 0; b < blocks; b++) want.push(...decodeReference(type, raw.subarray(b * bytes, (b + 1) * bytes)));
      for (let i = 0; i < want.length; i++) expect(got[i], `${type} element ${i}`).toBeCloseTo(want[i]!, 5);
    });
  }

  it('unsupported conversions and ragged lengths are refused with a code', () => {
    expect(() => n().ggmlQuantize('Q4_K', new Float32Array(256))).toThrow(expect.objectContaining({ code: 'E_UNSUPPORTED' }));
    expect(() => n().ggmlQuantize('Q8_0', new Float32Array(33))).toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
    expect(() => n().ggmlDequantize('IQ2_XXS', new Uint8Array(66), 256)).toThrow(expect.objectContaining({ code: 'E_UNSUPPORTED' }));
    expect(() => n().ggmlDequantize('Q9_9', new Uint8Array(1), 1)).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
  });
});

// ---- hostile GGUF files --------------------------------------------------------------------------
class Builder {
  private parts: number[] = [];
  u32(v: number) { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, v, true); this.parts.push(...b); return this; }
  u64(v: bigint) { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, v, true); this.parts.push(...b); return this; }
  u8(v: number) { this.parts.push(v); return this; }
  str(s: string, len?: bigint) { const e = new TextEncoder().encode(s); this.u64(len ?? BigInt(e.length)); this.parts.push(...e); return this; }
  pad(to: number) { while (this.parts.length % to) this.parts.push(0); return this; }
  zeros(k: number) { for (let i = 0; i < k; i++) this.parts.push(0); return this; }
  bytes() { return new Uint8Array(this.parts); }
}
const head = (tensors: bigint, kvs: bigint) => new Builder().u32(0x46554747).u32(3).u64(tensors).u64(kvs);
/** one F32 tensor info */
const tinfo = (b: Builder, name: string, dims: bigint[], type = 0, offset = 0n) => {
  b.str(name).u32(dims.length);
  for (const d of dims) b.u64(d);
  return b.u32(type).u64(offset);
};

describe('hostile GGUF files', () => {
  const cases: [string, Uint8Array, RegExp, string?][] = [
    ['empty', new Uint8Array(0), /truncated/],
    ['bad magic', new Builder().u32(0x46554746).u32(3).u64(0n).u64(0n).bytes(), /bad magic/],
    ['version 1', new Builder().u32(0x46554747).u32(1).u64(0n).u64(0n).bytes(), /version 1/, 'E_UNSUPPORTED'],
    ['version 99', new Builder().u32(0x46554747).u32(99).u64(0n).u64(0n).bytes(), /unknown GGUF version/],
    ['2^63 metadata entries', head(0n, 1n << 63n).bytes(), /cannot fit/],
    ['2^60 tensors', head(1n << 60n, 0n).bytes(), /cannot fit/],
    ['key length 2^64-1', head(0n, 1n).str('a', (1n << 64n) - 1n).zeros(32).bytes(), /truncated/],
    ['string value past the end', head(0n, 1n).str('k').u32(8).str('abc', 1000n).bytes(), /truncated/],
    ['unknown value type', head(0n, 1n).str('k').u32(13).bytes(), /unknown value type/],
    ['array of 2^62 u32', head(0n, 1n).str('k').u32(9).u32(4).u64(1n << 62n).bytes(), /cannot fit/],
    ['array count × size overflows', head(0n, 1n).str('k').u32(9).u32(10).u64((1n << 61n) + 1n).bytes(), /cannot fit/],
    ['array of 2^40 strings', head(0n, 1n).str('k').u32(9).u32(8).u64(1n << 40n).bytes(), /cannot fit/],
    ['arrays nested 3 deep', head(0n, 1n).str('k').u32(9).u32(9).u64(1n).u32(9).u64(1n).u32(9).u64(1n).bytes(), /nested/],
    ['bool value 2', head(0n, 1n).str('k').u32(7).u8(2).bytes(), /neither 0 nor 1/],
    ['duplicate key', head(0n, 2n).str('k').u32(4).u32(1).str('k').u32(4).u32(2).bytes(), /duplicate metadata key/],
    ['alignment 3', head(0n, 1n).str('general.alignment').u32(4).u32(3).bytes(), /power-of-two/],
    ['alignment of the wrong type', head(0n, 1n).str('general.alignment').u32(10).u64(32n).bytes(), /power-of-two/],
    ['5 dimensions', tinfo(head(1n, 0n), 't', [1n, 1n, 1n, 1n, 1n]).pad(32).zeros(32).bytes(), /at most 4/],
    ['dims product overflow', tinfo(head(1n, 0n), 't', [1n << 32n, 1n << 32n]).pad(32).bytes(), /overflow/],
    ['dim beyond INT64_MAX', tinfo(head(1n, 0n), 't', [1n << 63n]).pad(32).bytes(), /overflow/],
    ['byte size overflow', tinfo(head(1n, 0n), 't', [1n << 31n, 1n << 31n], 28).pad(32).bytes(), /overflow|past the end/],
    ['unknown tensor type', tinfo(head(1n, 0n), 't', [4n], 4).pad(32).zeros(32).bytes(), /unknown GGML type 4/],
    ['row not a whole number of blocks', tinfo(head(1n, 0n), 't', [33n], 8).pad(32).zeros(64).bytes(), /block/],
    ['misaligned offset', tinfo(head(1n, 0n), 't', [4n], 0, 4n).pad(32).zeros(64).bytes(), /alignment/],
    ['data past the end', tinfo(head(1n, 0n), 't', [1024n]).pad(32).zeros(64).bytes(), /past the end/],
    ['offset near 2^64', tinfo(head(1n, 0n), 't', [8n], 0, (1n << 64n) - 32n).pad(32).zeros(64).bytes(), /past the end/],
    ['overlapping tensors', tinfo(tinfo(head(2n, 0n), 'a', [16n]), 'b', [8n], 0, 32n).pad(32).zeros(64).bytes(), /overlap/],
    ['duplicate tensor names', tinfo(tinfo(head(2n, 0n), 'a', [8n]), 'a', [8n], 0, 32n).pad(32).zeros(64).bytes(), /duplicate tensor/],
    ['truncated tensor info', head(1n, 0n).str('t').u32(2).u64(4n).bytes(), /truncated/],
  ];
  for (const [name, bytes, message, code] of cases) {
    it(`${name} → ${code ?? 'E_FORMAT'}`, async () => {
      const p = join(dir, `bad-${name.replace(/\W+/g, '_')}.gguf`);
      writeFileSync(p, bytes);
      await expect(n().readGguf(p)).rejects.toMatchObject({ code: code ?? 'E_FORMAT', message: expect.stringMatching(message) });
    });
  }

  it('every prefix of a valid file is rejected cleanly, never crashes', async () => {
    const good = readFileSync(join(dir, 'ours.gguf'));
    for (let len = 0; len < good.length; len += Math.max(1, Math.floor(len / 7))) {
      const p = join(dir, 'prefix.gguf');
      writeFileSync(p, good.subarray(0, len));
      await expect(n().readGguf(p)).rejects.toMatchObject({ code: 'E_FORMAT' });
    }
  });
});
