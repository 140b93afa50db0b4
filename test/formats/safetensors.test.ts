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
import { randomNormal, toBf16Bits, toHalfBits } from '../support/reference.js';

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
    expect(out.tensors['bias']!.values.length).toBe(7);
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
