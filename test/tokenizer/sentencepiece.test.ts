/**
 * Tokenizer parity with Debian's python3-sentencepiece: models trained here by spm_train (Debian's
 * `sentencepiece`) in the LLaMA configuration — BPE, identity normalization, byte fallback,
 * split digits, whitespace-only pieces — must give 100 % identical ids on a varied corpus.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { parseSentencePieceModel } from '../../lib/tokenizer/sentencepiece.js';
import { SentencePieceTokenizer } from '../../lib/tokenizer/tokenizer.js';
import { python, pythonHas } from '../support/python.js';
import { PARITY_TEXT, TRAIN_TEXT } from './corpus.js';

const dir = mkdtempSync(join(tmpdir(), 'medllava-spm-'));

function train(name: string, vocab: number, extra: string[] = []): string {
  const prefix = join(dir, name);
  const r = spawnSync('spm_train', [`--input=${join(dir, 'train.txt')}`, `--model_prefix=${prefix}`, '--model_type=bpe',
    `--vocab_size=${vocab}`, '--byte_fallback=true', '--split_digits=true', '--normalization_rule_name=identity',
    '--remove_extra_whitespaces=false', '--allow_whitespace_only_pieces=true', '--character_coverage=0.9995',
    '--unk_id=0', '--bos_id=1', '--eos_id=2', '--pad_id=-1', '--max_sentence_length=100000', ...extra], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`spm_train failed: ${r.stderr.slice(-2000)}`);
  return `${prefix}.model`;
}

function reference(model: string, texts: string[]): { ids: number[][]; decoded: string[] } {
  return JSON.parse(python(`
import json, sys, sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
texts = json.loads(sys.stdin.read())
ids = [sp.encode(t) for t in texts]
print(json.dumps({'ids': ids, 'decoded': [sp.decode(i) for i in ids]}))
`, [model], JSON.stringify(texts))) as { ids: number[][]; decoded: string[] };
}

const models: Record<string, string> = {};

beforeAll(() => {
  expect(pythonHas('sentencepiece'), 'Debian python3-sentencepiece is needed (the CI script installs it)').toBe(true);
  writeFileSync(join(dir, 'train.txt'), TRAIN_TEXT.join('\n'));
  models['llama-like 1500'] = train('m1500', 1500);
  models['llama-like 700'] = train('m700', 700);
  models['with user symbols'] = train('muser', 900, ['--user_defined_symbols=<image>,<im_patch>,[INST]']);
}, 120_000);

describe('SentencePiece BPE parity with python3-sentencepiece', () => {
  for (const name of ['llama-like 1500', 'llama-like 700', 'with user symbols']) {
    it(`${name}: identical ids on the whole corpus`, () => {
      const path = models[name]!;
      const tok = new SentencePieceTokenizer(parseSentencePieceModel(readFileSync(path), path));
      const texts = [...PARITY_TEXT, ...TRAIN_TEXT.slice(0, 200)];
      const ref = reference(path, texts);
      let same = 0;
      const mismatches: string[] = [];
      texts.forEach((t, i) => {
        const ours = tok.encode(t);
        if (JSON.stringify(ours) === JSON.stringify(ref.ids[i])) same++;
        else if (mismatches.length < 5) mismatches.push(`${JSON.stringify(t)}: ours ${JSON.stringify(ours)} vs ${JSON.stringify(ref.ids[i])}`);
      });
      expect(mismatches).toEqual([]);
      expect(same).toBe(texts.length);
    });

    it(`${name}: decode matches python and round-trips`, () => {
      const path = models[name]!;
      const tok = new SentencePieceTokenizer(parseSentencePieceModel(readFileSync(path), path));
      const ref = reference(path, PARITY_TEXT);
      PARITY_TEXT.forEach((t, i) => {
        expect(tok.decode(ref.ids[i]!), JSON.stringify(t)).toBe(ref.decoded[i]);
      });
    });
  }

  it('the streaming decoder never splits a UTF-8 character and adds up to decode()', () => {
    const path = models['llama-like 700']!;
    const tok = new SentencePieceTokenizer(parseSentencePieceModel(readFileSync(path), path));
    for (const t of ['🫁 lungs 🫁 and 中文 text', '👨‍⚕️ doctor 😀', 'Привет мир']) {
      const ids = tok.encode(t);
      const d = tok.createDecoder();
      const parts = ids.map((id) => d.push(id));
      parts.push(d.flush());
      for (const p of parts) expect(p.includes('\ufffd'), `a split character in ${JSON.stringify(parts)}`).toBe(false);
      expect(parts.join('')).toBe(tok.decode(ids));
      expect(parts.join('')).toBe(t);
    }
  });

  it('byte fallback covers characters outside the vocabulary', () => {
    const path = models['llama-like 700']!;
    const tok = new SentencePieceTokenizer(parseSentencePieceModel(readFileSync(path), path));
    const ids = tok.encode('𝔘');
    expect(ids.slice(1).map((i) => tok.piece(i))).toEqual(['<0xF0>', '<0x9D>', '<0x94>', '<0x98>']);
  });
});

describe('bad tokenizer files', () => {
  it('garbage → E_FORMAT; a unigram model → E_UNSUPPORTED', () => {
    expect(() => parseSentencePieceModel(new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), 'bad'))
      .toThrow(expect.objectContaining({ code: 'E_FORMAT' }));
    expect(() => parseSentencePieceModel(new Uint8Array(0), 'empty')).toThrow(expect.objectContaining({ code: 'E_FORMAT' }));
    const prefix = join(dir, 'uni');
    spawnSync('spm_train', [`--input=${join(dir, 'train.txt')}`, `--model_prefix=${prefix}`, '--model_type=unigram',
      '--vocab_size=300', '--normalization_rule_name=identity', '--character_coverage=0.98']);
    expect(() => parseSentencePieceModel(readFileSync(`${prefix}.model`), 'uni'))
      .toThrow(expect.objectContaining({ code: 'E_UNSUPPORTED', message: expect.stringMatching(/only BPE/) }));
  });
});
