/**
 * Conversation templates: golden renderings written from LLaVA's conversation.py definitions
 * (system prompts, role names, separators), and training labels that mask all but the answers.
 */
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { IGNORE_INDEX, renderPrompt, trainingExample, type Message } from '../../lib/tokenizer/templates.js';
import { IMAGE_TOKEN_INDEX } from '../../lib/tokenizer/tokenizer.js';
import { trainedTestTokenizer } from './corpus.js';

const chat: Message[] = [
  { role: 'user', text: 'What is shown?', image: true },
  { role: 'assistant', text: 'A chest X-ray.' },
  { role: 'user', text: 'Any effusion?' },
];
const LLAVA_SYSTEM = "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.";
const VICUNA_SYSTEM = "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";

describe('golden renderings', () => {
  it('llava_v1 (LLaVA-1.5, LLaVA-Rad)', () => {
    expect(renderPrompt('llava_v1', chat)).toBe(
      `${LLAVA_SYSTEM} USER: <image>\nWhat is shown? ASSISTANT: A chest X-ray.</s>USER: Any effusion? ASSISTANT:`);
  });
  it('vicuna_v1', () => {
    expect(renderPrompt('vicuna_v1', chat.slice(0, 1))).toBe(`${VICUNA_SYSTEM} USER: <image>\nWhat is shown? ASSISTANT:`);
  });
  it('mistral_instruct (LLaVA-Med v1.5): LLaMA-2 separator style, no system block when the system prompt is empty', () => {
    expect(renderPrompt('mistral_instruct', chat)).toBe(
      '[INST] <image>\nWhat is shown? [/INST] A chest X-ray. </s>[INST] Any effusion? [/INST]');
    expect(renderPrompt('mistral_instruct', chat.slice(0, 1), { systemPrompt: 'Be brief.' })).toBe(
      '[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n<image>\nWhat is shown? [/INST]');
  });
  it('llava_med_v1 (LLaVA-Med v1.0): its system prompt, the example turn, ### separators', () => {
    expect(renderPrompt('llava_med_v1', chat.slice(0, 1))).toBe(
      'You are LLaVA-Med, a large language and vision assistant trained by a group of researchers at Microsoft, based on the general domain LLaVA architecture.You are able to understand the visual content that the user provides, and assist the user with a variety of medical and clinical research tasks using natural language.Follow the instructions carefully and explain your answers in detail.' +
      '###Human: Hi!###Assistant: Hi there!  How can I help you today?\n###Human: <image>\nWhat is shown?###Assistant:');
  });
  it('plain (stage-1 alignment)', () => {
    expect(renderPrompt('plain', [{ role: 'user', text: '', image: true }, { role: 'assistant', text: 'Axial CT of the abdomen.' }],
      { addGenerationPrompt: false })).toBe('<image>Axial CT of the abdomen.\n');
  });
  it('the image message: <image> moved to the front, stripped', () => {
    expect(renderPrompt('llava_v1', [{ role: 'user', text: '  Describe <image> this.  ', image: true }])).toBe(
      `${LLAVA_SYSTEM} USER: <image>\nDescribe  this. ASSISTANT:`);
  });
  it('bad conversations are refused', () => {
    expect(() => renderPrompt('llava_v1', [{ role: 'assistant', text: 'x' }])).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
    expect(() => renderPrompt('nope', chat)).toThrow(expect.objectContaining({ code: 'E_ARGUMENT', message: expect.stringMatching(/known: /) }));
  });
});

describe('tokenizer_image_token and training labels', () => {
  const { file: modelFile, tok } = trainedTestTokenizer('medllava-tpl-');

  it('encodePrompt: BOS once, -200 at each <image>, special-token strings as their ids', () => {
    const ids = tok.encodePrompt('USER: <image>\nWhat?</s>ASSISTANT:');
    expect(ids[0]).toBe(tok.bosId);
    expect(ids.filter((i) => i === IMAGE_TOKEN_INDEX).length).toBe(1);
    expect(ids.filter((i) => i === tok.bosId).length).toBe(1);
    expect(ids).toContain(tok.eosId);
    const at = ids.indexOf(IMAGE_TOKEN_INDEX);
    // each chunk is a separate SentencePiece encoding (with its dummy prefix), as upstream
    expect(ids.slice(1, at)).toEqual(tok.encode('USER: '));
    expect(tok.encodePrompt('<image>')).toEqual([tok.bosId, IMAGE_TOKEN_INDEX]);
    expect(tok.encodePrompt('<image>\n<image>')).toEqual([tok.bosId, IMAGE_TOKEN_INDEX, ...tok.encode('\n'), IMAGE_TOKEN_INDEX]);
  });

  for (const template of ['llava_v1', 'vicuna_v1', 'mistral_instruct'] as const) {
    it(`${template}: labels keep exactly the answers (and their </s>)`, () => {
      const conv: Message[] = [...chat, { role: 'assistant', text: 'No effusion is seen.' }];
      const { inputIds, labels } = trainingExample(tok, template, conv);
      expect(labels.length).toBe(inputIds.length);
      const kept = inputIds.filter((_, i) => labels[i] !== IGNORE_INDEX);
      expect(kept.length).toBeGreaterThan(0);
      const text = tok.decode(kept);
      expect(text).toContain('A chest X-ray.');
      expect(text).toContain('No effusion is seen.');
      expect(text).not.toMatch(/USER|What is shown|Any effusion|INST/);
      expect(kept.filter((i) => i === tok.eosId).length).toBe(2);
      for (let i = 0; i < labels.length; i++) if (labels[i] !== IGNORE_INDEX) expect(labels[i]).toBe(inputIds[i]);
    });
  }

  it('plain: only the caption (and the newline) is trained', () => {
    const { inputIds, labels } = trainingExample(tok, 'plain',
      [{ role: 'user', text: '', image: true }, { role: 'assistant', text: 'Axial CT of the abdomen.' }]);
    expect(inputIds.slice(0, 2)).toEqual([tok.bosId, IMAGE_TOKEN_INDEX]);
    expect(labels.slice(0, 2)).toEqual([IGNORE_INDEX, IGNORE_INDEX]);
    expect(tok.decode(inputIds.slice(2))).toBe('Axial CT of the abdomen.\n');
    expect(labels.slice(2)).toEqual(inputIds.slice(2));
  });
});
