#!/usr/bin/env node
/** The `medllava` command. Commands join with their issues (chat, convert, fixture, train, eval). */
import { Command } from 'commander';

import { getBackendInfo } from '../backend.js';
import { isMedllavaError } from '../errors.js';

function formatBytes(n: number): string {
  return `${(n / 2 ** 30).toFixed(1)} GiB`;
}

export function formatBackendInfo(info: ReturnType<typeof getBackendInfo>): string {
  const lines = [
    `cpu:  ${info.cpu.threads} threads, features ${info.cpu.features.join(' ') || '(none)'}, kernels ${info.cpu.dispatch}`,
    `cuda: ${info.cuda.compiled ? 'compiled' : 'not compiled'}, ${info.cuda.available ? 'available' : 'not available'}`,
  ];
  if (info.cuda.reason) lines.push(`      reason: ${info.cuda.reason}`);
  for (const d of info.cuda.devices)
    lines.push(`      ${d.name} (sm ${d.computeCapability}, ${formatBytes(d.memoryBytes)})`);
  return lines.join('\n');
}

const program = new Command();
program.name('medllava').description('LLaVA-Med and LLaVA-Rad biomedical vision-language models for Node.js');
program
  .command('info')
  .description('show the CPU and CUDA backends this build can use')
  .option('--json', 'print the getBackendInfo() object as JSON')
  .action((opts: { json?: boolean }) => {
    const info = getBackendInfo();
    process.stdout.write(opts.json ? `${JSON.stringify(info, null, 2)}\n` : `${formatBackendInfo(info)}\n`);
  });

program.parseAsync(process.argv).catch((e: unknown) => {
  process.stderr.write(`medllava: ${e instanceof Error ? e.message : String(e)}${isMedllavaError(e) ? ` (${e.code})` : ''}\n`);
  process.exit(1);
});
