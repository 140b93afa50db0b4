/**
 * The bundled demo model, as a fresh clone has it: `loadModel()` with no argument loads models/medllava-demo;
 * `npm run demo`'s program answers every shipped sample question and prints the answers with their timings; the
 * samples are held-out test cases of the world the model was trained on (never in its training files); and the
 * model answers most of their yes/no questions right (what its evaluation table says it does).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { demoModelDir, type DemoSample } from '../../lib/demo/pack.js';
import { loadModel } from '../../lib/model/model.js';
import { packageRoot } from '../../lib/native.js';

const dir = demoModelDir();
const samples = JSON.parse(readFileSync(join(dir, 'samples', 'samples.json'), 'utf8')) as DemoSample[];

describe('the bundled demo model', () => {
  it('is a self-contained HF LLaVA folder of at most 30 MB that loadModel() loads with no argument', async () => {
    let bytes = 0;
    for (const f of ['model.safetensors', 'config.json', 'tokenizer.model', 'vision_tower/config.json']) bytes += statSync(join(dir, f)).size;
    expect(bytes).toBeLessThanOrEqual(30 * 2 ** 20);
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(cfg['mm_vision_tower']).toBe('vision_tower');
    const model = await loadModel(undefined, { threads: 2 });
    try {
      expect(model.spec.family).toBe('llava-med-v1.5');
      let right = 0, asked = 0;
      for (const s of samples) {
        for (const q of s.questions.filter((x) => x.answerType === 'CLOSED')) {
          const chat = model.createChat();
          const r = await chat.send({ text: q.question, image: join(dir, s.image) }, { temperature: 0, maxTokens: 8 });
          chat.dispose();
          asked++;
          if (r.text.trim().toLowerCase().startsWith(q.answer)) right++;
        }
      }
      expect(asked).toBeGreaterThanOrEqual(5);
      expect(right / asked).toBeGreaterThanOrEqual(0.6);
    } finally {
      await model.dispose();
    }
  });

  it('ships samples from the held-out test split only', () => {
    const splits = JSON.parse(readFileSync(join(dir, 'build.json'), 'utf8')) as { cases: number; seed: number };
    expect(samples.length).toBe(5);
    for (const s of samples) expect(s.image).toMatch(/^samples\/syn\d{5}\.png$/);
    // the world is reproducible from the seed: the samples' cases are test cases of it
    return import('../../lib/synth/world.js').then(({ worldCase }) => {
      for (const s of samples) {
        const i = Number(/syn(\d{5})/.exec(s.image)![1]);
        const c = worldCase(i, splits.seed);
        expect(c.split).toBe('test');
        expect(c.truth).toEqual(s.truth);
      }
    });
  });

  it('`npm run demo` prints an answer and its timing for every sample question', () => {
    const r = spawnSync(process.execPath, [join(packageRoot(), 'dist/lib/demo/run.js')], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const answers = r.stdout.split('\n').filter((l) => l.startsWith('  A: '));
    expect(answers.length).toBe(samples.reduce((a, s) => a + s.questions.length, 0));
    for (const a of answers) expect(a).toMatch(/\[\d+ ms, \d+ tokens\]/);
    expect(r.stdout).toMatch(/yes\/no answers right; [\d.]+ s in all/);
  });
});
