#!/usr/bin/env node
// Runs before `npm test`: the suite judges medllava against independent references that come from
// Debian (python3-torch, python3-numpy, python3-pil, python3-sentencepiece, python3-nltk and spm_train), needs
// cmake + a C++17 compiler to build the test addon, and Open MPI (mpirun, mpi.h) for data parallelism. A missing one is installed with apt-get when we
// are root on a Debian-like machine (our machines are); otherwise the run stops before any test and
// prints the one command that installs them. Nothing is skipped quietly.
//   MEDLLAVA_NO_APT=1   never install: only report what is missing (exit 1)
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const has = (cmd, args) => {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return !r.error && r.status === 0;
};
const pyModule = (m) => has(PYTHON, ['-c', `import ${m}`]);
const onPath = (bin) => has('sh', ['-c', `command -v ${bin}`]);

// [what the tests use it for, is it there, the Debian package that provides it]
const needs = [
  ['python3 (runs the references)', () => onPath(PYTHON), 'python3'],
  ['numpy (safetensors reference)', () => pyModule('numpy'), 'python3-numpy'],
  ['torch (checkpoint and float64 model references)', () => pyModule('torch'), 'python3-torch'],
  ['PIL (LLaVA image preprocessing reference)', () => pyModule('PIL'), 'python3-pil'],
  ['sentencepiece (tokenizer parity)', () => pyModule('sentencepiece'), 'python3-sentencepiece'],
  ['spm_train (trains the tokenizer test models)', () => onPath('spm_train'), 'sentencepiece'],
  ['nltk (the BLEU reference of the report metrics)', () => pyModule('nltk.translate.bleu_score'), 'python3-nltk'],
  ['cmake (native build)', () => onPath('cmake'), 'cmake'],
  ['ninja (native build)', () => onPath('ninja'), 'ninja-build'],
  ['a C++17 compiler', () => onPath('c++') || onPath('g++'), 'g++'],
  ['mpirun (the 2-rank data-parallel tests)', () => onPath('mpirun'), 'openmpi-bin'],
  ['mpi.h (MPI in the native build)', () => ['/usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h', '/usr/lib/aarch64-linux-gnu/openmpi/include/mpi.h',
    '/usr/include/openmpi/mpi.h'].some(existsSync), 'libopenmpi-dev'],
];

const missing = () => needs.filter(([, ok]) => !ok());
let absent = missing();
if (absent.length === 0) process.exit(0);

const pkgs = [...new Set(absent.map(([, , p]) => p))];
const command = `apt-get update && apt-get install -y --no-install-recommends ${pkgs.join(' ')}`;
console.error(`medllava tests: missing ${absent.map(([w]) => w).join(', ')}`);
const root = typeof process.getuid === 'function' && process.getuid() === 0;
if (process.env.MEDLLAVA_NO_APT === '1' || !root || !onPath('apt-get')) {
  console.error(`Install them, then run the tests again:\n  ${root ? '' : 'sudo '}${command}`);
  process.exit(1);
}
console.error(`installing them (root, Debian): ${command}`);
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
for (const args of [['update', '-qq'], ['install', '-y', '-qq', '--no-install-recommends', ...pkgs]]) {
  const r = spawnSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env });
  if (r.status !== 0) {
    console.error(`apt-get ${args[0]} failed (exit ${r.status}); install them by hand:\n  ${command}`);
    process.exit(1);
  }
}
absent = missing();
if (absent.length) {
  console.error(`still missing after apt-get: ${absent.map(([w]) => w).join(', ')}`);
  process.exit(1);
}
console.error('medllava tests: references installed');
