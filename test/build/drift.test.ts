/**
 * CMakeLists.txt and binding.gyp must build the same sources (binding.gyp without CUDA). Both read
 * native/sources.json; this checks what each actually compiles, so a hard-coded file in either
 * build, or a source file on disk that no list names, fails here.
 */
import { execSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

import { describe, expect, it } from 'vitest';

import { packageRoot } from '../../lib/native.js';

const root = packageRoot();
const sources = JSON.parse(readFileSync(join(root, 'native/sources.json'), 'utf8')) as Record<string, string[] | string>;
const list = (k: string) => sources[k] as string[];

function gypSources(): string[] {
  const gyp = JSON.parse(readFileSync(join(root, 'binding.gyp'), 'utf8')) as { targets: { sources: string[] }[] };
  const out: string[] = [];
  for (const s of gyp.targets[0]!.sources) {
    const m = /^<!@\((.*)\)$/.exec(s);
    if (m) out.push(...execSync(m[1]!, { cwd: root, encoding: 'utf8' }).trim().split(/\s+/));
    else out.push(s);
  }
  return out;
}

function cmakeCompiled(): string[] {
  const db = JSON.parse(readFileSync(join(root, 'build/compile_commands.json'), 'utf8')) as { file: string }[];
  return db.map((e) => relative(root, e.file)).filter((f) => !f.startsWith('..') && !f.startsWith('node_modules'));
}

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [relative(root, p)];
  });
}

describe('one source list', () => {
  it('binding.gyp compiles exactly core + napi + the no-CUDA backend', () => {
    expect(gypSources().sort()).toEqual([...list('core'), ...list('napi'), ...list('nocuda')].sort());
  });

  it('CMake compiled the same addon sources, with the CUDA backend in place of the stub when nvcc exists', () => {
    const compiled = new Set(cmakeCompiled());
    for (const f of [...list('core'), ...list('napi')]) expect(compiled, f).toContain(f);
    const cuda = list('cuda').every((f) => compiled.has(f));
    const none = list('nocuda').every((f) => compiled.has(f));
    expect(cuda !== none, 'exactly one of the CUDA backend and its stub is compiled').toBe(true);
    // nothing compiled from native/ that the list does not name
    const named = new Set(Object.values(sources).flat());
    for (const f of compiled) if (f.startsWith('native/') || f.startsWith('test/native/')) expect(named, f).toContain(f);
  });

  it('every C++/CUDA source file under native/ is named in native/sources.json', () => {
    const named = new Set(Object.values(sources).flat());
    const onDisk = walk(join(root, 'native')).filter((f) => /\.(cc|cu)$/.test(f));
    for (const f of onDisk) expect(named, `${f} is not in native/sources.json`).toContain(f);
  });
});
