/**
 * trainingExample() token for token against a reference written in Python over Debian's python3-sentencepiece
 * (the HF slow LLaMA tokenizer is SentencePiece + BOS, special-token strings split out; LLaVA's
 * tokenizer_image_token splits on '<image>' and keeps the first chunk's BOS): the label masks of LLaVA's
 * preprocess_v1 (llava_v1 / vicuna_v1), preprocess_llama_2 (mistral_instruct, split on "[/INST] "),
 * preprocess_plain, and LLaVA-Med v1.0's legacy preprocess with _mask_targets, each re-derived from upstream's
 * documented behaviour in Python, on multi-round, image and text-only conversations. Both sides share only the
 * SentencePiece model file and the rendered prompt (renderPrompt has its own goldens).
 */
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { renderPrompt, trainingExample, type Message } from '../../lib/tokenizer/templates.js';
import { python, pythonHas } from '../support/python.js';
import { trainedTestTokenizer } from './corpus.js';

const REFERENCE = String.raw`
import json, sys, sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
BOS, EOS, IGN = sp.bos_id(), sp.eos_id(), -100

def tok(text):
    # tokenizer_image_token over the slow LLaMA tokenizer
    out = [BOS]
    for ci, chunk in enumerate(text.split('<image>')):
        if ci > 0:
            out.append(-200)
        for pi, piece in enumerate(chunk.split('</s>')):
            if pi > 0:
                out.append(EOS)
            if piece:
                out += sp.encode(piece)
    return out

def rounds_mask(prompt, sep, sep2):  # preprocess_v1 (legacy tokenizer) / preprocess_llama_2
    ids = tok(prompt); labels = list(ids)
    cur = 1; labels[0] = IGN
    for rou in prompt.split(sep2):
        if rou == '':
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(tok(rou)); instruction_len = len(tok(parts[0])) - 2
        for i in range(cur, min(cur + instruction_len, len(labels))):
            labels[i] = IGN
        cur += round_len
    for i in range(cur, len(labels)):
        labels[i] = IGN
    if cur != len(ids):
        labels = [IGN] * len(ids)
    return ids, labels

def plain(caption):
    ids = tok('<image>' + caption + '\n'); labels = list(ids)
    n = len(tok('<image>'))
    labels[:n] = [IGN] * n
    return ids, labels

def legacy(system, turns):  # LLaVA-Med v1.0: _add_speaker_and_signal + _mask_targets
    header = system + '\n\n'
    pieces = ['### ' + ('Human' if i % 2 == 0 else 'Assistant') + ': ' + t + '\n' for i, t in enumerate(turns)]
    ids = tok(header + ''.join(pieces) + '### '); labels = list(ids)
    lens = [len(tok(header))] + [len(tok(p)) for p in pieces]
    cur = lens[0]
    labels[:cur] = [IGN] * min(cur, len(labels))
    for i, n in enumerate(lens[1:]):
        if i % 2 == 0:
            for k in range(cur + 2, min(cur + n, len(labels))):
                labels[k] = IGN
        cur += n
    return ids, labels

out = []
for case in json.load(sys.stdin):
    if case['kind'] == 'rounds':
        ids, labels = rounds_mask(case['prompt'], case['sep'], case['sep2'])
    elif case['kind'] == 'plain':
        ids, labels = plain(case['caption'])
    else:
        ids, labels = legacy(case['system'], case['turns'])
    out.append({'ids': ids, 'labels': labels})
print(json.dumps(out))
`;

const conversations: Message[][] = [
  [{ role: 'user', text: 'What is shown?', image: true }, { role: 'assistant', text: 'A chest X-ray.' }],
  [{ role: 'user', text: 'What is shown in the image?', image: true }, { role: 'assistant', text: 'An axial CT of the abdomen.' },
    { role: 'user', text: 'Is there a mass?' }, { role: 'assistant', text: 'Yes, a small mass on the left.' },
    { role: 'user', text: 'How large?' }, { role: 'assistant', text: 'About 12 mm.' }],
  [{ role: 'user', text: 'Which organ is the liver next to?' }, { role: 'assistant', text: 'The right kidney and the gallbladder.' },
    { role: 'user', text: 'And the spleen?' }, { role: 'assistant', text: 'The stomach, on the left side.' }],
];

describe('training labels token for token against the Python reference', () => {
  const { file: modelFile, tok } = trainedTestTokenizer('medllava-golden-');

  it('has its reference', () => {
    expect(pythonHas('sentencepiece'), 'Debian python3-sentencepiece is needed (the CI script installs it)').toBe(true);
  });

  const cases: { name: string; template: string; messages: Message[]; ref: Record<string, unknown> }[] = [];
  for (const [i, conv] of conversations.entries()) {
    const withImage = conv.map((m) => ({ ...m }));
    for (const template of ['llava_v1', 'vicuna_v1'] as const) {
      cases.push({ name: `${template} #${i}`, template, messages: withImage,
        ref: { kind: 'rounds', prompt: renderPrompt(template, withImage, { addGenerationPrompt: false }), sep: ' ASSISTANT: ', sep2: '</s>' } });
    }
    cases.push({ name: `mistral_instruct #${i}`, template: 'mistral_instruct', messages: withImage,
      ref: { kind: 'rounds', prompt: renderPrompt('mistral_instruct', withImage, { addGenerationPrompt: false }), sep: '[/INST] ', sep2: '</s>' } });
    cases.push({ name: `llava_med_v1 (legacy) #${i}`, template: 'llava_med_v1', messages: withImage, ref: {
      kind: 'legacy', system: "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.",
      turns: withImage.map((m) => (m.image ? `<image>\n${m.text}` : m.text)) } });
  }
  cases.push({ name: 'plain', template: 'plain', messages: [{ role: 'user', text: '', image: true }, { role: 'assistant', text: 'Axial CT of the abdomen, no mass.' }],
    ref: { kind: 'plain', caption: 'Axial CT of the abdomen, no mass.' } });

  it('every template and conversation: the same ids and labels', () => {
    const want = JSON.parse(python(REFERENCE, [modelFile], JSON.stringify(cases.map((c) => c.ref)))) as { ids: number[]; labels: number[] }[];
    for (const [k, c] of cases.entries()) {
      const got = trainingExample(tok, c.template, c.messages);
      expect(got.inputIds, c.name).toEqual(want[k]!.ids);
      expect(got.labels, c.name).toEqual(want[k]!.labels);
      expect(got.labels.some((l) => l >= 0), `${c.name}: something is trained`).toBe(true);
    }
  });
});
