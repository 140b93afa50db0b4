/** Where the bundled demo model lives, and the layout of its samples/samples.json (no training code loaded). */
import { join } from 'node:path';

import { packageRoot } from '../native.js';

export function demoModelDir(): string {
  return join(packageRoot(), 'models', 'medllava-demo');
}

export interface DemoSample { image: string; modality: string; truth: Record<string, unknown>; caption: string; questions: { question: string; answer: string; answerType: string }[] }
