// A rank of the data-parallel tests (test/train/mpi.test.ts), started by mpirun: runs train() with the options in
// argv[2] (JSON) and prints rank 0's step events and every rank's result as JSON lines. argv[3] makes rank 1 fail
// 1.5 s in: 'die' (it kills itself with SIGKILL) or 'hang' (its main thread blocks for a minute: alive, never joining
// another collective).
import { train } from '../../dist/lib/index.js';

const options = JSON.parse(process.argv[2]);
const fault = process.argv[3] ?? '';
const rank = Number(process.env.OMPI_COMM_WORLD_RANK ?? 0);
if (fault && rank === 1) {
  setTimeout(() => {
    if (fault === 'die') process.kill(process.pid, 'SIGKILL');
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);
  }, 1500);
}
const run = train(options);
for await (const e of run) if (e.type === 'step') process.stdout.write(`${JSON.stringify(e)}\n`);
const r = await run;
process.stdout.write(`${JSON.stringify({ type: 'done', rank: r.rank, worldSize: r.worldSize, steps: r.steps, finalLoss: r.finalLoss, optimizerBytes: r.optimizerBytes })}\n`);
