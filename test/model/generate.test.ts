/**
 * Generation and chat over the native LLM: greedy decoding identical to llama.cpp's for 32 tokens,
 * deterministic seeded sampling, stop strings, max tokens, abort, multi-turn chat with templates.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { CachedContext, generate, type Reply } from '../../lib/generate.js';
import { getBackendInfo, loadModel, loadModelSpec, renderPrompt, type Model } from '../../lib/index.js';
import { loadLlm } from '../../lib/model/llm.js';
import { packageRoot } from '../../lib/native.js';
import { importPeer } from '../support/peers.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-gen-'));
let gguf: string;
let model: Model;

beforeAll(async () => {
  gguf = ((await generateFixture({ layout: 'gguf', out: join(root, 'f32'), ggufType: 'F32' })) as { llm: string }).llm;
  model = await loadModel(gguf);
}, 120_000);

async function run(gen: AsyncGenerator<string, Reply, void>): Promise<{ chunks: string[]; reply: Reply }> {
  const chunks: string[] = [];
  let r = await gen.next();
  while (!r.done) { chunks.push(r.value); r = await gen.next(); }
  return { chunks, reply: r.value };
}

describe('decoding', () => {
  it('greedy: the same 32 tokens as llama.cpp', async () => {
    const prompt = model.tokenizer.encodePrompt('the chest x-ray shows');
    const cc = new CachedContext((await loadLlm(await loadModelSpec(gguf))).createContext());
    const { reply } = await run(generate(cc, model.tokenizer, prompt, { maxTokens: 32, temperature: 0 }));
    interface Peer {
      getLlama(o: object): Promise<{ loadModel(o: { modelPath: string }): Promise<{
        createContext(o: object): Promise<{ getSequence(): { evaluate(t: number[], o: object): AsyncIterable<number> }; dispose(): Promise<void> }>;
        dispose(): Promise<void> }> }>;
      LlamaLogLevel: { error: unknown };
    }
    const nlc = await importPeer<Peer>('node-llama-cpp', 'dist/index.js');
    const llama = await nlc.getLlama({ gpu: false, build: 'never', logLevel: nlc.LlamaLogLevel.error });
    const m = await llama.loadModel({ modelPath: gguf });
    const ctx = await m.createContext({ contextSize: 128 });
    const theirs: number[] = [];
    for await (const t of ctx.getSequence().evaluate(prompt, { temperature: 0 })) {
      if (t === model.tokenizer.eosId || theirs.length >= 32) break;
      theirs.push(t);
    }
    await ctx.dispose();
    await m.dispose();
    expect(reply.tokens.length).toBe(32);
    expect(reply.stopReason).toBe('length');
    expect(reply.tokens).toEqual(theirs);
  });

  it('seeded sampling is deterministic; another seed gives another answer', async () => {
    const chat = () => model.createChat();
    const o = { temperature: 1.2, topK: 50, topP: 0.95, minP: 0.01, maxTokens: 24, repetitionPenalty: 1.1 };
    const a = await chat().send({ text: 'Describe the image.' }, { ...o, seed: 7 });
    const b = await chat().send({ text: 'Describe the image.' }, { ...o, seed: 7 });
    const c = await chat().send({ text: 'Describe the image.' }, { ...o, seed: 8 });
    expect(a.tokens).toEqual(b.tokens);
    expect(a.tokens).not.toEqual(c.tokens);
  });

  it('streams text that adds up to the reply, with log-probabilities and timings', async () => {
    const chat = model.createChat();
    const chunks: string[] = [];
    for await (const s of chat.stream({ text: 'Any effusion?' }, { maxTokens: 16, logprobs: true })) chunks.push(s);
    const last = chat.history[chat.history.length - 1]!;
    expect(last.role).toBe('assistant');
    expect(chunks.join('').trim()).toBe(last.text);
    const reply = await model.createChat().send({ text: 'Any effusion?' }, { maxTokens: 16, logprobs: true });
    expect(reply.logprobs!.length).toBe(reply.tokens.length);
    for (const lp of reply.logprobs!) expect(lp).toBeLessThanOrEqual(0);
    expect(reply.timings.promptTokens).toBeGreaterThan(5);
    expect(reply.timings.genTokens).toBe(reply.tokens.length);
  });

  it('a stop string ends the reply before it', async () => {
    const free = await model.createChat().send({ text: 'What modality?' }, { maxTokens: 24 });
    const words = free.text.trim().split(/\s+/);
    const stop = words[Math.min(3, words.length - 1)]!;
    const stopped = await model.createChat().send({ text: 'What modality?' }, { maxTokens: 24, stop: [stop] });
    expect(stopped.stopReason).toBe('stop');
    expect(stopped.text).toBe(free.text.slice(0, free.text.indexOf(stop)));
  });

  it('abort stops within one token', async () => {
    const ac = new AbortController();
    const chat = model.createChat();
    let n = 0;
    const gen = chat.stream({ text: 'Describe everything.' }, { maxTokens: 200, signal: ac.signal });
    for await (const _ of gen) {
      if (++n === 2) ac.abort();
    }
    const reply = await model.createChat().send({ text: 'x' }, { maxTokens: 5, signal: AbortSignal.abort() })
      .catch((e: unknown) => e);
    expect(reply).toMatchObject({ code: 'E_ABORTED' });
    expect(chat.history.length).toBe(2);
    expect(n).toBeLessThanOrEqual(3);
  });
});

describe('chat', () => {
  it('multi-turn: the history renders through the model\'s template and the cache is reused', async () => {
    const chat = model.createChat();
    const r1 = await chat.send({ text: 'What is shown?' }, { maxTokens: 8 });
    const r2 = await chat.send({ text: 'Where?' }, { maxTokens: 8 });
    expect(chat.history.map((h) => h.role)).toEqual(['user', 'assistant', 'user', 'assistant']);
    expect(r2.timings.promptTokens).toBeGreaterThan(r1.timings.promptTokens);
    expect(renderPrompt(model.spec.template, chat.history.slice(0, 3), { addGenerationPrompt: true }))
      .toMatch(/^\[INST\] What is shown\? \[\/INST\] .*<\/s>\[INST\] Where\? \[\/INST\]$/s);
    chat.reset();
    expect(chat.history).toEqual([]);
  });

  it('a chat about an image: the image goes in once, later turns reuse it', async () => {
    const png = await sharp({ create: { width: 80, height: 50, channels: 3, background: { r: 200, g: 90, b: 30 } } }).png().toBuffer();
    const chat = model.createChat();
    const r1 = await chat.send({ text: 'What is shown?', image: png }, { maxTokens: 6 });
    expect(r1.timings.imageMs).toBeGreaterThan(0);
    expect(r1.timings.promptTokens).toBeGreaterThan(9); // 9 image rows + text
    const r2 = await chat.send({ text: 'Where?' }, { maxTokens: 6 });
    expect(r2.timings.imageMs).toBe(0);
    expect(chat.history.map((h) => h.image ?? false)).toEqual([true, false, false, false]);
    expect((await model.encodeImage(png)).length).toBe(9 * model.spec.llm.hidden);
    await expect(model.forward({ tokens: [1, -200, 5] })).rejects.toMatchObject({ code: 'E_ARGUMENT', message: expect.stringMatching(/1 <image> placeholder/) });
    await expect(model.createChat().send({ text: 'x', image: new Uint8Array([1, 2, 3]) })).rejects.toMatchObject({ code: 'E_IMAGE' });
  });

  it("device 'cuda': without a GPU E_CUDA with CUDA's reason and 'auto' on the CPU; with one, 'auto' and 'cuda' run there", async () => {
    const cuda = getBackendInfo().cuda;
    const spec = await loadModelSpec(gguf);
    if (!cuda.available) {
      await expect(loadModel(gguf, { device: 'cuda' })).rejects.toMatchObject({
        code: cuda.compiled ? 'E_CUDA' : 'E_UNSUPPORTED', message: expect.stringContaining(cuda.reason!) });
      expect(model.device).toBe('cpu');
      // the native loader's own check, below loadModel's
      await expect(loadLlm(spec, { device: 'cuda' })).rejects.toMatchObject({ code: cuda.compiled ? 'E_CUDA' : 'E_UNSUPPORTED' });
    } else {
      expect(model.device).toBe('cuda'); // 'auto'
      const m = await loadModel(gguf, { device: 'cuda' });
      expect(m.device).toBe('cuda');
      await m.dispose();
      (await loadLlm(spec, { device: 'cuda' })).dispose();
    }
    await expect(loadModel(gguf, { device: 'tpu' as 'cpu' })).rejects.toMatchObject({ code: 'E_ARGUMENT' });
    // no source: the bundled demo model (test/demo/demo.test.ts); a bad option is still refused first
    await expect(loadModel(undefined, { device: 'tpu' as 'cpu' })).rejects.toMatchObject({ code: 'E_ARGUMENT' });
  });

  it('loading reports progress through the bytes of every weight file, and an abort during it is E_ABORTED', async () => {
    const seen: { loadedBytes: number; totalBytes: number }[] = [];
    const big = ((await generateFixture({ layout: 'gguf', out: join(root, 'big'), ggufType: 'F32', size: 'tiny' })) as { llm: string; mmproj: string });
    const m = await loadModel(big.llm, { onProgress: (p) => seen.push(p) });
    const total = statSync(big.llm).size + statSync(big.mmproj).size;
    expect(seen[0]).toEqual({ loadedBytes: 0, totalBytes: total });
    expect(seen.at(-1)).toEqual({ loadedBytes: total, totalBytes: total });
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.loadedBytes).toBeGreaterThanOrEqual(seen[i - 1]!.loadedBytes);
    await m.dispose();
    const ac = new AbortController();
    await expect(loadModel(big.llm, { signal: ac.signal, onProgress: () => ac.abort() })).rejects.toMatchObject({ code: 'E_ABORTED' });
  });

  it('forward returns the last row or every row of logits', async () => {
    const tokens = model.tokenizer.encodePrompt('the lung');
    const last = await model.forward({ tokens });
    const all = await model.forward({ tokens }, { allLogits: true });
    expect(last.length).toBe(model.spec.llm.vocab);
    expect(all.length).toBe(tokens.length * model.spec.llm.vocab);
    // the same numbers up to summation order (one row takes the GEMV path, many the GEMM path)
    const tail = all.subarray(all.length - last.length);
    for (let i = 0; i < last.length; i++) expect(Math.abs(tail[i]! - last[i]!)).toBeLessThan(1e-5);
  });
});

describe('medllava chat', () => {
  const cli = () => join(packageRoot(), 'dist/lib/cli/main.js');
  it('--prompt answers once, greedily, the same as the API', async () => {
    const out = execFileSync(process.execPath, [cli(), 'chat', '--model', gguf, '--prompt', 'Is the heart enlarged?', '--max-tokens', '12'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const api = await model.createChat().send({ text: 'Is the heart enlarged?' }, { maxTokens: 12 });
    expect(out).toBe(`${api.text}\n`);
  });

  it('--image: answers about an image, the same as the API; /image in the interactive session does the same', async () => {
    const png = join(root, 'cli.png');
    await sharp({ create: { width: 64, height: 40, channels: 3, background: { r: 200, g: 40, b: 90 } } }).png().toFile(png);
    const out = execFileSync(process.execPath, [cli(), 'chat', '--model', gguf, '--image', png, '--prompt', 'What does the image show?',
      '--max-tokens', '12'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const api = await model.createChat().send({ text: 'What does the image show?', image: png }, { maxTokens: 12 });
    expect(api.timings.imageMs).toBeGreaterThan(0);
    expect(out).toBe(`${api.text}\n`);
    // without the image the answer differs (the image really went in)
    const noImage = await model.createChat().send({ text: 'What does the image show?' }, { maxTokens: 12 });
    expect(noImage.tokens).not.toEqual(api.tokens);
    const repl = execFileSync(process.execPath, [cli(), 'chat', '--model', gguf, '--max-tokens', '12'],
      { encoding: 'utf8', input: `/image ${png}\nWhat does the image show?\n/quit\n`, stdio: ['pipe', 'pipe', 'pipe'] });
    expect(repl).toContain(api.text);
  });

  it('the interactive session reads questions until /quit, and /clear starts over', () => {
    const out = execFileSync(process.execPath, [cli(), 'chat', '--model', gguf, '--max-tokens', '4'],
      { encoding: 'utf8', input: 'first?\n/clear\nsecond?\n/quit\n', stdio: ['pipe', 'pipe', 'pipe'] });
    expect(out.split('\n').filter((l) => l.length).length).toBeGreaterThanOrEqual(2);
  });
});
