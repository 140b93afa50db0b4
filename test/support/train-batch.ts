/** Small training batches for the trainer tests: a deterministic noisy image and two sequences. */
import type { TrainingExample } from '../../lib/index.js';

/** a deterministic noisy test image (PNG) */
export { noiseImage as testImage } from '../../lib/fixtures/dataset.js';

/** two sequences: one with an image and masked labels (5 targets), one text-only, shorter (4 targets);
 * `long`: a third of 40 tokens (padding the batch to T = 40, where the CPU's attention takes its GEMM path) */
export function batchFor(vocab: number, image: Uint8Array, o: { long?: boolean } = {}): TrainingExample[] {
  const t = (x: number) => x % vocab;
  const ids1 = [1, t(31), t(7), -200, t(55), t(19), t(203), t(88), t(4), t(61)];
  const lab1 = [-100, -100, -100, -100, -100, t(19), t(203), t(88), t(4), t(61)];
  const ids2 = [1, t(12), t(99), t(12), t(301), t(7)];
  const lab2 = [-100, t(12), t(99), -100, t(301), t(7)];
  const out: TrainingExample[] = [{ inputIds: ids1, labels: lab1, images: [image] }, { inputIds: ids2, labels: lab2 }];
  if (o.long) {
    const ids3 = Array.from({ length: 40 }, (_, i) => (i === 0 ? 1 : t(17 + ((i * 37) % 211))));
    out.push({ inputIds: ids3, labels: ids3.map((x, i) => (i < 8 ? -100 : x)) });
  }
  return out;
}
