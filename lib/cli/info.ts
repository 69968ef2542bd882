// `repvgg info`: the library version and what each backend found (or exactly why it is unavailable).

import { listBackends } from '../backends.js';

export function runInfo(version: string): void {
  const lines = [`repvgg ${version} (node ${process.version}, ${process.platform}-${process.arch})`];
  for (const backend of listBackends()) {
    const details = Object.entries(backend.details).map(([k, v]) => `${k}: ${String(v)}`).join(', ');
    lines.push(`  ${backend.name.padEnd(5)} ${backend.available ? 'available  ' : 'unavailable'} ${details}`);
  }
  process.stdout.write(lines.join('\n') + '\n');
}
