/**
 * `generateInstruct` against a real HTTP server on loopback that speaks the OpenAI chat-completions protocol:
 * the request (model, bearer key, system + few-shot + query with the caption and citing sentences), the
 * round-robin order over the five domains, post-processing (refusals dropped, lead-ins stripped, `<image>` on the
 * first question), retries with backoff after server errors, resume after a stop (finished ids are not asked
 * again), and the offline rule-based writer.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cleanAnswer, generateInstruct, parseConversation, toLlavaConversation } from '../../lib/synth/instruct.js';
import { writeSyntheticWorld, type World } from '../../lib/synth/world.js';

let dir: string;
let world: World;
let server: Server;
let url: string;
const seen: { id: string; auth?: string; model: string; messages: { role: string; content: string }[] }[] = [];
/** ids whose first N requests fail with HTTP 500 */
const failFirst = new Map<string, number>();
let delayMs = 0;

function body(req: IncomingMessage): Promise<string> {
  return new Promise((res) => {
    let s = '';
    req.on('data', (c: Buffer) => { s += c.toString(); });
    req.on('end', () => res(s));
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'medllava-instruct-'));
  world = await writeSyntheticWorld({ out: join(dir, 'world'), count: 20, seed: 3, size: 48 });
  server = createServer(async (req, res) => {
    const j = JSON.parse(await body(req)) as { model: string; messages: { role: string; content: string }[] };
    const query = j.messages[j.messages.length - 1]!.content;
    const caption = /^Figure \d: (.*)$/m.exec(query)?.[1] ?? '';
    const id = world.cases.find((c) => c.caption === caption)?.truth.id ?? '?';
    seen.push({ id, auth: req.headers.authorization, model: j.model, messages: j.messages });
    if (req.url !== '/v1/chat/completions') { res.writeHead(404).end('no such route'); return; }
    const left = failFirst.get(id) ?? 0;
    if (left > 0) { failFirst.set(id, left - 1); res.writeHead(500).end('overloaded'); return; }
    if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
    const content = [
      `User: What is shown here?\n\nAssistant: According to the caption, ${caption.toLowerCase()}`,
      'User: Can you see the lesion edges?\n\nAssistant: I am sorry, but I cannot see the image.',
      `User: Which study is it?\n\nAssistant: It is the study of ${id}.`,
    ].join('\n\n');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ id: 'x', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }] }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
}, 120_000);

afterAll(async () => {
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

describe('post-processing', () => {
  it('splits a completion on the speaker labels', () => {
    expect(parseConversation('preamble\nUser: q1\n\nAssistant: a1\n\nUser: q2\nAssistant: a2\nUser: dangling')).toEqual([['q1', 'a1'], ['q2', 'a2']]);
  });
  it('drops refusals, strips lead-ins (capitalising like str.capitalize on the first letter), drops caption talk', () => {
    expect(cleanAnswer("I'm sorry, I cannot see the image.")).toBeNull();
    expect(cleanAnswer('According to the caption, there is a mass.')).toBe('There is a mass.');
    expect(cleanAnswer('The caption says that it is a CT.')).toBe('It is a CT.');
    expect(cleanAnswer('This is shown in the caption clearly.')).toBe('This is shown clearly.');
    expect(cleanAnswer('The caption is unclear about it.')).toBeNull();
    expect(cleanAnswer('Based on the caption, the description is short.')).toBeNull();
    expect(cleanAnswer('A mass, as described in the caption, sits in the liver.')).toBe('A mass, sits in the liver.');
    expect(cleanAnswer('A plain answer.')).toBe('A plain answer.');
  });
  it('puts <image> before or after the first surviving question', () => {
    expect(toLlavaConversation([['q1', 'I cannot see the image.'], ['q2', 'a2']], true)).toEqual([
      { from: 'human', value: '<image>\nq2' }, { from: 'gpt', value: 'a2' }]);
    expect(toLlavaConversation([['q1', 'a1']], false)![0]!.value).toBe('q1\n<image>');
    expect(toLlavaConversation([['q1', 'As an AI I cannot']], false)).toBeNull();
  });
});

describe('generateInstruct over HTTP', () => {
  it('asks the endpoint round-robin over the domains, retries server errors, post-processes, writes LLaVA JSON', async () => {
    seen.length = 0;
    const first = world.cases[0]!.truth.id;
    failFirst.set(first, 2);
    const out = join(dir, 'conv.json');
    const r = await generateInstruct({ figures: world.files.figures, out, endpoint: url, model: 'judge-x', apiKey: 'sk-test', concurrency: 2, retryDelayMs: 5, seed: 1 });
    expect(r.writer).toBe('endpoint');
    expect(r.failed).toEqual([]);
    expect(r.written).toBe(20);
    // the request: model, key, system + 3 few-shot pairs + the query with caption and mentions
    const req = seen.find((s) => s.id === world.cases[1]!.truth.id)!;
    expect(req.model).toBe('judge-x');
    expect(req.auth).toBe('Bearer sk-test');
    expect(req.messages.map((m) => m.role)).toEqual(['system', 'user', 'assistant', 'user', 'assistant', 'user', 'assistant', 'user']);
    const q = req.messages[7]!.content;
    expect(q).toContain(world.cases[1]!.caption);
    for (const m of world.cases[1]!.mentions) expect(q).toContain(`\t- ${m}`);
    // three attempts for the failing id (two 500s, then success)
    expect(seen.filter((s) => s.id === first).length).toBe(3);
    const conv = JSON.parse(readFileSync(out, 'utf8')) as { id: string; domain: string; image: string; conversations: { from: string; value: string }[] }[];
    // round-robin: the domains alternate (the world deals them round-robin too, so ids stay in order)
    expect(conv.slice(0, 5).map((c) => c.domain)).toEqual(['chest_xray', 'ct_scan', 'mri', 'histology', 'gross']);
    for (const c of conv) {
      expect(c.conversations.length).toBe(4); // the refusal round dropped
      expect(c.conversations[0]!.value).toMatch(/^<image>\nWhat is shown here\?$|^What is shown here\?\n<image>$/);
      expect(c.conversations[1]!.value.startsWith('According')).toBe(false);
      expect(c.conversations[3]!.value).toBe(`It is the study of ${c.id}.`);
      expect(c.image).toBe(`images/${c.id}.png`);
    }
    const placements = new Set(conv.map((c) => c.conversations[0]!.value.startsWith('<image>')));
    expect(placements.size).toBe(2); // both placements occur
  });

  it('gives up on a figure after its retries and reports it; other figures are written', async () => {
    const id = world.cases[2]!.truth.id;
    failFirst.set(id, 99);
    const r = await generateInstruct({ figures: world.files.figures, out: join(dir, 'conv-fail.json'), endpoint: url, retries: 2, retryDelayMs: 1, maxSize: 5 });
    failFirst.delete(id);
    expect(r.failed).toEqual([{ id, reason: expect.stringContaining('HTTP 500') }]);
    expect(r.written).toBe(4);
  });

  it('resumes: a stopped run keeps what finished; the rerun asks only for the rest', async () => {
    const out = join(dir, 'conv-resume.json');
    const ctl = new AbortController();
    delayMs = 30;
    let progressed = 0;
    await expect(generateInstruct({
      figures: world.files.figures, out, endpoint: url, concurrency: 1, signal: ctl.signal,
      onProgress: (p) => { progressed = p.done; if (p.done >= 6) ctl.abort(); },
    })).rejects.toMatchObject({ code: 'E_ABORTED' });
    delayMs = 0;
    expect(progressed).toBeGreaterThanOrEqual(6);
    const kept = readFileSync(`${out}.partial.jsonl`, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { id: string }).id);
    expect(kept.length).toBeGreaterThanOrEqual(6);
    seen.length = 0;
    const r = await generateInstruct({ figures: world.files.figures, out, endpoint: url });
    expect(r.written).toBe(20);
    const asked = seen.map((s) => s.id);
    for (const id of kept) expect(asked).not.toContain(id);
    expect(asked.length).toBe(20 - kept.length);
  });

  it('refuses a non-endpoint base URL answer clearly (404 → the figure fails with its reason)', async () => {
    const r = await generateInstruct({ figures: world.files.figures, out: join(dir, 'conv-404.json'), endpoint: url.replace('/v1', '/v2'), retries: 1, maxSize: 1 });
    expect(r.failed[0]!.reason).toContain('HTTP 404');
  });
});

describe('the offline rule-based writer', () => {
  it('writes every train figure deterministically from the ground truth', async () => {
    const a = await generateInstruct({ figures: world.files.figures, out: join(dir, 'rules-a.json'), split: 'train', seed: 5 });
    const b = await generateInstruct({ figures: world.files.figures, out: join(dir, 'rules-b.json'), split: 'train', seed: 5 });
    expect(a.writer).toBe('rules');
    expect(a.written).toBe(world.cases.filter((c) => c.split === 'train').length);
    expect(readFileSync(join(dir, 'rules-a.json'), 'utf8')).toBe(readFileSync(join(dir, 'rules-b.json'), 'utf8'));
    const conv = JSON.parse(readFileSync(join(dir, 'rules-a.json'), 'utf8')) as { id: string; conversations: { value: string }[] }[];
    for (const c of conv) {
      const truth = world.cases.find((x) => x.truth.id === c.id)!.truth;
      const text = c.conversations.map((t) => t.value).join(' ').toLowerCase();
      if (truth.finding !== 'none') expect(text).toContain(truth.finding === 'carcinoma' ? 'carcinoma' : truth.finding.replace('renal ', ''));
      expect(text).not.toMatch(/caption|description/);
    }
  });
  it('refuses figures without ground truth when no endpoint is given', async () => {
    const { writeFileSync } = await import('node:fs');
    const f = join(dir, 'plain-figures.json');
    writeFileSync(f, JSON.stringify({ ct_scan: [{ pair_id: 'p1', fig_label: 'Figure 1', fig_caption: 'A CT.' }] }));
    await expect(generateInstruct({ figures: f, out: join(dir, 'x.json') })).rejects.toMatchObject({ code: 'E_ARGUMENT' });
  });
});
