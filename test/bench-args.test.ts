// The bench/ scripts' command lines (lib/bench/args.ts): option values checked before any work, with one line that
// names the option and what it received; and every script answering --help with its usage (exit 0) and a mistyped
// option or value with that line and the usage (exit 2), never a stack trace. Not for: what the benchmarks measure
// (test/bench.test.ts).

import { fileURLToPath } from 'node:url';

import test from 'ava';

import { OptionError, archList, choiceList, integerList, integerOption, parseBenchArgs, positiveNumber } from '../lib/bench/args.js';
import { describeResult, runScript } from './helpers/cli-runner.js';

test('integerList takes comma-separated integers in range and refuses anything else, naming the flag and the text', (t) => {
  t.deepEqual(integerList('1,8,32', '--batches', { min: 1, max: 256 }), [1, 8, 32]);
  t.deepEqual(integerList('256', '--batches', { min: 1, max: 256 }), [256]);
  for (const text of ['0', '257', '1,,8', '', '1.5', 'abc', '8,', ' ', '1e400']) {
    const error = t.throws(() => integerList(text, '--batches', { min: 1, max: 256 }), { instanceOf: OptionError });
    t.true(error.message.includes('--batches') && error.message.includes(`'${text}'`), error.message);
  }
  t.throws(() => integerList('1,2,3', '--batches', { min: 1, max: 256 }, 2), { instanceOf: OptionError, message: /up to 2 /u });
});

test('integerOption and positiveNumber check one value against its range', (t) => {
  t.is(integerOption('0', '--warmup', { min: 0, max: 120 }), 0);
  t.is(integerOption('120', '--warmup', { min: 0, max: 120 }), 120);
  for (const text of ['-1', '121', '2.5', '', 'ten', '0x', 'NaN']) {
    t.throws(() => integerOption(text, '--warmup', { min: 0, max: 120 }), { instanceOf: OptionError, message: new RegExp(`--warmup but received '${text}'`, 'u') });
  }
  t.is(positiveNumber('0.25', '--seconds', 60), 0.25);
  t.is(positiveNumber('60', '--seconds', 60), 60);
  for (const text of ['0', '-1', '60.5', '', 'fast', 'Infinity', 'NaN']) {
    t.throws(() => positiveNumber(text, '--seconds', 60), { instanceOf: OptionError, message: /--seconds but received/u });
  }
});

test('archList returns short official names, takes the script\'s extra names, and lists the names it takes', (t) => {
  t.deepEqual(archList('A0,RepVGG-B1g4,b0', '--models'), ['A0', 'B1g4', 'B0']);
  t.deepEqual(archList('mini,A0', '--models', { extra: ['mini'] }), ['mini', 'A0']);
  const error = t.throws(() => archList('A0,A9', '--models'), { instanceOf: OptionError });
  t.regex(error.message, /from A0, A1, .*D2se for --models but received 'A0,A9'/u);
  t.throws(() => archList('A0,B0', '--arch', { maxCount: 1 }), { instanceOf: OptionError, message: /Expected one name/u });
  t.throws(() => archList('', '--models'), { instanceOf: OptionError });
});

test('choiceList takes comma-separated names from its choices and names them when it refuses one', (t) => {
  t.deepEqual(choiceList('fp32', '--inputs', ['fp32', 'jpeg']), ['fp32']);
  t.deepEqual(choiceList('jpeg,fp32', '--inputs', ['fp32', 'jpeg']), ['jpeg', 'fp32']);
  for (const text of ['png', 'fp32,', '', 'FP32', 'fp32 ,jpeg']) {
    t.throws(() => choiceList(text, '--inputs', ['fp32', 'jpeg']), {
      instanceOf: OptionError, message: `Expected comma-separated names from fp32, jpeg for --inputs but received '${text}'`,
    });
  }
});

test('parseBenchArgs returns the values with their defaults and refuses unknown options, missing values and positionals', (t) => {
  const options = { seconds: { type: 'string', default: '3' }, json: { type: 'string' }, profile: { type: 'boolean', default: false } } as const;
  t.deepEqual({ ...parseBenchArgs('usage', options, []) }, { seconds: '3', profile: false });
  t.deepEqual({ ...parseBenchArgs('usage', options, ['--seconds', '1', '--json', 'x.json', '--profile']) }, { seconds: '1', json: 'x.json', profile: true });
  t.throws(() => parseBenchArgs('usage', options, ['--second', '1']), { instanceOf: OptionError, message: /Unknown option '--second'/u });
  t.throws(() => parseBenchArgs('usage', options, ['--json']), { instanceOf: OptionError, message: /--json/u });
  t.throws(() => parseBenchArgs('usage', options, ['extra']), { instanceOf: OptionError, message: /extra/u });
});

/** Each script, and one value it must refuse before doing any work. */
const SCRIPTS: readonly [name: string, badValue: readonly string[], named: RegExp][] = [
  ['cpu', ['--batches', '0'], /--batches but received '0'/u],
  ['cuda', ['--out', 'unused', '--precisions', 'fp8'], /--precisions but received 'fp8'/u],
  ['finetune', ['--epochs', '0'], /--epochs but received '0'/u],
  ['images', ['--count', 'many'], /--count but received 'many'/u],
  ['pth', ['--formats', 'zip,npz'], /--formats but received 'zip,npz'/u],
  ['serve', ['--inputs', 'png'], /--inputs but received 'png'/u],
  ['serve-overload', ['--soak-seconds', '0'], /--soak-seconds but received '0'/u],
  ['train', ['--models', 'A9'], /--models but received 'A9'/u],
];
const scriptPath = (name: string): string => fileURLToPath(new URL(`../bench/${name}.js`, import.meta.url));
const STACK_LINE = /^\s+at /mu;

for (const [name, badValue, named] of SCRIPTS) {
  test(`bench/${name}.js: --help prints its usage (exit 0); a mistyped option or a bad value, one line and the usage (exit 2)`, async (t) => {
    const help = await runScript(scriptPath(name), ['--help'], 60_000);
    t.is(help.code, 0, describeResult(help));
    t.true(help.stdout.startsWith(`Usage: node dist/bench/${name}.js`), describeResult(help));
    t.is(help.stderr, '', describeResult(help));

    const unknown = await runScript(scriptPath(name), ['--bogus-option'], 60_000);
    t.is(unknown.code, 2, describeResult(unknown));
    t.is(unknown.stderr.split('\n')[0], "Unknown option '--bogus-option'", describeResult(unknown));
    t.true(unknown.stderr.includes(`Usage: node dist/bench/${name}.js`), describeResult(unknown));
    t.notRegex(unknown.stderr, STACK_LINE);
    t.is(unknown.stdout, '', describeResult(unknown));

    const bad = await runScript(scriptPath(name), badValue, 60_000);
    t.is(bad.code, 2, describeResult(bad));
    t.regex(bad.stderr.split('\n')[0]!, named, describeResult(bad));
    t.notRegex(bad.stderr, STACK_LINE);
  });
}
