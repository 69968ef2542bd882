// Thread priorities (Linux nice values, per thread): the bound and the check shared by the CPU backend's compute
// threads (backends.ts setComputeNice) and the image decoding workers (data/images.ts DecodeWorkerPool.setNice).
// Not for: applying them (those two do).

import { ArgumentValueError, describeValue } from './errors.js';

/** Highest nice value (lowest priority) Linux knows. */
export const MAX_NICE = 19;

/**
 * @returns nice, an integer from 0 to MAX_NICE.
 * @throws ArgumentValueError naming the value otherwise.
 */
export function checkNice(nice: unknown): number {
  if (!Number.isSafeInteger(nice) || (nice as number) < 0 || (nice as number) > MAX_NICE) {
    throw new ArgumentValueError(`Expected an integer from 0 to ${MAX_NICE} for nice but received ${describeValue(nice)}`);
  }
  return nice as number;
}
