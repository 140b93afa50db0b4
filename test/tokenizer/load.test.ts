/**
 * loadTokenizer from every source a checkpoint may carry: tokenizer.model, a GGUF file's
 * tokenizer.ggml.* metadata, an HF tokenizer.json (built here from the SentencePiece model the way
 * HF's converter does), and an HF directory with added tokens — all id-identical to
 * python3-sentencepiece.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { loadTokenizer } from '../../lib/index.js';
import { native } from '../../lib/native.js';
import { parseSentencePieceModel } from '../../lib/tokenizer/sentencepiece.js';
import { python } from '../support/python.js';
import { PARITY_TEXT, TRAIN_TEXT } from './corpus.js';

const dir = mkdtempSync(join(tmpdir(), 'medllava-tokload-'));
const modelPath = join(dir, 'tokenizer.model');
let reference: number[][] = [];

beforeAll(() => {
  writeFileSync(join(dir, 'train.txt'), TRAIN_TEXT.join('\n'));
  const r = spawnSync('spm_train', [`--input=${join(dir, 'train.txt')}`, `--model_prefix=${join(dir, 'tokenizer')}`,
    '--model_type=bpe', '--vocab_size=1200', '--byte_fallback=true', '--split_digits=true',
    '--normalization_rule_name=identity', '--remove_extra_whitespaces=false', '--allow_whitespace_only_pieces=true',
    '--pad_id=-1']);
  if (r.status !== 0) throw new Error(`spm_train failed: ${r.stderr}`);
  reference = JSON.parse(python(`
import json, sys, sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
print(json.dumps([sp.encode(t) for t in json.loads(sys.stdin.read())]))
`, [modelPath], JSON.stringify(PARITY_TEXT))) as number[][];
}, 60_000);

async function expectParity(source: string) {
  const tok = await loadTokenizer(source);
  PARITY_TEXT.forEach((t, i) => expect(tok.encode(t), JSON.stringify(t)).toEqual(reference[i]));
  expect(tok.bosId).toBe(1);
  expect(tok.eosId).toBe(2);
  return tok;
}

describe('loadTokenizer', () => {
  it('tokenizer.model', async () => {
    await expectParity(modelPath);
  });

  it('a GGUF file with tokenizer.ggml.* metadata (llama.cpp\'s layout)', async () => {
    const m = parseSentencePieceModel(readFileSync(modelPath), modelPath);
    const gguf = join(dir, 'tok.gguf');
    await native().writeGguf(gguf, [
      { key: 'general.architecture', type: 'string', value: 'llama' },
      { key: 'tokenizer.ggml.model', type: 'string', value: 'llama' },
      { key: 'tokenizer.ggml.tokens', type: 'array', elementType: 'string', value: m.pieces.map((p) => p.piece) },
      { key: 'tokenizer.ggml.scores', type: 'array', elementType: 'f32', value: Float32Array.from(m.pieces, (p) => p.score) },
      { key: 'tokenizer.ggml.token_type', type: 'array', elementType: 'i32', value: Int32Array.from(m.pieces, (p) => p.type) },
      { key: 'tokenizer.ggml.bos_token_id', type: 'u32', value: 1 },
      { key: 'tokenizer.ggml.eos_token_id', type: 'u32', value: 2 },
      { key: 'tokenizer.ggml.unknown_token_id', type: 'u32', value: 0 },
    ], [], 32);
    await expectParity(gguf);
  });

  it('an HF tokenizer.json (vocab + merges, as HF converts SentencePiece BPE models)', async () => {
    const json = join(dir, 'tokenizer.json');
    python(`
import json, sys, sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
merges = []
for piece, pid in vocab.items():
    if sp.is_control(pid) or sp.is_unknown(pid) or sp.is_byte(pid):
        continue
    for k in range(1, len(piece)):
        a, b = piece[:k], piece[k:]
        if a in vocab and b in vocab:
            merges.append((pid, vocab[a], vocab[b], a, b))
merges.sort()
tj = {
  'added_tokens': [{'id': 0, 'content': '<unk>', 'special': True}, {'id': 1, 'content': '<s>', 'special': True},
                   {'id': 2, 'content': '</s>', 'special': True}],
  'normalizer': {'type': 'Sequence', 'normalizers': [{'type': 'Prepend', 'prepend': '\u2581'},
                 {'type': 'Replace', 'pattern': {'String': ' '}, 'content': '\u2581'}]},
  'pre_tokenizer': None,
  'model': {'type': 'BPE', 'vocab': vocab, 'merges': [a + ' ' + b for (_, _, _, a, b) in merges],
            'byte_fallback': True, 'unk_token': '<unk>', 'fuse_unk': True},
}
json.dump(tj, open(sys.argv[2], 'w'), ensure_ascii=False)
`, [modelPath, json]);
    await expectParity(json);
  });

  it('an HF directory with added tokens (LLaVA-Med v1.0 adds <im_patch> <im_start> <im_end>)', async () => {
    const hf = join(dir, 'hf');
    mkdirSync(hf);
    copyFileSync(modelPath, join(hf, 'tokenizer.model'));
    writeFileSync(join(hf, 'tokenizer_config.json'), JSON.stringify({
      add_bos_token: true,
      added_tokens_decoder: {
        0: { content: '<unk>', special: true }, 1: { content: '<s>', special: true }, 2: { content: '</s>', special: true },
        1200: { content: '<im_patch>', special: true }, 1201: { content: '<im_start>', special: true },
        1202: { content: '<im_end>', special: true },
      },
    }));
    const tok = await expectParity(hf);
    expect(tok.vocabSize).toBe(1203);
    expect(tok.encodePrompt('<im_start><im_patch><im_patch><im_end>\nWhat?')).toEqual(
      [1, 1201, 1200, 1200, 1202, ...tok.encode('\nWhat?')]);
    expect(tok.decode([1201, 1200])).toBe('');
  });

  it('bad sources are refused with a code', async () => {
    await expect(loadTokenizer(join(dir, 'missing.model'))).rejects.toMatchObject({ code: 'E_IO' });
    const empty = join(dir, 'empty-dir');
    mkdirSync(empty);
    await expect(loadTokenizer(empty)).rejects.toMatchObject({ code: 'E_IO', message: expect.stringMatching(/neither/) });
    writeFileSync(join(dir, 'bad.json'), '{"model": {"type": "WordPiece"}}');
    await expect(loadTokenizer(join(dir, 'bad.json'))).rejects.toMatchObject({ code: 'E_UNSUPPORTED' });
    writeFileSync(join(dir, 'broken.json'), '{');
    await expect(loadTokenizer(join(dir, 'broken.json'))).rejects.toMatchObject({ code: 'E_FORMAT' });
  });
});
