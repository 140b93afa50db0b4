/**
 * Data-parallel training over MPI: which rank this process is, and the few collectives the trainer needs.
 * A process started by `mpirun` (Open MPI sets OMPI_COMM_WORLD_SIZE) initialises MPI through the addon, which
 * opens the system's libmpi at run time; any other process is rank 0 of 1 and never touches MPI. Every wait on
 * the other ranks has a deadline (E_TIMEOUT): a rank that died or hangs fails the others instead of hanging them.
 */
import { medllavaError } from '../errors.js';
import { native } from '../native.js';

export interface World {
  rank: number;
  size: number;
  /** sums in place over every rank */
  sum(values: Float64Array): Promise<void>;
  barrier(): Promise<void>;
  /** root's bytes to every rank (every rank passes a buffer of the same length) */
  bcast(bytes: Uint8Array, root: number): Promise<void>;
  timeoutMs: number;
}

const single: World = {
  rank: 0, size: 1, timeoutMs: 0,
  sum: async () => {},
  barrier: async () => {},
  bcast: async () => {},
};

/** Whether this process was started by mpirun (Open MPI's or a PMIx launcher's environment). */
export function launchedByMpi(): boolean {
  const n = Number(process.env['OMPI_COMM_WORLD_SIZE'] ?? process.env['PMIX_SIZE'] ?? process.env['PMI_SIZE'] ?? '');
  return Number.isInteger(n) && n > 1;
}

let world: World | undefined;

/**
 * This process's place among the ranks. `mode` 'auto' (default): MPI when launched by mpirun with more than one
 * rank; 'mpi': MPI (E_UNSUPPORTED when it cannot); 'none': one process.
 */
export function distributedWorld(mode: 'auto' | 'mpi' | 'none' = 'auto', timeoutMs = 10 * 60_000): World {
  if (mode === 'none' || (mode === 'auto' && !launchedByMpi())) return single;
  if (world) {
    world.timeoutMs = timeoutMs;
    return world;
  }
  const mpi = native().mpi;
  const info = mpi.init();
  if (!info.initialized) throw medllavaError('E_UNSUPPORTED', info.reason ?? 'MPI could not be initialised');
  process.once('exit', () => mpi.finalize());
  const w: World = {
    rank: info.rank, size: info.size, timeoutMs,
    sum: (values) => mpi.allreduce(values, 'sum', w.timeoutMs),
    barrier: () => mpi.barrier(w.timeoutMs),
    bcast: (bytes, root) => mpi.bcast(bytes, root, w.timeoutMs),
  };
  world = w;
  return w;
}
