/** The tiny LLaVA dataset of lib/fixtures/dataset.ts, and the fixture + dataset the curriculum-trainer tests share. */
import { join } from 'node:path';

import { generateFixture } from '../../lib/fixtures/generate.js';
import { writeTinyDataset, type TinyDataset } from '../../lib/fixtures/dataset.js';

export { writeTinyDataset as tinyDataset, type TinyDataset } from '../../lib/fixtures/dataset.js';

/** a tiny LLaVA-Med v1.5 checkpoint and 12 samples under `root` */
export async function trainFixture(root: string): Promise<{ v15: string; data: TinyDataset }> {
  const v15 = ((await generateFixture({ layout: 'llava-med-v1.5', out: join(root, 'v15') })) as { dir: string }).dir;
  return { v15, data: await writeTinyDataset(join(root, 'data'), 12) };
}
