// Calls the training ops of the CPU addon (backward passes, training-mode batch norm, loss, optimizer updates),
// each with its typed options (CpuTrainingOptions, lib/backend/native.ts), and with a clear error when the addon
// on disk predates them. Not for: argument checks (each op file does those first).

import { callNative, callNativeSync, loadCpuAddon, type CpuTrainingOptions } from '../backend/native.js';
import { BackendError } from '../errors.js';

/** Names the training ops are exported under by native/addon/addon.cc (each also as `${name}Sync`). */
export type TrainingOpName = keyof CpuTrainingOptions;

type OpFn = (options: object) => unknown;

function lookup(name: string): OpFn {
  const fn = (loadCpuAddon() as unknown as Record<string, unknown>)[name];
  if (typeof fn !== 'function') {
    throw new BackendError(`The CPU addon has no ${name}: it was built before the training ops. Rebuild it with \`npm run build:native\`.`);
  }
  return fn as OpFn;
}

/** Runs op `name` off the event loop (on the addon's compute thread) and awaits it. */
export async function runTrainingOp<K extends TrainingOpName>(name: K, options: CpuTrainingOptions[K]): Promise<void> {
  await callNative(async () => {
    await (lookup(name)(options) as Promise<void>);
  });
}

/** Runs op `name` synchronously (blocks the event loop). */
export function runTrainingOpSync<K extends TrainingOpName>(name: K, options: CpuTrainingOptions[K]): void {
  callNativeSync(() => lookup(`${name}Sync`)(options));
}
