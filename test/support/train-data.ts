/** The tiny LLaVA dataset of lib/fixtures/dataset.ts, for the curriculum-trainer tests. */
export { writeTinyDataset as tinyDataset, type TinyDataset } from '../../lib/fixtures/dataset.js';
