/**
 * Training data (lib/train/data.ts): LLaVA's conversation JSON / JSON lines / LLaVA-Med VQA records read with every
 * unusable record reported by id (never dropped silently or swapped), `<image>` moved to the front of its turn as
 * preprocess_multimodal does, truncation as LLaVA's collator and model do, tokenization mismatches reported, and
 * group_by_modality_length's order.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { loadTokenizer, type Tokenizer } from '../../lib/index.js';
import { SeededRandom } from '../../lib/sampling.js';
import { renderPrompt } from '../../lib/tokenizer/templates.js';
import { groupByModalityLength, loadConversations, modalityLength, sampleExample, sampleMessages } from '../../lib/train/data.js';

const root = mkdtempSync(join(tmpdir(), 'medllava-data-'));
writeFileSync(join(root, 'cxr.png'), 'not decoded here');

const good = (id: string, image = true) => ({
  id, ...(image ? { image: 'cxr.png' } : {}),
  conversations: [{ from: 'human', value: image ? 'Is there an effusion?\n<image>' : 'What is an effusion?' }, { from: 'gpt', value: 'No.' }],
});

describe('loading LLaVA conversation data', () => {
  const records = [
    good('a'),
    { id: 'b', image: 'missing.png', conversations: good('b').conversations },
    { id: 'c', conversations: [{ from: 'gpt', value: 'x' }, { from: 'human', value: 'y' }] },
    good('a'),  // the id again
    { id: 'd', conversations: [{ from: 'human', value: 'only a question' }] },
    { id: 'e', conversations: [{ from: 'human', value: '<image> what?' }, { from: 'gpt', value: 'z' }] },  // a tag, no image
    { id: 'f', image: 'cxr.png', answer_type: 'CLOSED', conversatons: [{ from: 'human', value: 'Normal?\n<image>' }, { from: 'gpt', value: 'yes' }] },
    good('g', false),
  ];

  it('JSON: every unusable record is reported by id with its reason; the rest load, LLaVA-Med\'s VQA fields included', () => {
    const file = join(root, 'train.json');
    writeFileSync(file, JSON.stringify(records));
    const { samples, problems } = loadConversations(file);
    expect(samples.map((s) => s.id)).toEqual(['a', 'f', 'g']);
    expect(problems.map((p) => [p.id, p.index])).toEqual([['b', 1], ['c', 2], ['a', 3], ['d', 4], ['e', 5]]);
    expect(problems[0]!.reason).toMatch(/missing\.png does not exist/);
    expect(problems[1]!.reason).toMatch(/turn 0 is from 'gpt'/);
    expect(problems[2]!.reason).toMatch(/used twice/);
    expect(problems[3]!.reason).toMatch(/without its answer/);
    expect(problems[4]!.reason).toMatch(/no image/);
    expect(samples[1]!.answerType).toBe('CLOSED');
    expect(samples[0]!.imagePath).toBe(join(root, 'cxr.png'));
  });

  it('JSON lines, a broken line reported by its position; onProblem: stop throws E_FORMAT naming the record', () => {
    const file = join(root, 'train.jsonl');
    writeFileSync(file, [JSON.stringify(good('a')), '{ not json', JSON.stringify(good('g', false))].join('\n') + '\n');
    const { samples, problems } = loadConversations(file);
    expect(samples.map((s) => s.id)).toEqual(['a', 'g']);
    expect(problems).toHaveLength(1);
    expect(problems[0]!.reason).toMatch(/line 2 is not valid JSON/);
    expect(() => loadConversations(join(root, 'train.json'), { onProblem: 'stop' })).toThrow(/record b \(#1\).*does not exist/);
    try {
      loadConversations(join(root, 'train.json'), { onProblem: 'stop' });
    } catch (e) {
      expect((e as { code?: string }).code).toBe('E_FORMAT');
    }
    expect(() => loadConversations(join(root, 'nope.json'))).toThrow(expect.objectContaining({ code: 'E_IO' }));
  });

  it('<image> moves to the front of its turn (preprocess_multimodal): "<image>\\n" + the rest, trimmed', () => {
    const file = join(root, 'train.json');
    const [a] = loadConversations(file).samples;
    const prompt = renderPrompt('llava_v1', sampleMessages(a!), { addGenerationPrompt: false });
    expect(prompt).toContain('USER: <image>\nIs there an effusion? ASSISTANT: No.</s>');
    expect(modalityLength(a!)).toBe(6);  // words of all turns (the tag is one), positive with an image
    expect(modalityLength(loadConversations(file).samples[2]!)).toBe(-5);
  });
});

describe('examples from samples', () => {
  let tok: Tokenizer;
  beforeAll(async () => {
    const f = (await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'fx') })) as { dir: string };
    tok = await loadTokenizer(f.dir);
  }, 300_000);

  it('a tokenization mismatch is reported, not silently zeroed; truncation keeps the image or reports it', () => {
    const file = join(root, 'train.json');
    const { samples } = loadConversations(file);
    const a = samples[0]!;
    const ok = sampleExample(tok, 'llava_v1', a);
    expect('inputIds' in ok && ok.inputIds.includes(-200)).toBe(true);
    // an answer that contains the round separator splits the rounds differently: upstream's mismatch
    const odd = { ...a, conversations: [a.conversations[0]!, { from: 'gpt' as const, value: 'No </s> really' }] };
    expect(sampleExample(tok, 'llava_v1', odd)).toEqual({ problem: expect.stringMatching(/tokenization mismatch/) });
    // truncation: the text to maxLength, then so that the image's rows fit; an image that would be cut is a problem
    const full = ok as { inputIds: number[] };
    const imageAt = full.inputIds.indexOf(-200);
    const cut = sampleExample(tok, 'llava_v1', a, { maxLength: full.inputIds.length + 2, imageRows: 5 }) as { inputIds: number[]; labels: number[] };
    expect(cut.inputIds.length).toBe(full.inputIds.length - 2);
    expect(cut.labels.length).toBe(cut.inputIds.length);
    expect(sampleExample(tok, 'llava_v1', a, { maxLength: imageAt + 3, imageRows: 5 })).toEqual({ problem: expect.stringMatching(/image/) });
  });
});

describe('group_by_modality_length', () => {
  // 23 image samples and 14 text-only ones of varied lengths
  const lengths = [...Array.from({ length: 23 }, (_, i) => 5 + ((i * 37) % 50)), ...Array.from({ length: 14 }, (_, i) => -(3 + ((i * 11) % 20)))];
  const batch = 2, world = 3, mega = batch * world;

  it('a permutation whose megabatches hold one modality each, sorted longest first and balanced per device; leftovers last', () => {
    const order = groupByModalityLength(lengths, batch, world, new SeededRandom(7));
    expect([...order].sort((x, y) => x - y)).toEqual(lengths.map((_, i) => i));
    const full = Math.floor(23 / mega) + Math.floor(14 / mega);
    for (let m = 0; m < full; m++) {
      const mb = order.slice(m * mega, (m + 1) * mega);
      expect(new Set(mb.map((i) => lengths[i]! > 0)).size, `megabatch ${m}`).toBe(1);
      // each device's batch of the megabatch: greedy balance keeps the devices' totals within the longest sample
      const totals = Array.from({ length: world }, (_, d) => mb.slice(d * batch, (d + 1) * batch).reduce((s, i) => s + Math.abs(lengths[i]!), 0));
      expect(Math.max(...totals) - Math.min(...totals)).toBeLessThanOrEqual(Math.max(...mb.map((i) => Math.abs(lengths[i]!))));
    }
    const leftover = order.slice(full * mega);
    expect(leftover).toHaveLength((23 % mega) + (14 % mega));
    expect(leftover).toEqual([...leftover].sort((x, y) => x - y));
  });

  it('deterministic for a seed, different across seeds; one modality alone is length-grouped', () => {
    const a = groupByModalityLength(lengths, batch, world, new SeededRandom(7));
    expect(groupByModalityLength(lengths, batch, world, new SeededRandom(7))).toEqual(a);
    expect(groupByModalityLength(lengths, batch, world, new SeededRandom(8))).not.toEqual(a);
    const only = groupByModalityLength(lengths.slice(0, 23), batch, world, new SeededRandom(1));
    expect([...only].sort((x, y) => x - y)).toEqual(Array.from({ length: 23 }, (_, i) => i));
    expect(() => groupByModalityLength([1, 0], 1, 1, new SeededRandom(1))).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
  });
});
