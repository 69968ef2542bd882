// Reading CLI flag values with usage errors that name the flag (exit status 2).

import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { UsageError } from '../errors.js';

export type Flags = Record<string, string | boolean | undefined>;

export function requireFlag(flags: Flags, name: string): string {
  const value = flags[name];
  if (typeof value !== 'string' || value === '') throw new UsageError(`Missing required flag --${name}`);
  return value;
}

export function optionalFlag(flags: Flags, name: string): string | undefined {
  const value = flags[name];
  return typeof value === 'string' ? value : undefined;
}

export function intFlag(flags: Flags, name: string, fallback: number, min = 1): number {
  const value = flags[name];
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (typeof value !== 'string' || !Number.isInteger(parsed) || parsed < min) {
    throw new UsageError(`Expected an integer >= ${min} for --${name} but received '${String(value)}'`);
  }
  return parsed;
}

export function numberFlag(flags: Flags, name: string, fallback: number, min: number, max = Infinity): number {
  const value = flags[name];
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (typeof value !== 'string' || value.trim() === '' || !Number.isFinite(parsed) || parsed < min || parsed > max) {
    throw new UsageError(`Expected a number in [${min}, ${max}] for --${name} but received '${String(value)}'`);
  }
  return parsed;
}

/** A comma-separated flag ('1,8,32'), each item checked by parse (which names the item and throws UsageError). */
export function listFlag<T>(flags: Flags, name: string, fallback: readonly T[], parse: (item: string) => T): T[] {
  const value = flags[name];
  if (value === undefined) return [...fallback];
  if (typeof value !== 'string' || value.split(',').some((item) => item.trim() === '')) {
    throw new UsageError(`Expected a comma-separated list for --${name} but received '${String(value)}'`);
  }
  return [...new Set(value.split(',').map((item) => item.trim()))].map(parse);
}

export function choiceFlag<T extends string>(flags: Flags, name: string, choices: readonly T[], fallback: T): T {
  const value = flags[name];
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !(choices as readonly string[]).includes(value)) {
    throw new UsageError(`Expected one of ${choices.join(', ')} for --${name} but received '${String(value)}'`);
  }
  return value as T;
}

/** Device and inode of an existing path, or undefined when it does not exist (yet). */
async function fileIdentity(path: string): Promise<string | undefined> {
  try {
    const s = await stat(path);
    return `${s.dev}:${s.ino}`;
  } catch {
    return undefined;
  }
}

/**
 * Refuses an output flag that names the same file as an input flag (literally, through a relative path, a
 * symbolic or a hard link): writing the output would destroy the input before or while it is read.
 * @param output - [flag name without dashes, path]; inputs likewise (undefined paths are skipped).
 * @throws UsageError naming both flags and the path.
 */
export async function checkOutputDistinct(output: [string, string], inputs: [string, string | undefined][]): Promise<void> {
  const [outFlag, outPath] = output;
  const outIdentity = await fileIdentity(outPath);
  for (const [inFlag, inPath] of inputs) {
    if (inPath === undefined) continue;
    const same = resolve(inPath) === resolve(outPath) || (outIdentity !== undefined && outIdentity === (await fileIdentity(inPath)));
    if (same) {
      throw new UsageError(`Expected --${outFlag} to be another file than --${inFlag} but both name '${outPath}' (writing it would destroy the input)`);
    }
  }
}
