/**
 * The data and evaluation commands from the command line: `synth` writes a world, `generate-instruct` its
 * conversations offline, `eval vqa` / `eval chat` / `eval report` print the papers' tables (and JSON), and bad input
 * fails with one line naming the problem and its code, leaving what exists untouched.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { packageRoot } from '../../lib/native.js';

const cli = join(packageRoot(), 'dist/lib/cli/main.js');
const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 300_000 });
let dir: string;
let model: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'medllava-cli-data-'));
  model = (await generateFixture({ layout: 'llava-med-v1.5', out: join(dir, 'model') }))['dir']!;
}, 120_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('medllava synth / generate-instruct / eval', () => {
  it('synth writes a world and says what is where', () => {
    const r = run(['synth', '--out', join(dir, 'w'), '--count', '60', '--size', '48', '--seed', '5']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^60 cases \(train \d+, val \d+, test \d+\)/);
    for (const f of ['truth.jsonl', 'figures.json', 'vqa/test.json', 'chat/test.jsonl', 'reports/test.json']) expect(existsSync(join(dir, 'w', f))).toBe(true);
  });

  it('generate-instruct writes the training split\'s conversations offline', () => {
    const r = run(['generate-instruct', '--figures', join(dir, 'w', 'figures.json'), '--out', join(dir, 'w', 'instruct.json'), '--split', 'train']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^\d+ conversations \(rule-based writer\)/);
    const conv = JSON.parse(readFileSync(join(dir, 'w', 'instruct.json'), 'utf8')) as unknown[];
    expect(conv.length).toBe(Number(/^(\d+)/.exec(r.stdout)![1]));
  });

  it('eval vqa prints the paper\'s table, or JSON', () => {
    const r = run(['eval', 'vqa', '--model', model, '--data', join(dir, 'w', 'vqa', 'test.json'), '--images', join(dir, 'w'), '--limit', '6',
      '--answers', join(dir, 'a.jsonl')]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/\| model \| vqa open \| vqa closed \|/);
    expect(readFileSync(join(dir, 'a.jsonl'), 'utf8').trim().split('\n')).toHaveLength(6);
    const j = run(['eval', 'vqa', '--model', model, '--data', join(dir, 'w', 'vqa', 'test.json'), '--images', join(dir, 'w'), '--limit', '4', '--strict', '--json']);
    const parsed = JSON.parse(j.stdout) as { dataset: string; openCount: number; closedCount: number }[];
    expect(parsed[0]!.openCount + parsed[0]!.closedCount).toBe(4);
  });

  it('eval chat (ground truth) and eval report (--predictions) print their tables', () => {
    const c = run(['eval', 'chat', '--model', model, '--questions', join(dir, 'w', 'chat', 'test.jsonl'), '--limit', '3']);
    expect(c.status, c.stderr).toBe(0);
    expect(c.stdout).toMatch(/\| model \| Conversation \| Description \| CXR/);
    expect(c.stdout).toContain('scored against the ground truth');
    writeFileSync(join(dir, 'p.jsonl'), [
      { reference: 'There is a small left pleural effusion. No pneumothorax.', prediction: 'There is a left pleural effusion. No pneumothorax.' },
      { reference: 'Heart size is normal. The lungs are clear.', prediction: 'The heart is enlarged.' },
    ].map((x) => JSON.stringify(x)).join('\n'));
    const r = run(['eval', 'report', '--predictions', join(dir, 'p.jsonl'), '--json']);
    expect(r.status, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout) as { count: number; f1: { micro14: number }; bleu4: number; rougeL: number };
    expect(s.count).toBe(2);
    expect(s.f1.micro14).toBeGreaterThan(0);
    expect(s.rougeL).toBeGreaterThan(0);
  });

  it('bad input: one line with the code, nothing written over', () => {
    const before = readFileSync(join(dir, 'w', 'instruct.json'), 'utf8');
    writeFileSync(join(dir, 'broken.json'), '{ not json');
    const g = run(['generate-instruct', '--figures', join(dir, 'broken.json'), '--out', join(dir, 'w', 'instruct.json')]);
    expect(g.status).toBe(1);
    expect(g.stderr.trim().split('\n')).toHaveLength(1);
    expect(g.stderr).toMatch(/^medllava: .*broken\.json.*\(E_FORMAT\)$/m);
    expect(readFileSync(join(dir, 'w', 'instruct.json'), 'utf8')).toBe(before);
    const v = run(['eval', 'vqa', '--model', model, '--data', join(dir, 'w', 'vqa', 'test.json'), '--images', join(dir, 'nowhere')]);
    expect(v.status).toBe(1);
    expect(v.stderr).toMatch(/does not exist \(pass --images.*\(E_IO\)/);
    const s = run(['synth', '--out', join(dir, 'x'), '--count', '0']);
    expect(s.stderr).toMatch(/count must be a positive integer.*\(E_ARGUMENT\)/);
    const rep = run(['eval', 'report']);
    expect(rep.status).toBe(1);
    expect(rep.stderr).toMatch(/pass --data .* or --predictions.*\(E_ARGUMENT\)/);
  });
});
