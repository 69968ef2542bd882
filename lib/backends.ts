// Which backends this build has and why the others are unavailable (for `repvgg info` and `backend: 'auto'`).

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
  backends.push({
    name: 'cuda',
    available: false,
    details: { reason: 'the CUDA backend is not compiled into this build (no build-cuda/Release/repvgg_cuda.node)' },
  });
  return backends;
}
