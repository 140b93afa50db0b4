import { readFile } from 'node:fs/promises';

import { medllavaError } from '../errors.js';

/** Reads a JSON file: E_IO when it cannot be read, E_FORMAT when it is not JSON. */
export async function readJsonFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw medllavaError('E_IO', `cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw medllavaError('E_FORMAT', `${path} is not valid JSON: ${(e as Error).message}`);
  }
}
