/**
 * An independent LoRA reference: python3 torch reads the base safetensors and the PEFT adapter and
 * merges W + scale·B@A in float64. Also redraws a fixture's adapter so that every (layer, module)
 * pair has its own A and B (the generated fixture seeds q/k/v/o of a layer alike, so a merge that
 * mixed those modules up would go unnoticed).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { python } from './python.js';

/** Rewrites <dir>/adapter_model.bin with torch.save: fresh, distinct A (r × in) and B (out × r) for
 * every tensor the adapter already holds, same names, shapes and dtype (f32). */
export function redrawAdapter(dir: string, seed: number): void {
  python(`
import sys, torch
path = sys.argv[1] + '/adapter_model.bin'
ad = torch.load(path)
g = torch.Generator().manual_seed(int(sys.argv[2]))
out = {}
for k in sorted(ad):
    t = ad[k]
    # A like PEFT's kaiming-uniform init, B nonzero (as after training) so the delta matters
    s = 1 / t.shape[1] ** 0.5 if k.endswith('lora_A.weight') else 0.05
    out[k] = ((torch.rand(t.shape, generator=g, dtype=torch.float64) * 2 - 1) * s).to(torch.float32)
torch.save(out, path)
vals = list(out.values())
assert all(not torch.equal(a, b) for i, a in enumerate(vals) for b in vals[i + 1:] if a.shape == b.shape)
`, [dir, String(seed)]);
}

/**
 * Variants of the merge: 'peft' is PEFT's W + (alpha/r)·B@A; the rest are wrong on purpose, for
 * negative controls: 'rslora' scales by alpha/√r, 'swapped' takes B and A of the next adapted module
 * of the same shape (another module or another layer).
 */
export type MergeVariant = 'peft' | 'rslora' | 'swapped';

/** The merged float64 weight of every adapted linear (HF names), from python3 torch. */
export function torchLoraMerge(baseSafetensors: string, adapterDir: string, variant: MergeVariant, tmp: string):
  Map<string, { shape: number[]; data: Float64Array }> {
  const bin = join(tmp, `lora-${variant}.f64`);
  const index = JSON.parse(python(`
import json, struct, sys, numpy as np, torch
base, adir, variant, out = sys.argv[1:5]
raw = open(base, 'rb').read(); n = struct.unpack('<Q', raw[:8])[0]; h = json.loads(raw[8:8 + n])
def st(name):
    b, e = h[name]['data_offsets']; buf = raw[8 + n + b:8 + n + e]; dt = h[name]['dtype']
    if dt == 'BF16': v = torch.from_numpy(np.frombuffer(buf, np.int16).copy()).view(torch.bfloat16)
    elif dt == 'F16': v = torch.from_numpy(np.frombuffer(buf, np.float16).copy())
    elif dt == 'F32': v = torch.from_numpy(np.frombuffer(buf, np.float32).copy())
    else: raise SystemExit('unexpected dtype ' + dt)
    return v.double().reshape(h[name]['shape'])
cfg = json.load(open(adir + '/adapter_config.json'))
ad = torch.load(adir + '/adapter_model.bin')
keys = sorted(k[:-len('.lora_A.weight')] for k in ad if k.endswith('.lora_A.weight'))
scale = cfg['lora_alpha'] / (cfg['r'] ** 0.5 if variant == 'rslora' else cfg['r'])
index = []
with open(out, 'wb') as f:
    for i, k in enumerate(keys):
        src = k
        if variant == 'swapped':
            same = [j for j in keys if ad[j + '.lora_A.weight'].shape == ad[k + '.lora_A.weight'].shape
                    and ad[j + '.lora_B.weight'].shape == ad[k + '.lora_B.weight'].shape]
            src = same[(same.index(k) + 1) % len(same)]
            assert src != k
        name = k[len('base_model.model.'):] + '.weight'
        A = ad[src + '.lora_A.weight'].double(); B = ad[src + '.lora_B.weight'].double()
        w = st(name) + scale * (B @ A)
        f.write(w.contiguous().numpy().astype('<f8').tobytes())
        index.append({'name': name, 'shape': list(w.shape)})
print(json.dumps(index))
`, [baseSafetensors, adapterDir, variant, bin])) as { name: string; shape: number[] }[];
  const bytes = readFileSync(bin);
  const all = new Float64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8);
  const out = new Map<string, { shape: number[]; data: Float64Array }>();
  let at = 0;
  for (const t of index) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    out.set(t.name, { shape: t.shape, data: all.slice(at, at + n) });
    at += n;
  }
  if (at !== all.length) throw new Error('torchLoraMerge: the index does not cover the output');
  return out;
}
