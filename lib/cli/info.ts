// `repvgg info`: the library version and what each backend found (or exactly why it is unavailable).

import { listBackends } from '../backends.js';

export function runInfo(version: string): void {
  const lines = [`repvgg ${version} (node ${process.version}, ${process.platform}-${process.arch})`];
  for (const backend of listBackends()) {
    lines.push(`  ${backend.name}: ${backend.available ? 'available' : 'unavailable'}`);
    for (const [key, value] of Object.entries(backend.details)) lines.push(`    ${key}: ${String(value)}`);
  }
  process.stdout.write(lines.join('\n') + '\n');
}
