/**
 * PyTorch zip checkpoints: our restricted reader against files torch.save writes (Debian's
 * python3-torch), our writer against torch.load, and pickles that must be refused.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { writeTorchCheckpoint } from '../../lib/fixtures/torch-writer.js';
import { addon } from '../support/addons.js';
import { python, pythonHas } from '../support/python.js';

const dir = mkdtempSync(join(tmpdir(), 'medllava-torch-'));
const n = () => addon();

beforeAll(() => {
  expect(pythonHas('torch'), 'Debian python3-torch is needed (the CI script installs it)').toBe(true);
});

describe('reading what torch.save writes', () => {
  it('a state dict of every common dtype, views into shared storages, nested dicts, parameters', async () => {
    const path = join(dir, 'saved.bin');
    python(`
import torch, collections, sys
torch.manual_seed(0)
base = torch.arange(20, dtype=torch.int64)
sd = collections.OrderedDict()
sd['layers.0.weight'] = torch.randn(3, 4)
sd['half'] = torch.randn(5).half()
sd['bf16'] = torch.randn(2, 3).bfloat16()
sd['double'] = torch.randn(2).double()
sd['view_a'] = base[2:6]
sd['view_b'] = base[10:13]
sd['param'] = torch.nn.Parameter(torch.ones(2, 2))
sd['scalar'] = torch.tensor(7.0)
torch.save({'model': sd, 'epoch': 4, 'name': 'x'}, sys.argv[1])
`, [path]);
    const { tensors } = await n().readTorchCheckpoint(path);
    const by = new Map(tensors.map((t) => [t.name, t]));
    expect([...by.keys()].sort()).toEqual(['model.bf16', 'model.double', 'model.half', 'model.layers.0.weight', 'model.param',
      'model.scalar', 'model.view_a', 'model.view_b']);
    expect(by.get('model.layers.0.weight')).toMatchObject({ dtype: 'F32', shape: [3, 4], byteLength: 48 });
    expect(by.get('model.scalar')).toMatchObject({ dtype: 'F32', shape: [], byteLength: 4 });
    const va = new BigInt64Array((await n().readTorchTensor(path, 'model.view_a')).slice().buffer);
    const vb = new BigInt64Array((await n().readTorchTensor(path, 'model.view_b')).slice().buffer);
    expect(Array.from(va)).toEqual([2n, 3n, 4n, 5n]);
    expect(Array.from(vb)).toEqual([10n, 11n, 12n]);
    const values = JSON.parse(python(`
import torch, sys, json
sd = torch.load(sys.argv[1])['model']
print(json.dumps(sd['layers.0.weight'].flatten().tolist()))
`, [path])) as number[];
    const ours = new Float32Array((await n().readTorchTensor(path, 'model.layers.0.weight')).slice().buffer);
    expect(Array.from(ours)).toEqual(values.map(Math.fround));
  });

  it('F16 / BF16 / F64 (and F32) by value: dtype, shape and every bit as torch stores them', async () => {
    const path = join(dir, 'floats.bin');
    // special values too: ±0, subnormals, the largest finite, ±inf, NaN; one 16-bit tensor is a
    // view at an odd element offset into a shared storage (2-byte elements: offset 7 = 14 bytes)
    const theirs = JSON.parse(python(`
import torch, sys, json
torch.manual_seed(1)
special = torch.tensor([0.0, -0.0, 1.0, -2.5, 6e-8, -5.9e-8, 1e-5, 65504.0, float('inf'), float('-inf'), float('nan'), 1e-40, 3e38])
x = torch.randn(3, 5, 7) * 10
sd = {
    'half': x.half(), 'bf16': x.bfloat16(), 'double': x.double(), 'float': x.float(),
    'half_special': special.half(), 'bf16_special': special.bfloat16(), 'double_special': special.double(),
    'half_view': torch.randn(40).half()[7:19].view(3, 4),
}
torch.save(sd, sys.argv[1])
bits = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float64: torch.int64, torch.float32: torch.int32}
def raw(t): return t.contiguous().view(bits[t.dtype]).numpy().tobytes().hex()
out = {k: {'dtype': str(v.dtype), 'shape': list(v.shape), 'hex': raw(v)} for k, v in sd.items()}
# the same values in the other 16-bit format, for the negative controls below
out['half_as_bf16'] = raw(x.bfloat16()); out['view_base'] = raw(sd['half_view']._base)
print(json.dumps(out))
`, [path])) as Record<string, { dtype: string; shape: number[]; hex: string }> & { half_as_bf16: string; view_base: string };
    const { tensors } = await n().readTorchCheckpoint(path);
    const by = new Map(tensors.map((t) => [t.name, t]));
    const dtypes: Record<string, string> = { 'torch.float16': 'F16', 'torch.bfloat16': 'BF16', 'torch.float64': 'F64', 'torch.float32': 'F32' };
    const names = ['half', 'bf16', 'double', 'float', 'half_special', 'bf16_special', 'double_special', 'half_view'];
    expect([...by.keys()].sort()).toEqual([...names].sort());
    const hexOf = async (name: string) => Buffer.from(await n().readTorchTensor(path, name)).toString('hex');
    for (const name of names) {
      const t = theirs[name]!;
      expect(by.get(name), name).toMatchObject({ dtype: dtypes[t.dtype], shape: t.shape, byteLength: t.hex.length / 2 });
      expect(await hexOf(name), name).toBe(t.hex); // bit-exact, NaN payload and -0 included
    }
    // negative controls: the comparison tells the two 16-bit formats apart, and a view read from
    // one element too early or too late
    expect(await hexOf('half')).not.toBe(theirs.half_as_bf16);
    expect(await hexOf('bf16')).not.toBe(theirs['half']!.hex);
    const view = await hexOf('half_view');
    expect(theirs.view_base.slice(7 * 4, 19 * 4)).toBe(view);
    expect(theirs.view_base.slice(6 * 4, 18 * 4)).not.toBe(view);
    expect(theirs.view_base.slice(8 * 4, 20 * 4)).not.toBe(view);
    // and decoded: our F16 / BF16 → f32 conversion gives torch's values (torch.float() of the same bits)
    const decoded = JSON.parse(python(`
import torch, sys, json
sd = torch.load(sys.argv[1])
print(json.dumps({k: [repr(v) for v in sd[k].float().flatten().tolist()] for k in ['half', 'bf16', 'half_special', 'bf16_special']}))
`, [path])) as Record<string, string[]>;
    for (const [name, dtype] of [['half', 'F16'], ['bf16', 'BF16'], ['half_special', 'F16'], ['bf16_special', 'BF16']] as const) {
      const raw = await n().readTorchTensor(path, name);
      const ours = Array.from(n().ggmlDequantize(dtype, raw, raw.length / 2), (v) => (Number.isNaN(v) ? 'nan' : Object.is(v, -0) ? '-0.0' : v));
      expect(ours, name).toEqual(decoded[name]!.map((v) => (v === 'nan' ? 'nan' : v === '-0.0' ? '-0.0' : v === 'inf' ? Infinity : v === '-inf' ? -Infinity : Number(v))));
    }
  });

  it('a non-contiguous tensor is refused with E_UNSUPPORTED', async () => {
    const path = join(dir, 'transposed.bin');
    python(`import torch, sys; torch.save({'t': torch.randn(3, 4).t()}, sys.argv[1])`, [path]);
    await expect(n().readTorchCheckpoint(path)).rejects.toMatchObject({ code: 'E_UNSUPPORTED', message: expect.stringMatching(/contiguous/) });
  });

  it('a pickle with any other global is refused naming it; nothing runs', async () => {
    const path = join(dir, 'evil.bin');
    const marker = join(dir, 'pwned');
    python(`
import torch, sys, os
class Evil:
    def __reduce__(self):
        return (os.system, ('touch ' + sys.argv[2],))
torch.save({'w': torch.ones(1), 'x': Evil()}, sys.argv[1])
`, [path, marker]);
    await expect(n().readTorchCheckpoint(path)).rejects.toMatchObject({
      code: 'E_UNSUPPORTED', message: expect.stringMatching(/'(posix|os)\.system', which is not on the allow-list/),
    });
    expect(() => readFileSync(marker)).toThrow();
  });

  it('legacy (non-zip) torch.save files → E_UNSUPPORTED; garbage → E_FORMAT', async () => {
    const legacy = join(dir, 'legacy.bin');
    python(`import torch, sys; torch.save({'w': torch.ones(2)}, sys.argv[1], _use_new_zipfile_serialization=False)`, [legacy]);
    await expect(n().readTorchCheckpoint(legacy)).rejects.toMatchObject({ code: 'E_UNSUPPORTED', message: expect.stringMatching(/legacy/) });
    const junk = join(dir, 'junk.bin');
    writeFileSync(junk, 'PK\u0003\u0004 not really a zip');
    await expect(n().readTorchCheckpoint(junk)).rejects.toMatchObject({ code: 'E_FORMAT' });
  });
});

describe('what we write, torch.load reads', () => {
  it('an OrderedDict of F32 / F16 / BF16 / I64 tensors, values exact', async () => {
    const path = join(dir, 'ours.bin');
    const f32 = Float32Array.from({ length: 12 }, (_, i) => i / 4 - 1);
    await writeTorchCheckpoint(path, [
      { name: 'model.mm_projector.weight', dtype: 'F32', shape: [3, 4], data: f32 },
      { name: 'h', dtype: 'F16', shape: [2], data: new Uint16Array([0x3c00, 0xc000]) },
      { name: 'b', dtype: 'BF16', shape: [1, 2], data: new Uint16Array([0x3f80, 0x4040]) },
      { name: 'ids', dtype: 'I64', shape: [3], data: new BigInt64Array([1n, -2n, 3n]) },
      { name: 'scalar', dtype: 'F32', shape: [], data: new Float32Array([5]) },
    ]);
    const out = JSON.parse(python(`
import torch, sys, json
sd = torch.load(sys.argv[1])
print(json.dumps({k: {'dtype': str(v.dtype), 'shape': list(v.shape), 'values': v.float().flatten().tolist()} for k, v in sd.items()}))
`, [path])) as Record<string, { dtype: string; shape: number[]; values: number[] }>;
    expect(Object.keys(out)).toEqual(['model.mm_projector.weight', 'h', 'b', 'ids', 'scalar']);
    expect(out['model.mm_projector.weight']).toEqual({ dtype: 'torch.float32', shape: [3, 4], values: Array.from(f32) });
    expect(out['h']).toEqual({ dtype: 'torch.float16', shape: [2], values: [1, -2] });
    expect(out['b']).toEqual({ dtype: 'torch.bfloat16', shape: [1, 2], values: [1, 3] });
    expect(out['ids']).toEqual({ dtype: 'torch.int64', shape: [3], values: [1, -2, 3] });
    expect(out['scalar']).toEqual({ dtype: 'torch.float32', shape: [], values: [5] });
    // and our reader agrees
    const { tensors } = await n().readTorchCheckpoint(path);
    expect(tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual([['model.mm_projector.weight', 'F32', [3, 4]],
      ['h', 'F16', [2]], ['b', 'BF16', [1, 2]], ['ids', 'I64', [3]], ['scalar', 'F32', []]]);
  });

  it("a training checkpoint {'epoch', 'state_dict'} (open_clip's trainer) — torch.load and our reader agree on the names", async () => {
    const path = join(dir, 'train.pt');
    await writeTorchCheckpoint(path, [
      { name: 'module.visual.trunk.cls_token', dtype: 'F32', shape: [1, 1, 2], data: new Float32Array([1, 2]) },
    ], { trainingEpoch: 7 });
    const out = JSON.parse(python(`
import torch, sys, json
ck = torch.load(sys.argv[1])
print(json.dumps({'epoch': ck['epoch'], 'keys': list(ck['state_dict'].keys()), 'v': ck['state_dict']['module.visual.trunk.cls_token'].flatten().tolist()}))
`, [path])) as { epoch: number; keys: string[]; v: number[] };
    expect(out).toEqual({ epoch: 7, keys: ['module.visual.trunk.cls_token'], v: [1, 2] });
    const { tensors } = await n().readTorchCheckpoint(path);
    expect(tensors.map((t) => t.name)).toEqual(['state_dict.module.visual.trunk.cls_token']);
  });
});
