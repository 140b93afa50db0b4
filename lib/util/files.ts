/** Atomic file writes: a temporary file beside the target, fsynced, renamed over it. */
import { closeSync, fsyncSync, openSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** `tmp` fsynced, then renamed to `path` (the rename is atomic: readers see the old file or the whole new one). */
export function commit(tmp: string, path: string): void {
  const fd = openSync(tmp, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

export const tmpBeside = (path: string) => join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);

/** Writes `text` to `path` atomically: a temporary file beside it, fsync, rename. */
export function writeFileAtomic(path: string, text: string | Uint8Array): void {
  const tmp = tmpBeside(path);
  writeFileSync(tmp, text);
  commit(tmp, path);
}

