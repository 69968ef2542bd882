// Small helpers the benchmarks share: running a peer (Python, a fresh Node process) and collecting its output,
// the median of repeated measurements, and the CPU time of this process's threads. Not for: timing itself (each
// benchmark times what it compares).

import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

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

/** Clock ticks per second of /proc's CPU times (USER_HZ, 100 on every mainstream Linux). */
const PROC_TICKS_PER_SECOND = 100;

/** One thread's CPU time so far and its nice value. */
export interface ThreadCpu {
  nice: number;
  seconds: number;
}

/**
 * CPU seconds (user + system) each thread of this process has used so far, by thread id, with its nice value, from
 * /proc/self/task (Linux); undefined where /proc is missing.
 */
export function threadCpuTimes(): Map<string, ThreadCpu> | undefined {
  let tasks: string[];
  try {
    tasks = readdirSync('/proc/self/task');
  } catch {
    return undefined;
  }
  const times = new Map<string, ThreadCpu>();
  for (const task of tasks) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/self/task/${task}/stat`, 'utf8');
    } catch {
      continue; // the thread exited while we listed them
    }
    // Fields after the parenthesized name (which may hold spaces): state is [0], utime [11], stime [12], nice [16].
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    times.set(task, { nice: Number(fields[16]), seconds: (Number(fields[11]) + Number(fields[12])) / PROC_TICKS_PER_SECOND });
  }
  return times;
}

/**
 * CPU seconds the threads used between two threadCpuTimes() snapshots, split into those at nice `nice` and the rest
 * (a thread that started in between counts from zero; one that exited is missing from `after` and not counted).
 */
export function cpuSecondsBetween(before: Map<string, ThreadCpu>, after: Map<string, ThreadCpu>, nice: number): { atNice: number; others: number } {
  let atNice = 0;
  let others = 0;
  for (const [task, { nice: threadNice, seconds }] of after) {
    const used = seconds - (before.get(task)?.seconds ?? 0);
    if (threadNice === nice) atNice += used;
    else others += used;
  }
  return { atNice, others };
}
