// Running the `repvgg` command (or another of our scripts) as a child process in tests: a small process pool (ava starts every test of a file at
// once, and dozens of CLI processes on a 2-core machine made the files several times slower than running in turn)
// and one result type. Not for: assertions (each CLI test file states its own contract checks).

import { execFile } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';

/** dist/test/helpers -> dist/lib/cli/main.js */
export const CLI_PATH = fileURLToPath(new URL('../../lib/cli/main.js', import.meta.url));

export interface CliResult {
  /** Exit code; null when a signal ended the process. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Exit status and output, for assertion messages. */
export const describeResult = (r: CliResult): string =>
  `exit ${r.code} (${r.signal ?? 'no signal'})\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

const MAX_PROCESSES = Math.max(2, availableParallelism());
let running = 0;
const waiting: (() => void)[] = [];

/** Runs work once fewer than MAX_PROCESSES CLI processes of this test file are running. */
export async function withProcessSlot<T>(work: () => Promise<T>): Promise<T> {
  if (running >= MAX_PROCESSES) await new Promise<void>((resolve) => waiting.push(resolve));
  running++;
  try {
    return await work();
  } finally {
    running--;
    waiting.shift()?.();
  }
}

/** Commands that take --backend: CLI tests run them on the CPU backend unless they name another one. */
const BACKEND_COMMANDS = new Set(['infer', 'eval', 'serve', 'demo', 'train', 'bench']);

/**
 * `args` with `--backend cpu` added for a command that takes --backend when the test names no backend (nor
 * --device, which means the GPU): the default 'auto' would run these tests on CUDA wherever a GPU exists, and
 * they are the CPU backend's tests (test/cuda.test.ts has the GPU's).
 */
export function withCpuBackend(args: readonly string[]): string[] {
  const named = args.includes('--backend') || args.includes('--device') || args.some((a) => a.startsWith('--backend='));
  return BACKEND_COMMANDS.has(args[0] ?? '') && !named ? [...args, '--backend', 'cpu'] : [...args];
}

/**
 * Runs `node dist/lib/cli/main.js ...withCpuBackend(args)` (with this process's environment plus `env`); resolves
 * with the exit code and output (never rejects on exit != 0).
 */
export function cli(rawArgs: readonly string[], timeoutMs = 180_000, env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return runScript(CLI_PATH, withCpuBackend(rawArgs), timeoutMs, env);
}

/**
 * Runs `node script ...args` (with this process's environment plus `env`) in the process pool; resolves with the
 * exit code and output (never rejects on exit != 0).
 */
export function runScript(script: string, args: readonly string[], timeoutMs = 180_000, env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return withProcessSlot(
    () =>
      new Promise((resolve, reject) => {
        execFile(process.execPath, [script, ...args], { timeout: timeoutMs, maxBuffer: 16 * 2 ** 20, env: { ...process.env, ...env } }, (error, stdout, stderr) => {
          if (error !== null && typeof error.code !== 'number') {
            reject(new Error(`could not run ${script} (${String(error.code ?? error.signal)}): ${error.message}\n${stderr}`));
            return;
          }
          resolve({ code: error === null ? 0 : (error.code as number), signal: null, stdout, stderr });
        });
      }),
  );
}
