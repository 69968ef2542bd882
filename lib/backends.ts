// Which backends this build has and why the others are unavailable (for `repvgg info` and `backend: 'auto'`).

import { cudaStatus } from './backend/cuda.js';
import { callNativeSync, loadCpuAddon } from './backend/native.js';
import { ArgumentValueError } from './errors.js';
import { checkNice } from './nice.js';

export interface BackendStatus {
  name: 'cpu' | 'cuda';
  available: boolean;
  /** What was found (library version, ISA, device) or why it is unavailable. */
  details: Record<string, string | boolean>;
}

export function listBackends(): BackendStatus[] {
  const backends: BackendStatus[] = [];
  try {
    const info = loadCpuAddon().info();
    backends.push({
      name: 'cpu',
      available: true,
      details: { library: `${info.library} ${info.libraryVersion}`, isa: info.isa, bf16: info.bf16, nativeBf16: info.nativeBf16, int8Vnni: info.int8Vnni },
    });
  } catch (err) {
    backends.push({ name: 'cpu', available: false, details: { reason: err instanceof Error ? err.message : String(err) } });
  }
  const cuda = cudaStatus();
  backends.push({ name: 'cuda', available: cuda.available, details: { ...(cuda.reason !== undefined && { reason: cuda.reason }), ...cuda.details } });
  return backends;
}

/** What the CPU backend can run on this machine's CPU (oneDNN's instruction set and the precisions that depend on it). */
export interface CpuCapabilities {
  /** oneDNN's instruction set here, e.g. 'avx2', 'avx512_core_bf16'. */
  isa: string;
  /** Whether precision 'bf16' can run: oneDNN has bfloat16 convolutions for this CPU (AVX-512 or newer). */
  bf16: boolean;
  /**
   * Whether u8 x s8 products are summed exactly (VNNI). Without it oneDNN adds pairs of products in int16 with
   * saturation, so int8 weights must stay within +-63 (calibrate() then quantizes them to 7 bits; see lib/quant).
   */
  int8Vnni: boolean;
  /** Whether this CPU multiplies bfloat16 natively (AVX512-BF16): int8 networks then run their classifier in bf16. */
  nativeBf16: boolean;
}

/** @throws BackendError when the CPU addon cannot be loaded. */
export function cpuCapabilities(): CpuCapabilities {
  const info = callNativeSync(() => loadCpuAddon().info());
  return { isa: info.isa, bf16: info.bf16, int8Vnni: info.int8Vnni, nativeBf16: info.nativeBf16 };
}

/**
 * @throws ArgumentValueError naming `option` and the CPU's instruction set when oneDNN has no bfloat16 convolutions
 * for this CPU (AVX2), so that precision 'bf16' cannot run on the CPU backend.
 */
export function requireBf16Convolutions(option: string): void {
  const cpu = cpuCapabilities();
  if (!cpu.bf16) {
    throw new ArgumentValueError(
      `Expected 'fp32' or 'int8' for ${option} on this CPU (oneDNN's instruction set here is ${cpu.isa}; it has bfloat16 convolutions from AVX-512 on) but received 'bf16'`,
    );
  }
}

/**
 * Lowers the scheduling priority of the CPU backend's compute thread and its OpenMP team to `nice` (0 to 19), so that
 * this process's JavaScript thread (HTTP, decoding hand-offs, timers) runs first whenever it has work, instead of
 * waiting behind the numerics for a time slice: `repvgg serve` uses it to keep the event loop responsive under load.
 * Process-wide and one-way for unprivileged users (raising priority back needs CAP_SYS_NICE). Linux only.
 * @throws ArgumentValueError for a nice outside 0..MAX_NICE (nice.ts); BackendError when the kernel refuses.
 */
export function setComputeNice(nice: number): void {
  callNativeSync(() => loadCpuAddon().setComputeNice(checkNice(nice)));
}
