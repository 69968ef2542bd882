// Command-line options of the bench/ scripts: node:util parseArgs plus what a user expects of a command. `--help`
// (or -h) prints the script's usage and exits 0; a mistyped option, a missing value or a value out of range ends the
// run with one line naming the option and what it received, then the usage, and exit code 2, instead of a stack
// trace (or, for a number that did not parse, a run on NaN). Errors of the run itself keep their stack (exit 1).
// Not for: the repvgg command (lib/cli), which has its own parser and help.

import { parseArgs, type ParseArgsConfig } from 'node:util';

import { OFFICIAL_ARCHS, canonicalArchName } from '../models/repvgg.js';

/** A bad command line: what runBench prints with the usage (exit 2). */
export class OptionError extends Error {
  override name = 'OptionError';
}

type Options = NonNullable<ParseArgsConfig['options']>;
/** What parseBenchArgs returns for options (none of the bench scripts' options is `multiple`). */
type OptionValue<O> = O extends { type: 'boolean' } ? boolean : string;
export type BenchValues<T extends Options> = { [K in keyof T]: T[K] extends { default: unknown } ? OptionValue<T[K]> : OptionValue<T[K]> | undefined };

/**
 * The values of `options` in `args` (default: this process's arguments). Prints `usage` and exits 0 when the
 * arguments hold --help or -h (anywhere, so that `--seconds --help` helps too).
 * @throws OptionError for an unknown option, a missing value or a positional argument.
 */
export function parseBenchArgs<const T extends Options>(usage: string, options: T, args: string[] = process.argv.slice(2)): BenchValues<T> {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${usage}\n`);
    process.exit(0);
  }
  try {
    const { values } = parseArgs({ args, options, strict: true, allowPositionals: false });
    return values as unknown as BenchValues<T>; // the same shape, named here (node:util does not export its types)
  } catch (err) {
    throw new OptionError(err instanceof Error ? err.message : String(err));
  }
}

/** The number `text` spells; NaN for blank text (which Number() would read as 0). */
function numberOf(text: string): number {
  return text.trim() === '' ? Number.NaN : Number(text);
}

interface Range {
  min: number;
  max: number;
}

/**
 * Comma-separated integers from range.min to range.max, at most `maxCount` of them ('1,8,32').
 * @throws OptionError naming the flag and the text received.
 */
export function integerList(text: string, flag: string, range: Range, maxCount = 16): number[] {
  const values = text.split(',').map(numberOf);
  if (values.length > maxCount || !values.every((v) => Number.isInteger(v) && v >= range.min && v <= range.max)) {
    throw new OptionError(`Expected up to ${maxCount} comma-separated integers from ${range.min} to ${range.max} for ${flag} but received '${text}'`);
  }
  return values;
}

/**
 * One integer from range.min to range.max.
 * @throws OptionError naming the flag and the text received.
 */
export function integerOption(text: string, flag: string, range: Range): number {
  const value = numberOf(text);
  if (!Number.isInteger(value) || value < range.min || value > range.max) {
    throw new OptionError(`Expected an integer from ${range.min} to ${range.max} for ${flag} but received '${text}'`);
  }
  return value;
}

/**
 * A number above 0 and at most `max` (seconds, for instance).
 * @throws OptionError naming the flag and the text received.
 */
export function positiveNumber(text: string, flag: string, max: number): number {
  const value = numberOf(text);
  if (!(value > 0 && value <= max)) throw new OptionError(`Expected a number above 0 and at most ${max} for ${flag} but received '${text}'`);
  return value;
}

/**
 * Comma-separated names, each one of `choices` ('fp32,fp16').
 * @throws OptionError naming the flag, the text received and the choices.
 */
export function choiceList<const C extends string>(text: string, flag: string, choices: readonly C[]): C[] {
  const names = text.split(',');
  if (!names.every((name): name is C => (choices as readonly string[]).includes(name))) {
    throw new OptionError(`Expected comma-separated names from ${choices.join(', ')} for ${flag} but received '${text}'`);
  }
  return names;
}

/**
 * Comma-separated official variant names ('A0,B1g4', 'RepVGG-A0'), each returned by its short name, at most
 * `maxCount` of them; `extra` names that the script also takes (bench/train.ts's 'mini').
 * @throws OptionError naming the flag, the text received and the names it takes.
 */
export function archList(text: string, flag: string, options: { extra?: readonly string[]; maxCount?: number } = {}): string[] {
  const { extra = [], maxCount = 16 } = options;
  const names = text.split(',').map((name) => extra.find((e) => e.toLowerCase() === name.trim().toLowerCase()) ?? canonicalArchName(name.trim()));
  if (names.length > maxCount || !names.every((name) => name !== undefined)) {
    const what = maxCount === 1 ? 'one name' : `up to ${maxCount} comma-separated names`;
    throw new OptionError(`Expected ${what} from ${[...extra, ...OFFICIAL_ARCHS].join(', ')} for ${flag} but received '${text}'`);
  }
  return names as string[];
}

/**
 * Runs a bench script's main(): an OptionError prints its message and the usage on stderr and exits 2; any other
 * error prints its stack and exits 1.
 */
export async function runBench(usage: string, main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (err) {
    if (err instanceof OptionError) {
      process.stderr.write(`${err.message}\n\n${usage}\n`);
      process.exit(2);
    }
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  }
}
