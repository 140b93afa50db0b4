/** A tiny LLaVA dataset on disk for the curriculum-trainer tests: PNG images, caption pairs (align) and
 * conversations (instruct / lora), with deterministic content. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { testImage } from './train-batch.js';

const WORDS = ['left', 'right', 'lung', 'nodule', 'opacity', 'clear', 'heart', 'normal', 'mass', 'effusion', 'small', 'large'];

export interface TinyDataset { dir: string; images: string; captions: string; conversations: string }

/** `n` images with an align caption each and a one-round conversation each (a third of them text-only). */
export async function tinyDataset(dir: string, n = 12): Promise<TinyDataset> {
  const images = join(dir, 'images');
  mkdirSync(images, { recursive: true });
  const captions: unknown[] = [], conversations: unknown[] = [];
  for (let i = 0; i < n; i++) {
    const file = `img${i}.png`;
    writeFileSync(join(images, file), await testImage(100 + i, 40 + (i % 3) * 8));
    const w = (k: number) => WORDS[(i * 5 + k * 3) % WORDS.length]!;
    const caption = `${w(0)} ${w(1)} ${w(2)}.`;
    captions.push({ id: `cap-${i}`, image: file, conversations: [
      { from: 'human', value: '<image>\nDescribe the image.' }, { from: 'gpt', value: caption }] });
    const withImage = i % 3 !== 2;
    conversations.push({ id: `conv-${i}`, ...(withImage ? { image: file } : {}), conversations: [
      { from: 'human', value: withImage ? `What is seen in the ${w(3)}?\n<image>` : `Is the ${w(3)} ${w(4)}?` },
      { from: 'gpt', value: `${w(1)} ${w(2)} ${w(0)}` }] });
  }
  const cap = join(dir, 'captions.json'), conv = join(dir, 'conversations.json');
  writeFileSync(cap, JSON.stringify(captions));
  writeFileSync(conv, JSON.stringify(conversations));
  return { dir, images, captions: cap, conversations: conv };
}
