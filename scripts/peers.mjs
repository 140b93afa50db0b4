// Installs the pinned peers of bench/peers.json into .peers/ (gitignored) unless already there.
// Usage: node scripts/peers.mjs — prints the .peers directory.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(root, '.peers');
const pins = JSON.parse(readFileSync(join(root, 'bench', 'peers.json'), 'utf8'));
delete pins['//'];
const wanted = JSON.stringify(pins);
const stamp = join(dir, 'installed.json');
if (!existsSync(stamp) || readFileSync(stamp, 'utf8') !== wanted) {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'medllava-peers', private: true, type: 'module' }));
  const specs = Object.entries(pins).map(([name, version]) => `${name}@${version}`);
  const r = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--omit=optional', '--no-package-lock', ...specs],
    { cwd: dir, stdio: ['ignore', process.stderr, 'inherit'] });
  if (r.status !== 0) process.exit(r.status ?? 1);
  writeFileSync(stamp, wanted);
}
process.stdout.write(`${dir}\n`);
