/**
 * What a long-running server meets: thousands of images through one model, a context that fills
 * mid-answer, chats created and disposed by the thousand, the memory V8 is told about, and an event
 * loop that stays responsive while caches are allocated and the CUDA probe runs.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';

import { FIXTURE_SHAPES, generateFixture } from '../../lib/fixtures/generate.js';
import { CachedContext } from '../../lib/generate.js';
import { loadModel, type Model } from '../../lib/index.js';
import { packageRoot, type NativeImage, type NativeLlm } from '../../lib/native.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-life-'));
let dir: { dir: string; tower: string };
let model: Model;
/** the model's image encoder with the rows kept native (what chats splice) */
const encodeNative = (img: Uint8Array) => (model as unknown as { encodeNative(i: Uint8Array): Promise<NativeImage> }).encodeNative(img);
let png: Buffer;
let png2: Buffer;

beforeAll(async () => {
  dir = (await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'v15') })) as typeof dir;
  model = await loadModel(dir.dir, { visionTower: dir.tower });
  const img = (seed: number) => sharp(Buffer.from(Array.from({ length: 20 * 20 * 3 }, (_, i) => (i * seed * 37) % 251)),
    { raw: { width: 20, height: 20, channels: 3 } }).png().toBuffer();
  png = await img(3);
  png2 = await img(11);
}, 120_000);

const rssMiB = () => process.memoryUsage().rss / 2 ** 20;

describe('image identity travels beside the tokens', () => {
  it('after 3,000 images through one model, a chat with an image answers as on a fresh model', async () => {
    // each forward with an image used to take a fresh serial for its placeholder ids; past ~2,148
    // images those overflowed int32 and every image turn failed
    const prompt = model.tokenizer.encodePrompt('Describe <image> briefly');
    const first = await model.forward({ tokens: prompt, images: [png] });
    for (let i = 1; i < 3000; i++) await model.forward({ tokens: prompt, images: [i % 2 ? png2 : png] });
    expect(await model.forward({ tokens: prompt, images: [png] })).toEqual(first);
    const fresh = await loadModel(dir.dir, { visionTower: dir.tower });
    const ask = async (m: Model) => (await m.createChat().send({ text: 'What is shown?', image: png }, { maxTokens: 12 })).tokens;
    const expected = await ask(fresh);
    expect(await ask(model)).toEqual(expected);
    await fresh.dispose();
  }, 300_000);

  it('a later turn reuses the cached prefix only for the same image: equal to a fresh evaluation, and says how much it reused', async () => {
    const chat = model.createChat();
    const r1 = await chat.send({ text: 'Look at this.', image: png }, { maxTokens: 4 });
    expect(r1.timings.reusedTokens).toBe(0);
    const r2 = await chat.send({ text: 'And now?' }, { maxTokens: 6 });
    // the whole first prompt (image rows included) came from the cache
    expect(r2.timings.reusedTokens).toBeGreaterThanOrEqual(r1.timings.promptTokens);
    // the same conversation in a fresh chat, evaluated from scratch, answers the same
    const fresh = model.createChat();
    fresh.history.push(...chat.history.slice(0, 2));
    (fresh as unknown as { images: NativeImage[] }).images = [await encodeNative(png)];
    const r2f = await fresh.send({ text: 'And now?' }, { maxTokens: 6 });
    expect(r2f.timings.reusedTokens).toBe(0);
    expect(r2f.tokens).toEqual(r2.tokens);
    // a different image in the same place is not served from the cache
    const other = model.createChat();
    await other.send({ text: 'Look at this.', image: png }, { maxTokens: 4 });
    other.reset();
    const r3 = await other.send({ text: 'Look at this.', image: png2 }, { maxTokens: 4 });
    const imageStart = model.tokenizer.encodePrompt('x').length; // the prompt's head before the image is text
    expect(r3.timings.reusedTokens).toBeLessThan(r1.timings.promptTokens - 1);
    expect(r3.timings.reusedTokens).toBeGreaterThanOrEqual(imageStart - 1);
    for (const c of [chat, fresh, other]) c.dispose();
  });
});

describe('prefix reuse equals a fresh evaluation', () => {
  it('logits after a reused prefix (text and image rows) are those of the whole prompt evaluated from scratch', async () => {
    const llm = (model as unknown as { llm(): NativeLlm }).llm();
    const feats = await encodeNative(png);
    const rows = feats.rows;
    const head = model.tokenizer.encodePrompt('Look at');
    const span = (at: number) => [{ at, rows, image: feats }];
    const turn1 = [...head, ...new Array<number>(rows).fill(-1), ...model.tokenizer.encodePrompt('please').slice(1)];
    const turn2 = [...turn1, 17, 99, 250, ...model.tokenizer.encodePrompt('and now what').slice(1)];
    const reused = new CachedContext(llm.createContext());
    await reused.prefill(turn1, span(head.length));
    await reused.push(17);
    const second = await reused.prefill(turn2, span(head.length));
    // everything cached (turn 1 and the pushed token) is kept; only the rest is evaluated
    expect(second.reused).toBe(turn1.length + 1);
    const fresh = new CachedContext(llm.createContext());
    const scratch = await fresh.prefill(turn2, span(head.length));
    expect(scratch.reused).toBe(0);
    let worst = 0;
    for (let i = 0; i < scratch.logits.length; i++) worst = Math.max(worst, Math.abs(scratch.logits[i]! - second.logits[i]!));
    // the same arithmetic in another order of chunks: rounding only (the f16 KV cache holds the same values)
    expect(worst).toBeLessThan(1e-4);
    // a different image at the same place shares only the text before it
    const other = await encodeNative(png2);
    const swapped = await reused.prefill(turn2, [{ at: head.length, rows, image: other }]);
    expect(swapped.reused).toBe(head.length);
    reused.ctx.dispose();
    fresh.ctx.dispose();
  });
});

describe('a context that fills up during an answer', () => {
  it("returns the text generated so far with stopReason 'context' (send and stream agree)", async () => {
    const roomy = await model.createChat().send({ text: 'Tell me everything.' }, { maxTokens: 40 });
    expect(roomy.tokens.length, 'the greedy answer must be long enough to be cut').toBeGreaterThanOrEqual(12);
    const P = roomy.timings.promptTokens;
    const tight = await loadModel(dir.dir, { visionTower: dir.tower, contextLength: P + 7 });
    const r = await tight.createChat().send({ text: 'Tell me everything.' }, { maxTokens: 40 });
    expect(r.stopReason).toBe('context');
    // P positions for the prompt, 7 more for answer tokens; the 8th is sampled from the last logits
    expect(r.tokens).toEqual(roomy.tokens.slice(0, 8));
    expect(r.text.length).toBeGreaterThan(0);
    let streamed = '';
    const chat = tight.createChat();
    for await (const piece of chat.stream({ text: 'Tell me everything.' }, { maxTokens: 40 })) streamed += piece;
    expect(streamed).toBe(r.text);
    expect(chat.history.at(-1)).toEqual({ role: 'assistant', text: r.text.trim() });
    // a prompt that does not fit at all is still E_CONTEXT_FULL, and nothing was generated
    await expect(tight.createChat().send({ text: 'word '.repeat(40) })).rejects.toMatchObject({ code: 'E_CONTEXT_FULL' });
    await tight.dispose();
  });
});

describe('lifecycles', () => {
  it('Chat.dispose() frees the chat; a disposed chat refuses with E_ARGUMENT', async () => {
    const chat = model.createChat();
    await chat.send({ text: 'hi' }, { maxTokens: 2 });
    chat.dispose();
    chat.dispose();
    await expect(chat.send({ text: 'again' })).rejects.toMatchObject({ code: 'E_ARGUMENT', message: expect.stringMatching(/disposed/) });
    expect(() => chat.reset()).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
  });

  it('Model.dispose() invalidates its chats: their next use is E_ARGUMENT naming the model', async () => {
    const m = await loadModel(dir.dir, { visionTower: dir.tower });
    const a = m.createChat();
    const b = m.createChat();
    await a.send({ text: 'hi' }, { maxTokens: 2 });
    await m.dispose();
    for (const c of [a, b]) {
      await expect(c.send({ text: 'again' })).rejects.toMatchObject({ code: 'E_ARGUMENT', message: expect.stringMatching(/model has been disposed/) });
    }
    expect(() => m.createChat()).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
  });

  it('Model.forward() sizes its KV cache to the input, not the whole context', async () => {
    // a model whose full context would need 1 GiB of cache: forward over 6 tokens must not allocate it
    const big = (await generateFixture({ layout: 'gguf', out: join(root, 'bigctx'), ggufType: 'F32',
      shape: { ...FIXTURE_SHAPES.tiny!, llm: { ...FIXTURE_SHAPES.tiny!.llm, context: 1 << 22 } } })) as { llm: string };
    const m = await loadModel(big.llm);
    const before = rssMiB();
    const external0 = process.memoryUsage().external;
    for (let i = 0; i < 20; i++) await m.forward({ tokens: [1, 5, 6, 7, 8, 9] });
    expect(rssMiB() - before).toBeLessThan(64);
    expect(process.memoryUsage().external - external0).toBeLessThan(64 * 2 ** 20);
    await m.dispose();
  });

  it('KV caches are reported to V8 (external memory): contexts dropped without dispose() are collected', async () => {
    // V8 only sees the small JS wrapper of a context; without the cache's bytes reported it never
    // collects them: 24 dropped 128 MiB caches then hold 3 GiB (measured: 3,120 MiB). Reported, the
    // collector runs on the external pressure (measured: a 305 MiB peak).
    const big = join(root, 'bigctx');
    const m = await loadModel(join(big, readdirSync(big).find((f) => f.endsWith('.gguf') && !f.startsWith('mmproj'))!),
      { contextLength: 1 << 19 });
    const llm = (m as unknown as { llm(): NativeLlm }).llm();
    const start = rssMiB();
    let peak = 0;
    for (let i = 0; i < 24; i++) {
      await llm.createContext().eval(Int32Array.from([1, 2, 3])); // 128 MiB of cache, then dropped
      await new Promise((r) => setImmediate(r));
      peak = Math.max(peak, rssMiB() - start);
    }
    console.log(`24 dropped 128 MiB KV caches: RSS peak +${peak.toFixed(0)} MiB`);
    expect(peak).toBeLessThan(1024);
    await m.dispose();
  }, 120_000);

  it('chats dropped without dispose() are collected too (the model holds them weakly)', async () => {
    const big = join(root, 'bigctx');
    const m = await loadModel(join(big, readdirSync(big).find((f) => f.endsWith('.gguf') && !f.startsWith('mmproj'))!),
      { contextLength: 1 << 19 });
    const start = rssMiB();
    let peak = 0;
    for (let i = 0; i < 24; i++) {
      await m.createChat().send({ text: 'hi' }, { maxTokens: 1 }); // a 128 MiB cache, then the chat is dropped
      await new Promise((r) => setImmediate(r));
      peak = Math.max(peak, rssMiB() - start);
    }
    console.log(`24 dropped chats with 128 MiB KV caches: RSS peak +${peak.toFixed(0)} MiB`);
    expect(peak).toBeLessThan(1024);
    await m.dispose();
  }, 120_000);

  // under AddressSanitizer (npm run test:asan:addon) freed memory sits in its quarantine (up to
  // 256 MiB), so RSS measures ASan, not us: the bound is checked in the normal run only
  it.skipIf((process.env.LD_PRELOAD ?? '').includes('libasan'))('1,000 create / send / dispose cycles: RSS stays bounded', async () => {
    const cycle = async () => {
      const c = model.createChat();
      await c.send({ text: 'Is there an effusion?' }, { maxTokens: 3 });
      c.dispose();
    };
    for (let i = 0; i < 100; i++) await cycle(); // warm up allocators and JIT
    const before = rssMiB();
    for (let i = 0; i < 1000; i++) await cycle();
    const growth = rssMiB() - before;
    console.log(`1,000 chat create/send/dispose cycles: RSS ${before.toFixed(1)} → ${rssMiB().toFixed(1)} MiB (${growth.toFixed(1)} MiB)`);
    // one chat's cache on this model is 2 × 512 × 32 × 2 × 2 = 128 KiB: a leak of every cache would
    // add 125 MiB; allocator noise stays well under 16 MiB
    expect(growth).toBeLessThan(16);
  }, 300_000);
});

describe('the event loop stays responsive', () => {
  it('while the CUDA probe runs and while a 256 MiB KV cache is allocated and freed (a timer is never > 50 ms late)', () => {
    // a fresh process: the probe runs once per process. Zeroing 256 MiB on the JS thread (as contexts
    // once did) blocks it ~350 ms here, and a spawnSync probe ~100-300 ms; both now run elsewhere, and
    // what remains is CPU contention with the worker doing it (2 cores).
    const big = join(root, 'bigctx');
    const script = `
      const { readdirSync } = await import('node:fs');
      const { join } = await import('node:path');
      const native = await import(${JSON.stringify(join(packageRoot(), 'dist/lib/native.js'))});
      const { loadLlm } = await import(${JSON.stringify(join(packageRoot(), 'dist/lib/model/llm.js'))});
      const { loadModelSpec } = await import(${JSON.stringify(join(packageRoot(), 'dist/lib/model/spec.js'))});
      const big = ${JSON.stringify(big)};
      const spec = await loadModelSpec(join(big, readdirSync(big).find((f) => f.endsWith('.gguf') && !f.startsWith('mmproj'))));
      const llm = await loadLlm(spec, { contextLength: 1 << 20 });
      let worst = 0, last = performance.now();
      const timer = setInterval(() => { const now = performance.now(); worst = Math.max(worst, now - last - 5); last = now; }, 5);
      const lateness = async (f) => { await new Promise((r) => setTimeout(r, 20)); worst = 0; last = performance.now(); await f(); await new Promise((r) => setTimeout(r, 20)); return worst; };
      const probe = await lateness(() => native.cudaProbed());
      const context = await lateness(async () => { const c = llm.createContext(); await c.eval(Int32Array.from([1, 2, 3])); c.dispose(); });
      clearInterval(timer);
      process.stdout.write(JSON.stringify({ probe, context }));
    `;
    const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })) as
      { probe: number; context: number };
    console.log(`event-loop lateness: during the CUDA probe ${out.probe.toFixed(1)} ms, during a 256 MiB cache allocation ${out.context.toFixed(1)} ms`);
    expect(out.probe).toBeLessThan(50);
    expect(out.context).toBeLessThan(50);
  }, 120_000);
});
