/**
 * The native loaders' configs: an unknown name is refused naming it (it once became a default —
 * an unknown activation ran as quick_gelu, an unknown projector as linear), and a number that is
 * not an integer where one is needed is refused instead of being truncated.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { loadModelSpec, type ModelSpec } from '../../lib/index.js';
import { llmLoadArgs } from '../../lib/model/llm.js';
import { visionLoadArgs } from '../../lib/model/vision.js';
import { native } from '../../lib/native.js';

let spec: ModelSpec;
beforeAll(async () => {
  const f = (await generateFixture({ layout: 'llava-med-v1.5', out: join(mkdtempSync(join(tmpdir(), 'medllava-cfg-')), 'v15') })) as
    { dir: string; tower: string };
  spec = await loadModelSpec(f.dir, { visionTower: f.tower });
}, 120_000);

async function failure(f: () => Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await f();
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error('did not fail');
}

describe('NativeVision.load config', () => {
  const load = (patch: Record<string, unknown>) => {
    const { config, tensors } = visionLoadArgs(spec);
    return native().NativeVision.load({ ...config, ...patch } as typeof config, tensors);
  };

  it('loads as given (the control)', async () => {
    (await load({})).dispose();
  });

  for (const [key, value] of [['activation', 'relu'], ['activation', 'GELU'], ['projector', 'mlp3x_gelu'], ['selectFeature', 'cls']] as const) {
    it(`${key} '${value}' is E_UNSUPPORTED naming the value and what is supported`, async () => {
      const e = await failure(() => load({ [key]: value }));
      expect(e.code, e.message).toBe('E_UNSUPPORTED');
      expect(e.message).toContain(`'${value}'`);
      expect(e.message).toMatch(/supported: /);
    });
  }

  for (const [key, value] of [['imageSize', 42.5], ['patchSize', 14.2], ['layers', 2.999], ['heads', Number.NaN], ['selectLayer', -1.5],
    ['outDim', 1e30], ['hidden', -32]] as const) {
    it(`${key} ${value} is E_ARGUMENT (never truncated to an integer)`, async () => {
      const e = await failure(() => load({ [key]: value }));
      expect(e.code, e.message).toBe('E_ARGUMENT');
      expect(e.message).toContain(`config.${key}`);
    });
  }

  it('a missing activation is E_ARGUMENT, not a default', async () => {
    expect((await failure(() => load({ activation: undefined }))).code).toBe('E_ARGUMENT');
  });
});

describe('NativeLlm.load config', () => {
  const load = (patch: Record<string, unknown>) => {
    const { config, tensors } = llmLoadArgs(spec);
    return native().NativeLlm.load({ ...config, ...patch } as typeof config, tensors);
  };

  it('loads as given (the control)', async () => {
    (await load({})).dispose();
  });

  for (const [key, value] of [['hidden', 64.5], ['layers', 1.5], ['heads', 4.000001], ['kvHeads', Number.POSITIVE_INFINITY],
    ['vocab', 0], ['contextLength', 512.25]] as const) {
    it(`${key} ${value} is E_ARGUMENT (never truncated to an integer)`, async () => {
      const e = await failure(() => load({ [key]: value }));
      expect(e.code, e.message).toBe('E_ARGUMENT');
      expect(e.message).toContain(`config.${key}`);
    });
  }

  it("ropeMode 'neox' is E_UNSUPPORTED naming it", async () => {
    const e = await failure(() => load({ ropeMode: 'neox' }));
    expect(e.code).toBe('E_UNSUPPORTED');
    expect(e.message).toContain("'neox'");
  });
});

describe('a context and its sampling options', () => {
  it('createContext refuses a capacity that is not a positive integer; evalSample refuses bad sampling options — the context stays usable', async () => {
    const { config, tensors } = llmLoadArgs(spec);
    const llm = await native().NativeLlm.load(config, tensors);
    for (const capacity of [0, -3, 2.5, Number.NaN]) {
      const e = await failure(async () => llm.createContext({ capacity }));
      expect(e.code, e.message).toBe('E_ARGUMENT');
    }
    const ctx = llm.createContext({ capacity: 8 });
    expect(ctx.capacity).toBe(8);
    for (const sampling of [{ temperature: -1 }, { topP: 0 }, { topP: 2 }, { minP: 1 }, { topK: 1.5 }, { repetitionPenalty: 0 },
      { temperature: Number.NaN }]) {
      const e = await failure(() => ctx.evalSample(Int32Array.of(1), { sampling }));
      expect(e.code, `${JSON.stringify(sampling)}: ${e.message}`).toBe('E_ARGUMENT');
    }
    // nothing was evaluated by the refused calls; the context still works
    expect(ctx.nPast).toBe(0);
    const r = await ctx.evalSample(Int32Array.of(1, 2), { sampling: { temperature: 0 } });
    expect(r.token).toBeGreaterThanOrEqual(0);
    expect(ctx.nPast).toBe(2);
    // a capacity beyond the model's context is the whole context
    expect(llm.createContext({ capacity: 1e9 }).capacity).toBe(config.contextLength);
    llm.dispose();
  });
});
