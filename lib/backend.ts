import { cudaProbedSync, native } from './native.js';

export interface CudaDeviceInfo {
  name: string;
  memoryBytes: number;
  /** e.g. '8.6' */
  computeCapability: string;
}

export interface BackendInfo {
  cpu: {
    /** threads the CPU kernels use (default: physical cores) */
    threads: number;
    /** e.g. ['avx2', 'fma', 'f16c'] */
    features: string[];
    /** which CPU kernel family runs: 'avx512' (F/BW/VL, + VNNI where present), 'avx2' (AVX2+FMA+F16C) or the portable 'scalar' one */
    dispatch: 'avx512' | 'avx2' | 'scalar';
  };
  cuda: {
    /** this build contains the CUDA backend */
    compiled: boolean;
    /** a usable device was found (and the load-time probe succeeded) */
    available: boolean;
    /** why CUDA is not available, in CUDA's own words where it has them */
    reason?: string;
    devices: CudaDeviceInfo[];
  };
}

/**
 * What this machine and this build of medllava can run on. The first call in a process waits for
 * the CUDA probe (a child process that initialises CUDA first, so a broken driver cannot crash
 * this one) unless loadModel() has already run it asynchronously.
 */
export function getBackendInfo(): BackendInfo {
  cudaProbedSync();
  const info = native().getBackendInfo();
  return {
    cpu: { threads: info.cpu.threads, features: [...info.cpu.features], dispatch: info.cpu.dispatch },
    cuda: {
      compiled: info.cuda.compiled,
      available: info.cuda.available,
      ...(info.cuda.reason !== undefined ? { reason: info.cuda.reason } : {}),
      devices: info.cuda.devices.map((d) => ({ ...d })),
    },
  };
}
