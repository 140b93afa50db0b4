// npm run ptxas — compiles every CUDA kernel (native/cuda/backend.cu instantiates them all through
// the model code) for sm_80/86/89/90 with `-Xptxas -v`, and writes the per-kernel registers, spills
// and shared memory to build/ptxas-report.txt (the raw log) and build/ptxas-report.json. Exit 1 if
// any kernel spills; 2 if nvcc is missing.
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const nvcc = process.env.CUDACXX || 'nvcc';
const archs = (process.env.MEDLLAVA_CUDA_ARCHS || '80,86,89,90').split(',');
const nodeApi = join(root, 'node_modules', 'node-api-headers', 'include');
const args = ['-c', join(root, 'native/cuda/backend.cu'), '-o', '/dev/null', '-std=c++17', '-O3', '--expt-relaxed-constexpr',
  '-Xptxas=-v', `-I${nodeApi}`, ...archs.flatMap((a) => ['-gencode', `arch=compute_${a},code=sm_${a}`])];
const r = spawnSync(nvcc, args, { cwd: root, encoding: 'utf8', maxBuffer: 256 << 20 });
if (r.error) { console.error(`ptxas report: ${nvcc} could not run (${r.error.message})`); process.exit(2); }
const log = `${r.stdout}${r.stderr}`;
mkdirSync(join(root, 'build'), { recursive: true });
writeFileSync(join(root, 'build', 'ptxas-report.txt'), `$ ${nvcc} ${args.join(' ')}\n${log}`);
if (r.status !== 0) { console.error(log); process.exit(1); }

// ptxas prints, per entry: "Compiling entry function 'X' for 'sm_NN'", then
// "N bytes stack frame, S bytes spill stores, L bytes spill loads", then "Used R registers, … smem …"
const kernels = [];
let cur;
for (const line of log.split('\n')) {
  let m = /Compiling entry function '([^']+)' for '(sm_\d+)'/.exec(line);
  if (m) { cur = { mangled: m[1], arch: m[2], registers: 0, spillStores: 0, spillLoads: 0, stack: 0, smem: 0 }; kernels.push(cur); continue; }
  if (!cur) continue;
  m = /(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads/.exec(line);
  if (m) { cur.stack = +m[1]; cur.spillStores = +m[2]; cur.spillLoads = +m[3]; continue; }
  m = /Used (\d+) registers/.exec(line);
  if (m) { cur.registers = +m[1]; const s = /(\d+) bytes smem/.exec(line); cur.smem = s ? +s[1] : 0; }
}
const demangled = spawnSync('c++filt', { input: kernels.map((k) => k.mangled).join('\n'), encoding: 'utf8' });
const names = demangled.status === 0 ? demangled.stdout.trim().split('\n') : kernels.map((k) => k.mangled);
kernels.forEach((k, i) => { k.name = names[i].replace(/^void /, '').replace(/\(.*$/, '').replace(/medllava::cuda::/g, ''); });
writeFileSync(join(root, 'build', 'ptxas-report.json'), JSON.stringify(kernels, null, 1));
const spilling = kernels.filter((k) => k.spillStores || k.spillLoads);
console.log('| kernel | arch | registers | spill stores / loads (bytes) | stack | smem |');
console.log('|---|---|---|---|---|---|');
for (const k of kernels.sort((a, b) => a.name.localeCompare(b.name) || a.arch.localeCompare(b.arch))) {
  console.log(`| ${k.name} | ${k.arch} | ${k.registers} | ${k.spillStores} / ${k.spillLoads} | ${k.stack} | ${k.smem} |`);
}
console.log(`${kernels.length} kernel builds; ${spilling.length ? `${spilling.length} spill: ${[...new Set(spilling.map((k) => k.name))].join(', ')}` : 'no spills'} (log: build/ptxas-report.txt)`);
process.exit(spilling.length ? 1 : 0);
