/** llama.cpp (node-llama-cpp, CPU) as a reference: its next-token distribution after a prompt. */
import { importPeer } from './peers.js';

interface Peer {
  getLlama(o: object): Promise<{ loadModel(o: { modelPath: string }): Promise<{
    createContext(o: object): Promise<{ getSequence(): {
      controlledEvaluate(i: unknown[]): Promise<({ next?: { probabilities?: Map<number, number> } } | undefined)[]>;
      evaluate(t: number[], o: object): AsyncGenerator<number, void, void | number | number[]> }; dispose(): Promise<void> }>;
    dispose(): Promise<void> }> }>;
  LlamaLogLevel: { error: unknown };
}

/**
 * llama.cpp's probabilities of the token after `tokens` (token id → p, as its sampler reports
 * them), and, with `greedy` > 0, that many greedy tokens after the prompt.
 */
export async function llamaCppNext(file: string, tokens: number[], o: { threads?: number; greedy?: number } = {}):
  Promise<{ probs: Map<number, number>; greedy: number[] }> {
  const nlc = await importPeer<Peer>('node-llama-cpp', 'dist/index.js');
  const llama = await nlc.getLlama({ gpu: false, build: 'never', logLevel: nlc.LlamaLogLevel.error,
    ...(o.threads ? { maxThreads: o.threads } : {}) });
  const model = await llama.loadModel({ modelPath: file });
  const contextSize = Math.max(64, tokens.length + (o.greedy ?? 0) + 8);
  const ctxOptions = { contextSize, batchSize: Math.min(128, contextSize), ...(o.threads ? { threads: { ideal: o.threads, min: o.threads } } : {}) };
  const lctx = await model.createContext(ctxOptions);
  const res = await lctx.getSequence().controlledEvaluate(tokens.map((t, i) => (i === tokens.length - 1
    ? [t, { generateNext: { probabilities: true } }] : t)));
  const probs = res[res.length - 1]!.next!.probabilities!;
  await lctx.dispose();
  const greedy: number[] = [];
  if (o.greedy) {
    const g = await model.createContext(ctxOptions);
    for await (const t of g.getSequence().evaluate(tokens, { temperature: 0, yieldEogToken: true })) {
      greedy.push(t);
      if (greedy.length >= o.greedy) break;
    }
    await g.dispose();
  }
  await model.dispose();
  return { probs, greedy };
}

/** max |log p_llama.cpp − ours| over the tokens llama.cpp gives p > `minP`, and how many those are. */
export function logpGap(probs: Map<number, number>, ours: ArrayLike<number>, minP = 1e-4): { worst: number; compared: number } {
  let worst = 0;
  let compared = 0;
  for (const [id, p] of probs) {
    if (p <= minP) continue;
    compared++;
    worst = Math.max(worst, Math.abs(Math.log(p) - ours[id]!));
  }
  return { worst, compared };
}
