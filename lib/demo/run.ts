#!/usr/bin/env node
/**
 * `npm run demo`: loads the bundled demo model (loadModel() with no argument), asks it questions about the
 * sample images shipped beside it — held-out test cases of the synthetic world, never seen in training — and
 * prints each answer with the expected one and its timing.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { loadModel } from '../model/model.js';
import { demoModelDir, type DemoSample } from './samples.js';

async function main() {
  const t0 = performance.now();
  const dir = demoModelDir();
  const model = await loadModel();
  const loaded = performance.now() - t0;
  const samples = JSON.parse(readFileSync(join(dir, 'samples', 'samples.json'), 'utf8')) as DemoSample[];
  const out = (s: string) => process.stdout.write(`${s}\n`);
  out(`medllava demo model (${dir}), loaded in ${loaded.toFixed(0)} ms on the ${model.device}`);
  out('Trained only on synthetic images by `npm run train:demo`: a demonstration of the pipeline, not a medical tool.\n');
  let right = 0, asked = 0;
  for (const s of samples) {
    out(`${s.image} — ${s.modality}; ground truth: ${String(s.truth['finding'])}${s.truth['side'] ? `, ${String(s.truth['side'])}` : ''}`);
    const chat = model.createChat();
    try {
      for (const q of s.questions) {
        chat.reset();
        const r = await chat.send({ text: q.question, image: join(dir, s.image) }, { temperature: 0, maxTokens: 64 });
        const ms = r.timings.imageMs + r.timings.promptMs + r.timings.genMs;
        const ok = q.answerType === 'CLOSED' ? r.text.trim().toLowerCase().startsWith(q.answer) : undefined;
        if (ok !== undefined) { asked++; if (ok) right++; }
        out(`  Q: ${q.question}`);
        out(`  A: ${r.text.trim()}   [${ms.toFixed(0)} ms, ${r.timings.genTokens} tokens]   expected: ${q.answer}${ok === undefined ? '' : ok ? ' ✓' : ' ✗'}`);
      }
    } finally {
      chat.dispose();
    }
  }
  await model.dispose();
  out(`\n${right}/${asked} yes/no answers right; ${((performance.now() - t0) / 1000).toFixed(1)} s in all`);
}

main().catch((e: unknown) => {
  process.stderr.write(`medllava demo: ${e instanceof Error ? e.message : String(e)}${(e as { code?: string }).code ? ` (${(e as { code: string }).code})` : ''}\n`);
  process.exit(1);
});
