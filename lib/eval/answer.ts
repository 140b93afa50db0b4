/** What every evaluation runner does per question: a fresh chat (no earlier turn leaks in), one message, the reply trimmed. */
import { readFileSync } from 'node:fs';

import { medllavaError } from '../errors.js';
import type { GenerateOptions } from '../generate.js';
import type { ChatMessage, Model } from '../model/model.js';

export async function answerOnce(model: Model, message: ChatMessage, options: GenerateOptions): Promise<string> {
  const chat = model.createChat();
  try {
    return (await chat.send(message, options)).text.trim();
  } finally {
    chat.dispose();
  }
}

/** a JSON list or JSON lines → the records; E_IO when unreadable, E_FORMAT when not JSON or not a list */
export function readRecords(path: string, what: string): Record<string, unknown>[] {
  let rows: unknown;
  try {
    const text = readFileSync(path, 'utf8');
    rows = text.trimStart().startsWith('[') ? JSON.parse(text) : text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as unknown);
  } catch (e) {
    throw medllavaError((e as NodeJS.ErrnoException).code === 'ENOENT' ? 'E_IO' : 'E_FORMAT', `${path}: ${(e as Error).message}`);
  }
  if (!Array.isArray(rows)) throw medllavaError('E_FORMAT', `${path}: expected a list of ${what}`);
  return rows as Record<string, unknown>[];
}
