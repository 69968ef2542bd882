// Small helpers the benchmarks share: running a peer (Python, a fresh Node process) and collecting its output,
// and the median of repeated measurements. Not for: timing itself (each benchmark times what it compares).

import { spawn } from 'node:child_process';

/** Runs a command to completion; resolves with its stdout, rejects with the tail of its stderr on a non-zero exit. */
export function runProcess(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${command} ${args.join(' ')} exited with ${code}: ${err.trim().slice(-2000)}`)),
    );
  });
}

/** The median (NaN for no values). */
export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length === 0 ? Number.NaN : s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}
