/**
 * Our SentencePiece BPE trainer (lib/tokenizer/train.ts) against Debian's spm_train: on the same corpus and the
 * same settings (BPE, identity normalization, dummy prefix, byte fallback, whole characters coverage, digits not
 * split) the vocabulary must be the same pieces with the same scores in the same order (on text in Latin script:
 * other scripts are one letter class here, and runs of one repeated symbol are counted differently); and the model file we
 * write must encode like Debian's python3-sentencepiece on held-out text (unseen characters through byte fallback).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { Rand } from '../../lib/synth/canvas.js';
import { ruleConversation } from '../../lib/synth/text.js';
import { worldCase } from '../../lib/synth/world.js';
import { parseSentencePieceModel } from '../../lib/tokenizer/sentencepiece.js';
import { SentencePieceTokenizer } from '../../lib/tokenizer/tokenizer.js';
import { trainBpe } from '../../lib/tokenizer/train.js';
import { python } from '../support/python.js';
import { CLINICAL } from './corpus.js';

const dir = mkdtempSync(join(tmpdir(), 'medllava-bpe-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function worldText(n: number, seed: number): string[] {
  const out: string[] = [];
  const rng = new Rand(seed);
  for (let i = 0; i < n; i++) {
    const c = worldCase(i, seed);
    out.push(c.caption, ...c.mentions, ...ruleConversation(c.truth, rng).map((t) => t.value));
  }
  return out;
}

function spmTrain(lines: string[], vocab: number, name: string): { vocab: [string, number][]; model: string } {
  writeFileSync(join(dir, `${name}.txt`), `${lines.join('\n')}\n`);
  const prefix = join(dir, name);
  const r = spawnSync('spm_train', [`--input=${prefix}.txt`, `--model_prefix=${prefix}`, '--model_type=bpe', `--vocab_size=${vocab}`,
    '--byte_fallback=true', '--character_coverage=1.0', '--normalization_rule_name=identity', '--add_dummy_prefix=true',
    '--remove_extra_whitespaces=false', '--split_digits=false', '--unk_id=0', '--bos_id=1', '--eos_id=2', '--pad_id=-1',
    '--max_sentence_length=100000'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`spm_train failed: ${r.stderr.slice(-2000)}`);
  const v = readFileSync(`${prefix}.vocab`, 'utf8').trim().split('\n').map((l) => { const [p, s] = l.split('\t'); return [p!, Number(s)] as [string, number]; });
  return { vocab: v, model: `${prefix}.model` };
}

describe('trainBpe', () => {
  it.each([
    ['the synthetic world\'s captions, mentions and conversations', () => worldText(400, 5), 1000],
    ['the tokenizer tests\' clinical English sentences', () => CLINICAL.filter((l) => !l.includes('###')).flatMap((l) => l.split('\n')), 400],
  ])('gives spm_train\'s vocabulary on %s', (_name, text, vocab) => {
    const lines = text().filter((l) => l.trim());
    const ours = trainBpe(lines, { vocabSize: vocab });
    const ref = spmTrain(lines, vocab, `ref${vocab}`);
    expect(ours.pieces.length).toBe(vocab);
    const mismatches = ours.pieces.map((p, i) => [i, p.piece, p.score, ...ref.vocab[i]!] as const).filter(([, p, s, rp, rs]) => p !== rp || s !== rs);
    expect(mismatches.slice(0, 5)).toEqual([]);
  });

  it('writes a tokenizer.model that python3-sentencepiece encodes as we do, unseen characters by bytes', () => {
    const { model } = trainBpe(worldText(300, 9), { vocabSize: 800 });
    const file = join(dir, 'ours.model');
    writeFileSync(file, model);
    const held = [...worldText(20, 77).slice(0, 40), 'Zygote µm-scale ünïcode 😀 lesions, 42 mm!', '  two  spaces', ''];
    const ref = JSON.parse(python(`
import json, sys, sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
print(json.dumps([sp.encode(t) for t in json.loads(sys.stdin.read())]))
`, [file], JSON.stringify(held))) as number[][];
    const tok = new SentencePieceTokenizer(parseSentencePieceModel(model, 'ours.model'));
    expect(held.map((t) => tok.encode(t, { addBos: false }))).toEqual(ref);
  });

  it('refuses a vocabulary too small for the specials, bytes and characters', () => {
    expect(() => trainBpe(['abc def'], { vocabSize: 100 })).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
  });
});
