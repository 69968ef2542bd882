// Reading CLI flag values with usage errors that name the flag (exit status 2).

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

export function choiceFlag<T extends string>(flags: Flags, name: string, choices: readonly T[], fallback: T): T {
  const value = flags[name];
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !(choices as readonly string[]).includes(value)) {
    throw new UsageError(`Expected one of ${choices.join(', ')} for --${name} but received '${String(value)}'`);
  }
  return value as T;
}
