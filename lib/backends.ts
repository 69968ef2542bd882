// Which backends this build has and why the others are unavailable (for `repvgg info` and `backend: 'auto'`).

import { cudaStatus } from './backend/cuda.js';
import { loadCpuAddon } from './backend/native.js';

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
      details: { library: `${info.library} ${info.libraryVersion}`, isa: info.isa, nativeBf16: info.nativeBf16 },
    });
  } catch (err) {
    backends.push({ name: 'cpu', available: false, details: { reason: err instanceof Error ? err.message : String(err) } });
  }
  const cuda = cudaStatus();
  backends.push({ name: 'cuda', available: cuda.available, details: { ...(cuda.reason !== undefined && { reason: cuda.reason }), ...cuda.details } });
  return backends;
}
