/** The independent reference implementations (llama.cpp through npm), installed on demand. */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { packageRoot } from '../../lib/native.js';

let dir: string | undefined;

export function peersDir(): string {
  dir ??= execFileSync(process.execPath, [join(packageRoot(), 'scripts', 'peers.mjs')], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
  return dir;
}

export async function importPeer<T>(name: string, entry: string): Promise<T> {
  return (await import(pathToFileURL(join(peersDir(), 'node_modules', name, entry)).href)) as T;
}
