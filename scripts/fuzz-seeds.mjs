// Writes valid seed files for the fuzzers with the addon's own writers (build/Release must exist).
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const addon = createRequire(import.meta.url)(join(root, 'build', 'Release', 'medllava.node'));
const [stDir, ggufDir, pickleDir] = process.argv.slice(2);
const f = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
await addon.writeSafetensors(join(stDir, 'a.safetensors'), [
  { name: 'w', dtype: 'F32', shape: [8, 8], data: f },
  { name: 'b', dtype: 'F16', shape: [4], data: new Uint16Array([1, 2, 3, 4]) },
], { format: 'pt' });
await addon.writeSafetensors(join(stDir, 'empty.safetensors'), [], {});
const meta = [
  { key: 'general.architecture', type: 'string', value: 'llama' },
  { key: 'llama.context_length', type: 'u32', value: 64 },
  { key: 'tokenizer.ggml.tokens', type: 'array', elementType: 'string', value: ['a', 'b'] },
  { key: 'tokenizer.ggml.scores', type: 'array', elementType: 'f32', value: new Float32Array([0, 1]) },
];
const kq = new Uint8Array(144 + 176 + 210);
await addon.writeGguf(join(ggufDir, 'a.gguf'), meta, [
  { name: 'f32', dims: [32, 2], type: 'F32', data: f },
  { name: 'q8', dims: [32, 2], type: 'Q8_0', data: f },
  { name: 'q4', dims: [32, 2], type: 'Q4_0', data: f },
  { name: 'q4k', dims: [256], type: 'Q4_K', data: kq.subarray(0, 144) },
  { name: 'q5k', dims: [256], type: 'Q5_K', data: kq.subarray(144, 320) },
  { name: 'q6k', dims: [256], type: 'Q6_K', data: kq.subarray(320) },
], 32);
await addon.writeGguf(join(ggufDir, 'meta-only.gguf'), meta, [], 32);
// a PyTorch zip checkpoint, written by the fixture writer (dist/ must be built)
const { writeTorchCheckpoint } = await import(join(root, 'dist', 'lib', 'fixtures', 'torch-writer.js'));
await writeTorchCheckpoint(join(pickleDir, 'a.bin'), [
  { name: 'w', dtype: 'F32', shape: [8, 8], data: f },
  { name: 'h', dtype: 'F16', shape: [4], data: new Uint16Array([1, 2, 3, 4]) },
  { name: 'i', dtype: 'I64', shape: [2], data: new BigInt64Array([1n, 2n]) },
]);
