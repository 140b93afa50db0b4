/**
 * safetensors: our writer and reader against an independent implementation (Python's json +
 * numpy reading and writing the format by hand), and hostile files that must give E_FORMAT.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { addon } from '../support/addons.js';
import { python, pythonHas } from '../support/python.js';
import { fromBf16Bits, fromHalfBits, randomNormal, toBf16Bits, toHalfBits } from '../support/reference.js';

const dir = mkdtempSync(join(tmpdir(), 'medllava-st-'));
const n = () => addon();

beforeAll(() => {
  expect(pythonHas('numpy'), 'Debian python3-numpy is needed (the CI script installs it)').toBe(true);
});

describe('safetensors round trips', () => {
  const f32 = randomNormal(6 * 5, 1);
  const f16 = Uint16Array.from(randomNormal(4 * 3, 2), (x) => toHalfBits(x));
  const bf16 = Uint16Array.from(randomNormal(7, 3), (x) => toBf16Bits(x));
  const i64 = BigInt64Array.from([1n, -2n, 3n, 1n << 40n]);
  const tensors = [
    { name: 'model.mm_projector.0.weight', dtype: 'F32', shape: [6, 5], data: f32 },
    { name: 'model.layers.0.self_attn.q_proj.weight', dtype: 'F16', shape: [4, 3], data: f16 },
    { name: 'bias', dtype: 'BF16', shape: [7], data: bf16 },
    { name: 'position_ids', dtype: 'I64', shape: [1, 4], data: i64 },
    { name: 'empty', dtype: 'F32', shape: [0, 3], data: new Float32Array(0) },
    { name: 'scalar', dtype: 'F32', shape: [], data: new Float32Array([42]) },
  ];
  const path = join(dir, 'ours.safetensors');

  it('what we write, Python (json + numpy) reads exactly', async () => {
    await n().writeSafetensors(path, tensors, { format: 'pt', note: 'ünïcode "quoted"\n' });
    const out = JSON.parse(python(`
import json, struct, sys, numpy as np
raw = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
h = json.loads(raw[8:8 + n])
data = raw[8 + n:]
dt = {'F32': np.float32, 'F16': np.float16, 'I64': np.int64}
res = {'meta': h.pop('__metadata__'), 'aligned': (8 + n) % 8 == 0, 'tensors': {}}
for k, v in h.items():
    b, e = v['data_offsets']
    if v['dtype'] == 'BF16':
        vals = (np.frombuffer(data[b:e], np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        vals = np.frombuffer(data[b:e], dt[v['dtype']])
    res['tensors'][k] = {'shape': v['shape'], 'values': [float(x) if v['dtype'] != 'I64' else str(int(x)) for x in vals.reshape(-1)]}
print(json.dumps(res))
`, [path])) as { meta: Record<string, string>; aligned: boolean; tensors: Record<string, { shape: number[]; values: (number | string)[] }> };
    expect(out.meta).toEqual({ format: 'pt', note: 'ünïcode "quoted"\n' });
    expect(out.aligned).toBe(true);
    expect(out.tensors['model.mm_projector.0.weight']!.values).toEqual(Array.from(f32));
    expect(out.tensors['position_ids']!.values).toEqual(Array.from(i64, String));
    expect(out.tensors['empty']!.shape).toEqual([0, 3]);
    expect(out.tensors['scalar']!.values).toEqual([42]);
    // F16 / BF16 by value (their bits, special values and torch's reading: the test below)
    expect(out.tensors['model.layers.0.self_attn.q_proj.weight']).toEqual({ shape: [4, 3], values: Array.from(f16, fromHalfBits) });
    expect(out.tensors['bias']).toEqual({ shape: [7], values: Array.from(bf16, fromBf16Bits) });
  });

  it('F16 and BF16 we write: dtype, shape and values as numpy (F16) and torch (BF16) read them, bit for bit', async () => {
    // special values as well: ±0, a subnormal, the largest finite, ±inf, NaN
    const f16s = Uint16Array.from([0x0000, 0x8000, 0x0001, 0x03ff, 0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x7e00, 0x3c00]);
    const bf16s = Uint16Array.from([0x0000, 0x8000, 0x0001, 0x007f, 0x7f7f, 0xff7f, 0x7f80, 0xff80, 0x7fc0, 0x3f80]);
    const p = join(dir, 'half.safetensors');
    await n().writeSafetensors(p, [
      { name: 'f16', dtype: 'F16', shape: [4, 3], data: f16 },
      { name: 'bf16', dtype: 'BF16', shape: [7], data: bf16 },
      { name: 'f16s', dtype: 'F16', shape: [2, 5], data: f16s },
      { name: 'bf16s', dtype: 'BF16', shape: [10], data: bf16s },
    ], {});
    const out = JSON.parse(python(`
import json, struct, sys, numpy as np, torch
raw = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
h = json.loads(raw[8:8 + n]); h.pop('__metadata__', None)
data = raw[8 + n:]
res = {}
for k, v in h.items():
    b, e = v['data_offsets']
    if v['dtype'] == 'F16':
        t = np.frombuffer(data[b:e], np.float16).reshape(v['shape'])
        vals, bits = t.astype(np.float64), t.view(np.uint16)
    else:  # numpy has no bfloat16: torch reads those
        t = torch.frombuffer(bytearray(data[b:e]), dtype=torch.bfloat16).reshape(v['shape'])
        vals, bits = t.double().numpy(), t.view(torch.int16).numpy().view(np.uint16)
    res[k] = {'dtype': v['dtype'], 'shape': list(vals.shape), 'bits': bits.reshape(-1).tolist(),
              'values': [repr(float(x)) for x in vals.reshape(-1)]}
print(json.dumps(res))
`, [p])) as Record<string, { dtype: string; shape: number[]; bits: number[]; values: string[] }>;
    const expected = { f16: ['F16', [4, 3], f16], bf16: ['BF16', [7], bf16], f16s: ['F16', [2, 5], f16s], bf16s: ['BF16', [10], bf16s] } as const;
    const asRepr = (v: number) => (Number.isNaN(v) ? 'nan' : v === Infinity ? 'inf' : v === -Infinity ? '-inf' : Object.is(v, -0) ? '-0.0' : v);
    const fromRepr = (v: string) => (['nan', 'inf', '-inf', '-0.0'].includes(v) ? v : Number(v));
    for (const [name, [dtype, shape, data]] of Object.entries(expected)) {
      expect(out[name], name).toMatchObject({ dtype, shape, bits: Array.from(data) });
      // the values: our decoding of the bits we wrote, against numpy's / torch's
      const ours = Array.from(n().ggmlDequantize(dtype, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), data.length), asRepr);
      expect(ours, name).toEqual(out[name]!.values.map(fromRepr));
    }
    // negative controls: the same bits read as the other 16-bit format, or one element off, do not match
    const asOther = Array.from(n().ggmlDequantize('BF16', new Uint8Array(f16.buffer, f16.byteOffset, f16.byteLength), f16.length), asRepr);
    expect(asOther).not.toEqual(out['f16']!.values.map(fromRepr));
    expect(Array.from(bf16.subarray(1))).not.toEqual(out['bf16']!.bits.slice(0, 6));
  });

  it('what Python writes by hand, we read exactly (header and bytes)', async () => {
    const theirs = join(dir, 'theirs.safetensors');
    python(`
import json, struct, sys, numpy as np
a = np.arange(12, dtype=np.float32).reshape(3, 4) / 8
b = np.array([1.5, -2.25], dtype=np.float16)
header = {'b': {'dtype': 'F16', 'shape': [2], 'data_offsets': [48, 52]},
          'a': {'dtype': 'F32', 'shape': [3, 4], 'data_offsets': [0, 48]},
          '__metadata__': {'format': 'pt'}}
h = json.dumps(header).encode()
open(sys.argv[1], 'wb').write(struct.pack('<Q', len(h)) + h + a.tobytes() + b.tobytes())
`, [theirs]);
    const h = await n().readSafetensorsHeader(theirs);
    expect(h.metadata).toEqual({ format: 'pt' });
    expect(h.tensors.map((t) => [t.name, t.dtype, t.shape, t.byteLength])).toEqual([
      ['b', 'F16', [2], 4], ['a', 'F32', [3, 4], 48]]);
    const a = new Float32Array((await n().readSafetensorsTensor(theirs, 'a')).slice().buffer);
    expect(Array.from(a)).toEqual(Array.from({ length: 12 }, (_, i) => i / 8));
    const b = await n().readSafetensorsTensor(theirs, 'b');
    expect(Array.from(new Uint16Array(b.slice().buffer))).toEqual([toHalfBits(1.5), toHalfBits(-2.25)]);
    await expect(n().readSafetensorsTensor(theirs, 'nope')).rejects.toMatchObject({ code: 'E_ARGUMENT' });
  });

  it('F16 (numpy) and BF16 (torch) that Python writes: we read the dtype, shape and every bit', async () => {
    const theirs = join(dir, 'theirs16.safetensors');
    const bits = JSON.parse(python(`
import json, struct, sys, numpy as np, torch
torch.manual_seed(3)
special = [0.0, -0.0, 6e-8, 1e-5, 65504.0, float('inf'), float('-inf'), float('nan'), 1e-40, 3e38]
x = torch.randn(3, 4, 5) * 4
tensors = {
    'h': np.asarray(x.numpy(), np.float16),
    'bf': x.bfloat16(),
    'hs': np.array(special, np.float16),
    'bfs': torch.tensor(special).bfloat16(),
}
def u16(t): return t.view(np.uint16) if isinstance(t, np.ndarray) else t.view(torch.int16).numpy().view(np.uint16)
header, blob = {}, b''
for k, t in tensors.items():
    b = u16(t).tobytes()
    header[k] = {'dtype': 'F16' if isinstance(t, np.ndarray) else 'BF16', 'shape': list(t.shape), 'data_offsets': [len(blob), len(blob) + len(b)]}
    blob += b
h = json.dumps(header).encode()
open(sys.argv[1], 'wb').write(struct.pack('<Q', len(h)) + h + blob)
# the same values in the other 16-bit format, for the negative control
other = {'h': u16(x.bfloat16()), 'bf': u16(np.asarray(x.numpy(), np.float16))}
print(json.dumps({k: {'bits': u16(t).reshape(-1).tolist(), 'other': other[k].reshape(-1).tolist() if k in other else None}
                  for k, t in tensors.items()}))
`, [theirs])) as Record<string, { bits: number[]; other: number[] | null }>;
    const h = await n().readSafetensorsHeader(theirs);
    expect(h.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual([['h', 'F16', [3, 4, 5]], ['bf', 'BF16', [3, 4, 5]],
      ['hs', 'F16', [10]], ['bfs', 'BF16', [10]]]);
    for (const name of ['h', 'bf', 'hs', 'bfs']) {
      const ours = Array.from(new Uint16Array((await n().readSafetensorsTensor(theirs, name)).slice().buffer));
      expect(ours, name).toEqual(bits[name]!.bits);
      // negative control: the same values stored in the other 16-bit format differ
      if (bits[name]!.other) expect(ours, name).not.toEqual(bits[name]!.other);
    }
    await expect(n().readSafetensorsTensor(theirs, 'nope')).rejects.toMatchObject({ code: 'E_ARGUMENT' });
  });

  it('writing is atomic: a rejected write leaves the existing file as it was', async () => {
    const p = join(dir, 'keep.safetensors');
    await n().writeSafetensors(p, [tensors[0]!], {});
    const before = readFileSync(p);
    await expect(n().writeSafetensors(p, [{ name: 'x', dtype: 'F32', shape: [3], data: new Float32Array(2) }], {}))
      .rejects.toMatchObject({ code: 'E_SHAPE' });
    expect(readFileSync(p).equals(before)).toBe(true);
    await expect(n().writeSafetensors(join(dir, 'no/such/dir/x.safetensors'), [tensors[0]!], {}))
      .rejects.toMatchObject({ code: 'E_IO' });
  });
});

/** A safetensors image from a header object (serialised as given) and a data section. */
function craft(header: unknown, data: Uint8Array, opts: { lengthOverride?: bigint; raw?: string } = {}): Uint8Array {
  const h = new TextEncoder().encode(opts.raw ?? JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, opts.lengthOverride ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

describe('hostile safetensors files', () => {
  const t = (dtype: string, shape: number[], offsets: [number, number]) => ({ dtype, shape, data_offsets: offsets });
  const cases: [string, Uint8Array, RegExp][] = [
    ['empty file', new Uint8Array(0), /truncated/],
    ['7 bytes', new Uint8Array(7), /truncated/],
    ['header length past the end', craft({}, new Uint8Array(0), { lengthOverride: 1000n }), /past the end/],
    ['header length 2^64-1', craft({}, new Uint8Array(0), { lengthOverride: (1n << 64n) - 1n }), /100 MB/],
    ['header length over 100 MB', craft({}, new Uint8Array(0), { lengthOverride: 100_000_001n }), /100 MB/],
    ['not JSON', craft(null, new Uint8Array(0), { raw: '{"a": ' }), /invalid JSON/],
    ['JSON array header', craft(null, new Uint8Array(0), { raw: '[1,2]' }), /not a JSON object/],
    ['deep nesting', craft(null, new Uint8Array(0), { raw: '{"a":' + '['.repeat(200) + ']'.repeat(200) + '}' }), /nesting/],
    ['unknown dtype', craft({ a: t('F31', [1], [0, 4]) }, new Uint8Array(4)), /unknown dtype/],
    ['negative dim', craft({ a: t('F32', [-1], [0, 4]) }, new Uint8Array(4)), /non-negative integer/],
    ['fractional dim', craft({ a: t('F32', [1.5], [0, 4]) }, new Uint8Array(4)), /non-negative integer/],
    ['shape product overflow', craft({ a: t('F32', [2 ** 32, 2 ** 32, 16], [0, 4]) }, new Uint8Array(4)), /overflow/],
    ['byte size overflow', craft({ a: t('F64', [2 ** 31, 2 ** 31], [0, 8]) }, new Uint8Array(8)), /overflow/],
    ['bytes ≠ dtype × shape', craft({ a: t('F32', [2], [0, 4]) }, new Uint8Array(4)), /needs 8/],
    ['end past the data', craft({ a: t('F32', [2], [0, 8]) }, new Uint8Array(4)), /past the data section/],
    ['begin > end', craft({ a: t('F32', [0], [4, 0]) }, new Uint8Array(4)), /begin > end/],
    ['huge offsets', craft(null, new Uint8Array(4), { raw: '{"a":{"dtype":"U8","shape":[4],"data_offsets":[18446744073709551615,3]}}' }), /begin > end|past the data/],
    ['overlapping tensors', craft({ a: t('F32', [2], [0, 8]), b: t('F32', [1], [4, 8]) }, new Uint8Array(8)), /overlaps/],
    ['gap between tensors', craft({ a: t('F32', [1], [0, 4]), b: t('F32', [1], [8, 12]) }, new Uint8Array(12)), /gap/],
    ['trailing bytes', craft({ a: t('F32', [1], [0, 4]) }, new Uint8Array(8)), /belong to no tensor/],
    ['duplicate names', craft(null, new Uint8Array(8), { raw: '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}' }), /duplicate/],
    ['unknown field', craft({ a: { ...t('F32', [1], [0, 4]), extra: 1 } }, new Uint8Array(4)), /unknown field/],
    ['missing offsets', craft({ a: { dtype: 'F32', shape: [1] } }, new Uint8Array(4)), /data_offsets/],
    ['metadata not strings', craft({ __metadata__: { a: 1 } }, new Uint8Array(0)), /not a string/],
    ['control character in a string', craft(null, new Uint8Array(0), { raw: '{"a\u0001":1}' }), /control character/],
    ['lone surrogate escape', craft(null, new Uint8Array(0), { raw: '{"\\ud800":{}}' }), /surrogate/],
  ];
  for (const [name, bytes, message] of cases) {
    it(`${name} → E_FORMAT`, async () => {
      const p = join(dir, `bad-${name.replace(/\W+/g, '_')}.safetensors`);
      writeFileSync(p, bytes);
      await expect(n().readSafetensorsHeader(p)).rejects.toMatchObject({ code: 'E_FORMAT', message: expect.stringMatching(message) });
    });
  }

  it('a missing file → E_IO naming it', async () => {
    await expect(n().readSafetensorsHeader(join(dir, 'missing.safetensors')))
      .rejects.toMatchObject({ code: 'E_IO', message: expect.stringMatching(/missing\.safetensors.*No such file/) });
  });

  it('a directory → E_IO', async () => {
    await expect(n().readSafetensorsHeader(dir)).rejects.toMatchObject({ code: 'E_IO' });
  });
});
