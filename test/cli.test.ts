// The `repvgg` command end to end: each command spawned as a child process (node dist/lib/cli/main.js) on a small
// A0 (5 classes, 32x32 images), checking exit codes, printed text, the files written, and that every bad input
// fails with exit 2 (usage) or 1 (other), one stderr line naming the argument, and no output or temp file left.
// Not for: the numerics of the engine or reparam against a reference (reference.test.ts, onnx.test.ts).

import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import test from 'ava';
import type { ExecutionContext } from 'ava';
import { InferenceSession, Tensor } from 'onnxruntime-node';

import { cpuCapabilities } from '../lib/backends.js';
import { encodeNpy, readNpy } from '../lib/io/npy.js';
import { writeSafetensors } from '../lib/io/safetensors.js';
import { saveWeights } from '../lib/io/weights.js';
import { randomStateDict } from '../lib/models/init.js';
import { customSpec, officialSpec } from '../lib/models/repvgg.js';
import { SERVING_NODE_FLAGS } from '../lib/serve/server.js';
import { CLI_PATH, cli as runCli, describeResult as describe, type CliResult } from './helpers/cli-runner.js';
import { argmaxRows, makeRng, maxRelativeError, randomArray } from './helpers/reference.js';
import { MODEL_FP32, ONNX } from './helpers/tolerances.js';

const execFileAsync = promisify(execFile);
const CLASSES = 5;
const BATCH = 5;
const SIDE = 32; // A0's total stride: the smallest input it accepts
const spec = officialSpec('A0', { numClasses: CLASSES });

/** The CLI with this file's time limit per process. */
const cli = (args: readonly string[]): Promise<CliResult> => runCli(args, 120_000);

/** Asserts a successful run and returns it. */
function expectOk(t: ExecutionContext, r: CliResult): CliResult {
  t.is(r.code, 0, describe(r));
  return r;
}

/**
 * Asserts the CLI failure contract: the exit code, exactly one stderr line starting 'repvgg: ' (no stack trace),
 * that it matches every pattern, and that `outDir` (where the command was told to write) holds no file at all:
 * neither the output nor a leftover temp file.
 */
async function expectFailure(
  t: ExecutionContext,
  r: CliResult,
  code: 1 | 2,
  patterns: readonly RegExp[],
  outDir?: string,
): Promise<void> {
  t.is(r.code, code, describe(r));
  const lines = r.stderr.split('\n').filter((line) => line !== '');
  t.is(lines.length, 1, `expected one stderr line:\n${r.stderr}`);
  const message = lines[0] ?? '';
  t.regex(message, /^repvgg: /);
  t.notRegex(message, /unexpected error|    at /, 'a typed error, not a crash');
  for (const pattern of patterns) t.regex(message, pattern);
  if (outDir !== undefined) t.deepEqual(await readdir(outDir), [], `files left in the output folder after: ${message}`);
}

let scratch = '';
let trainPath = '';
let inputPath = '';
let inputData: Float32Array = new Float32Array(0);
/** The deployed weights made by `convert` (the first test to need them runs it; the rest wait for it). */
let deployPromise: Promise<{ path: string; result: CliResult }> | undefined;
/** fp32 logits of the training-time weights via `infer`, shared by the tests that compare against them. */
let trainLogitsPromise: Promise<{ data: Float32Array; shape: number[]; result: CliResult }> | undefined;

/** A fresh empty folder under scratch, for a command's outputs. */
const freshDir = (name: string): Promise<string> => mkdtemp(join(scratch, `${name}-`));

function deployWeights(): Promise<{ path: string; result: CliResult }> {
  deployPromise ??= (async () => {
    const dir = await freshDir('deploy');
    const path = join(dir, 'a0.deploy.safetensors');
    return { path, result: await cli(['convert', '--arch', 'A0', '--in', trainPath, '--out', path]) };
  })();
  return deployPromise;
}

/** Runs infer with extra args into a fresh folder and reads the logits back. */
async function infer(name: string, args: readonly string[]): Promise<{ data: Float32Array; shape: number[]; result: CliResult }> {
  const dir = await freshDir(name);
  const output = join(dir, 'logits.npy');
  const result = await cli(['infer', '--input', inputPath, '--output', output, ...args]);
  if (result.code !== 0) return { data: new Float32Array(0), shape: [], result };
  const logits = await readNpy(output, 'logits');
  if (logits.dtype !== 'float32') throw new Error(`logits.npy has dtype ${logits.dtype}`);
  return { data: logits.data, shape: logits.shape, result };
}

function trainLogits(): Promise<{ data: Float32Array; shape: number[]; result: CliResult }> {
  trainLogitsPromise ??= infer('train-logits', ['--arch', 'A0', '--weights', trainPath]);
  return trainLogitsPromise;
}

/** Asserts that a succeeded infer run wrote [BATCH, CLASSES] logits within tol of the training-time logits. */
async function expectSameLogits(t: ExecutionContext, name: string, run: { data: Float32Array; shape: number[]; result: CliResult }, tol: number): Promise<void> {
  expectOk(t, run.result);
  const ref = await trainLogits();
  expectOk(t, ref.result);
  t.deepEqual(run.shape, [BATCH, CLASSES]);
  const error = maxRelativeError(run.data, ref.data);
  t.true(error <= tol, `${name}: max relative error ${error.toExponential(2)} vs the training-time logits, tolerance ${tol}`);
}

test.before(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'repvgg-cli-test-'));
  trainPath = join(scratch, 'a0.train.safetensors');
  await saveWeights(trainPath, spec, 'train', randomStateDict(spec, 'train', 3));
  inputPath = join(scratch, 'x.npy');
  inputData = randomArray(BATCH * 3 * SIDE * SIDE, makeRng(21), 1); // uniform in [-1, 1], never exactly 0
  await writeFile(inputPath, encodeNpy(inputData, [BATCH, 3, SIDE, SIDE]));
});

test.after.always(async () => {
  if (scratch !== '') await rm(scratch, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------------------
// Commands that succeed

test('info names oneDNN with the cpu ISA and says why cuda is unavailable', async (t) => {
  const r = expectOk(t, await cli(['info']));
  t.regex(r.stdout, /^repvgg \d+\.\d+\.\d+/);
  t.regex(r.stdout, /cpu: available\n\s+library: oneDNN \d+\.\d+/);
  t.regex(r.stdout, /isa: \w+/);
  t.regex(r.stdout, /cuda: (available\n[^]*cudnn|unavailable\n\s+reason: \S.{10,})/);
});

test('run as a program, the repvgg file starts node with the server\'s V8 flags', async (t) => {
  const firstLine = (await readFile(CLI_PATH, 'utf8')).split('\n', 1)[0];
  t.is(firstLine, `#!/usr/bin/env -S node ${SERVING_NODE_FLAGS.join(' ')}`);
  // Through its launcher line (as npx and the manifests run it), with a preload that reports node's own flags.
  const preload = join(await freshDir('launcher'), 'report-exec-argv.cjs');
  await writeFile(preload, 'process.stderr.write("execArgv " + JSON.stringify(process.execArgv) + "\\n");\n');
  const { stdout, stderr } = await execFileAsync(CLI_PATH, ['--help'], { env: { ...process.env, NODE_OPTIONS: `--require ${preload}` } });
  t.true(stdout.includes('Usage: repvgg'), stdout);
  const reported = /^execArgv (.*)$/m.exec(stderr);
  t.truthy(reported, stderr);
  t.deepEqual(JSON.parse(reported![1]!), [...SERVING_NODE_FLAGS]);
});

test('--help prints the usage and exits 0', async (t) => {
  const r = expectOk(t, await cli(['--help']));
  for (const command of ['info', 'convert', 'infer', 'export-onnx', 'demo']) t.true(r.stdout.includes(command), command);
});

test('convert writes deployed weights whose infer logits match the training-time weights', async (t) => {
  const { path, result } = await deployWeights();
  expectOk(t, result);
  t.regex(result.stdout, /RepVGG-A0/);
  t.true(result.stdout.includes(path));
  const deployed = await infer('deploy-logits', ['--arch', 'A0', '--weights', path]);
  await expectSameLogits(t, 'deploy vs train', deployed, MODEL_FP32);
  t.regex(deployed.result.stdout, /5 images through RepVGG-A0 \(deploy form, cpu fp32\)/);
  const train = await trainLogits();
  t.regex(train.result.stdout, /\(train form, cpu fp32\)/);
  t.regex(train.result.stdout, /\[5, 5\]/);
  // The convert output folder holds only the weights (no temp file).
  t.deepEqual(await readdir(join(path, '..')), ['a0.deploy.safetensors']);
});

test('infer logits are finite, not constant, and [5, 5]', async (t) => {
  const train = await trainLogits();
  expectOk(t, train.result);
  t.deepEqual(train.shape, [BATCH, CLASSES]);
  t.true(train.data.every(Number.isFinite));
  t.true(new Set(train.data).size > CLASSES, 'logits differ between images');
});

// Separate runs may measure different conv algorithms as fastest (Winograd vs direct), so even the same weights
// agree to float32 rounding (MODEL_FP32), not bit for bit.
test('--arch RepVGG-A0 is the same as --arch A0', async (t) => {
  await expectSameLogits(t, 'RepVGG-A0', await infer('long-arch', ['--arch', 'RepVGG-A0', '--weights', trainPath]), MODEL_FP32);
});

test('infer without --arch takes the architecture from the file metadata (train and deploy files)', async (t) => {
  await expectSameLogits(t, 'train, no --arch', await infer('meta-train', ['--weights', trainPath]), MODEL_FP32);
  const { path } = await deployWeights();
  await expectSameLogits(t, 'deploy, no --arch', await infer('meta-deploy', ['--weights', path]), MODEL_FP32);
});

test('--batch 2 splits the input into chunks and gives the same logits', async (t) => {
  const run = await infer('batch2', ['--arch', 'A0', '--weights', trainPath, '--batch', '2']);
  await expectSameLogits(t, '--batch 2', run, MODEL_FP32);
  // Not a terminal: whole progress lines, no carriage returns that would run them together in a log.
  t.regex(run.result.stderr, /^infer: chunk 3\/3$/m);
  t.false(run.result.stderr.includes('\r'));
});

test('--backend cpu gives the same logits as the default', async (t) => {
  await expectSameLogits(t, '--backend cpu', await infer('cpu', ['--weights', trainPath, '--backend', 'cpu']), MODEL_FP32);
});

test('--precision bf16 predicts the fp32 class on at least 4 of 5 images (a CPU without bf16 convolutions: exit 1 naming it)', async (t) => {
  const run = await infer('bf16', ['--arch', 'A0', '--weights', trainPath, '--precision', 'bf16']);
  const cpu = cpuCapabilities();
  if (!cpu.bf16) {
    t.is(run.result.code, 1, describe(run.result));
    t.regex(run.result.stderr, new RegExp(`^repvgg: Expected 'fp32' or 'int8' for precision on this CPU \\(oneDNN's instruction set here is ${cpu.isa};`));
    return;
  }
  expectOk(t, run.result);
  t.regex(run.result.stdout, /bf16/);
  t.deepEqual(run.shape, [BATCH, CLASSES]);
  t.true(run.data.every(Number.isFinite));
  const ref = await trainLogits();
  const ours = argmaxRows(run.data, [BATCH, CLASSES]);
  const theirs = argmaxRows(ref.data, [BATCH, CLASSES]);
  const agree = ours.filter((c, i) => c === theirs[i]).length;
  t.true(agree >= 4, `bf16 classes ${ours.join(',')} vs fp32 ${theirs.join(',')}`);
});

test('export-onnx writes a model that onnxruntime runs to our infer logits', async (t) => {
  const dir = await freshDir('onnx');
  const out = join(dir, 'a0.onnx');
  const r = expectOk(t, await cli(['export-onnx', '--arch', 'A0', '--weights', trainPath, '--out', out]));
  t.regex(r.stdout, /opset 13/);
  t.deepEqual(await readdir(dir), ['a0.onnx']);
  const session = await InferenceSession.create(await readFile(out));
  try {
    const outputs = await session.run({ input: new Tensor('float32', inputData, [BATCH, 3, SIDE, SIDE]) });
    const logits = outputs['logits'];
    if (logits === undefined) {
      t.fail(`onnxruntime returned no 'logits' output (outputs: ${Object.keys(outputs).join(', ')})`);
      return;
    }
    t.deepEqual([...logits.dims], [BATCH, CLASSES]);
    const ref = await trainLogits();
    expectOk(t, ref.result);
    const error = maxRelativeError(logits.data as Float32Array, ref.data);
    t.true(error <= ONNX, `onnxruntime vs infer: max relative error ${error.toExponential(2)}`);
  } finally {
    await session.release();
  }
});

test('demo --size 32 --batch 2 prints the comparison table', async (t) => {
  const r = expectOk(t, await cli(['demo', '--size', '32', '--batch', '2']));
  t.regex(r.stdout, /deployed form/);
  t.regex(r.stdout, /img\/s \(batch 2, 32x32\)/);
  t.regex(r.stdout, /^\| parameters /m);
  t.regex(r.stdout, /max relative difference of logits, deployed vs training-time: \d\.\d\de-\d+/);
});

// ---------------------------------------------------------------------------------------------------------------
// Usage errors: exit 2

test('an unknown command exits 2 naming it', async (t) => {
  await expectFailure(t, await cli(['frobnicate']), 2, [/'frobnicate'/, /command/]);
});

test('an unknown flag exits 2 naming it', async (t) => {
  const dir = await freshDir('unknown-flag');
  const r = await cli(['infer', '--weights', trainPath, '--input', inputPath, '--output', join(dir, 'y.npy'), '--bogus', '1']);
  await expectFailure(t, r, 2, [/--bogus/], dir);
});

test('missing --weights exits 2 naming it', async (t) => {
  const dir = await freshDir('no-weights');
  await expectFailure(t, await cli(['infer', '--arch', 'A0', '--input', inputPath, '--output', join(dir, 'y.npy')]), 2, [/--weights/], dir);
});

test('convert without --out exits 2 naming the missing flag', async (t) => {
  await expectFailure(t, await cli(['convert', '--arch', 'A0', '--in', trainPath]), 2, [/--out\b/]);
});

test('a positional argument exits 2 naming it', async (t) => {
  await expectFailure(t, await cli(['info', 'extra']), 2, [/'extra'/]);
});

test('demo with an unknown --arch or a --size below 32 exits 2 naming the flag', async (t) => {
  await expectFailure(t, await cli(['demo', '--arch', 'Q7']), 2, [/--arch/, /'Q7'/]);
  await expectFailure(t, await cli(['demo', '--size', '16']), 2, [/--size/, /'16'/]);
});

test('an unknown --arch exits 2 naming the flag and the value', async (t) => {
  const dir = await freshDir('bad-arch');
  const r = await cli(['infer', '--arch', 'A9', '--weights', trainPath, '--input', inputPath, '--output', join(dir, 'y.npy')]);
  await expectFailure(t, r, 2, [/--arch/, /'A9'/], dir);
  const c = await cli(['convert', '--arch', 'RepVGG-Z', '--in', trainPath, '--out', join(dir, 'd.safetensors')]);
  await expectFailure(t, c, 2, [/--arch/, /'RepVGG-Z'/], dir);
});

for (const bad of ['0', 'abc', '1.5', '']) {
  test(`--batch '${bad}' exits 2 naming the flag and the value`, async (t) => {
    const dir = await freshDir('bad-batch');
    const r = await cli(['infer', '--weights', trainPath, '--input', inputPath, '--output', join(dir, 'y.npy'), '--batch', bad]);
    await expectFailure(t, r, 2, [/--batch/, new RegExp(`'${bad.replace('.', '\\.')}'`)], dir);
  });
}

test('--batch -1 and --batch=-1 exit 2 naming the flag', async (t) => {
  const dir = await freshDir('negative-batch');
  const args = ['infer', '--weights', trainPath, '--input', inputPath, '--output', join(dir, 'y.npy')];
  // node's parseArgs refuses a separate value that starts with '-' before our own check sees it.
  await expectFailure(t, await cli([...args, '--batch', '-1']), 2, [/--batch/], dir);
  await expectFailure(t, await cli([...args, '--batch=-1']), 2, [/--batch/, /'-1'/, />= 1/], dir);
});

test('--backend gpu exits 2 naming the flag and the choices', async (t) => {
  const dir = await freshDir('backend-gpu');
  const r = await cli(['infer', '--weights', trainPath, '--input', inputPath, '--output', join(dir, 'y.npy'), '--backend', 'gpu']);
  await expectFailure(t, r, 2, [/--backend/, /'gpu'/, /cuda/], dir);
});

test('--precision fp16 on the CPU backend exits 1 naming precision and the backend', async (t) => {
  const dir = await freshDir('precision');
  const r = await cli(['infer', '--weights', trainPath, '--input', inputPath, '--output', join(dir, 'y.npy'), '--precision', 'fp16', '--backend', 'cpu']);
  await expectFailure(t, r, 1, [/precision/, /cpu backend/, /'fp16'/], dir);
});

// ---------------------------------------------------------------------------------------------------------------
// Bad files and values: exit 1

/** Runs infer on (weights, input) into a fresh folder and applies the failure contract with exit 1. */
async function expectInferFailure(
  t: ExecutionContext,
  name: string,
  weights: string,
  input: string,
  patterns: readonly RegExp[],
  extra: readonly string[] = [],
): Promise<void> {
  const dir = await freshDir(name);
  const r = await cli(['infer', '--weights', weights, '--input', input, '--output', join(dir, 'y.npy'), ...extra]);
  await expectFailure(t, r, 1, patterns, dir);
}

/** Writes a float32 .npy of the given shape with random non-zero data; returns its path. */
async function npyInput(name: string, shape: number[], mutate?: (data: Float32Array) => void): Promise<string> {
  const data = randomArray(shape.reduce((p, d) => p * d, 1), makeRng(5), 1);
  mutate?.(data);
  const path = join(await freshDir(`in-${name}`), `${name}.npy`);
  await writeFile(path, encodeNpy(data, shape));
  return path;
}

test('a missing --input file exits 1 naming the flag and the path', async (t) => {
  const missing = join(scratch, 'does-not-exist.npy');
  await expectInferFailure(t, 'missing-input', trainPath, missing, [/--input/, /does-not-exist\.npy/, /not found/]);
});

test('a missing --weights file exits 1 naming the flag', async (t) => {
  await expectInferFailure(t, 'missing-weights', join(scratch, 'nope.safetensors'), inputPath, [/--weights/, /nope\.safetensors/]);
});

test('truncated safetensors weights exit 1 naming the file', async (t) => {
  const bytes = await readFile(trainPath);
  const path = join(await freshDir('truncated'), 'cut.safetensors');
  await writeFile(path, bytes.subarray(0, Math.floor(bytes.length / 2)));
  await expectInferFailure(t, 'truncated', path, inputPath, [/cut\.safetensors/]);
  // A file cut inside its header too.
  const header = join(await freshDir('truncated-header'), 'head.safetensors');
  await writeFile(header, bytes.subarray(0, 20));
  await expectInferFailure(t, 'truncated-header', header, inputPath, [/head\.safetensors/]);
});

test('a garbled .npy input exits 1 naming the file', async (t) => {
  const path = join(await freshDir('garbled'), 'garbled.npy');
  await writeFile(path, Buffer.from('this is not a numpy file at all, just text\n'));
  await expectInferFailure(t, 'garbled', trainPath, path, [/garbled\.npy/, /\.npy/]);
  // Right magic, broken header.
  const header = Buffer.from("\x93NUMPY\x01\x00\x20\x00{'descr': '<f4', 'shape': (5, 3 }   \n", 'latin1');
  const broken = join(await freshDir('garbled-header'), 'broken.npy');
  await writeFile(broken, header);
  await expectInferFailure(t, 'garbled-header', trainPath, broken, [/broken\.npy/]);
});

test('a float64 .npy input exits 1 naming float32 and the dtype received', async (t) => {
  const path = join(await freshDir('f64'), 'f64.npy');
  await writeFile(path, encodeNpy(Float64Array.from(inputData), [BATCH, 3, SIDE, SIDE]));
  await expectInferFailure(t, 'f64', trainPath, path, [/--input/, /float32/, /float64/]);
});

test('an input with 1 channel exits 1 naming the channel count and the shape', async (t) => {
  const path = await npyInput('gray', [BATCH, 1, SIDE, SIDE]);
  await expectInferFailure(t, 'gray', trainPath, path, [/--input/, /3 channels/, /\[5, 1, 32, 32\]/]);
});

test('a rank-3 input exits 1 naming the rank', async (t) => {
  const path = await npyInput('rank3', [3, SIDE, SIDE]);
  await expectInferFailure(t, 'rank3', trainPath, path, [/--input/, /\[3, 32, 32\]|rank|4/]);
});

test('a NaN in the input exits 1 naming it', async (t) => {
  const path = await npyInput('nan', [2, 3, SIDE, SIDE], (data) => {
    data[1234] = Number.NaN;
  });
  await expectInferFailure(t, 'nan', trainPath, path, [/--input/, /NaN|finite/]);
});

test('an input smaller than the total stride (16x16 for A0) exits 1 naming the size', async (t) => {
  const path = await npyInput('small', [2, 3, 16, 16]);
  await expectInferFailure(t, 'small', trainPath, path, [/--input/, /32x32/, /16x16/]);
});

test('A0 weights with --arch A1 exit 1 listing the shape mismatches', async (t) => {
  const dir = await freshDir('wrong-arch');
  const r = await cli(['infer', '--arch', 'A1', '--weights', trainPath, '--input', inputPath, '--output', join(dir, 'y.npy')]);
  await expectFailure(t, r, 1, [/RepVGG-A1/, /shape mismatches/, /stage0\.rbr_dense\.conv\.weight expected \[64, 3, 3, 3\] but received \[48, 3, 3, 3\]/], dir);
  const c = await cli(['convert', '--arch', 'A1', '--in', trainPath, '--out', join(dir, 'd.safetensors')]);
  await expectFailure(t, c, 1, [/RepVGG-A1/, /shape mismatches/], dir);
});

test('deployed weights given to convert exit 1 naming --in', async (t) => {
  const { path, result } = await deployWeights();
  expectOk(t, result);
  const dir = await freshDir('convert-deploy');
  const r = await cli(['convert', '--arch', 'A0', '--in', path, '--out', join(dir, 'again.safetensors')]);
  await expectFailure(t, r, 1, [/--in/, /deployed/], dir);
});

test('an input with 0 images exits 1 naming --input and the shape', async (t) => {
  const path = await npyInput('empty', [0, 3, SIDE, SIDE]);
  await expectInferFailure(t, 'empty', trainPath, path, [/--input/, /\[0, 3, 32, 32\]/]);
});

test('weights without metadata: an official variant is identified from the shapes, anything else asks for --arch', async (t) => {
  const dir = await freshDir('bare-weights');
  const path = join(dir, 'bare.safetensors');
  await writeSafetensors(path, randomStateDict(spec, 'train', 3), {});
  await expectSameLogits(t, 'bare, no --arch', await infer('bare', ['--weights', path]), MODEL_FP32);
  // With --arch the same file works too: classes come from linear.weight.
  await expectSameLogits(t, 'bare + --arch', await infer('bare-arch', ['--arch', 'A0', '--weights', path]), MODEL_FP32);
  const custom = customSpec({ numClasses: CLASSES, stemChannels: 16, stageChannels: [16, 32, 48, 64], stageDepths: [1, 1, 2, 1] });
  const customPath = join(dir, 'custom.safetensors');
  await writeSafetensors(customPath, randomStateDict(custom, 'train', 3), {});
  await expectInferFailure(t, 'custom', customPath, inputPath, [/custom\.safetensors/, /--arch/]);
});

test('--backend cuda exits 1 with a clean message', async (t) => {
  await expectInferFailure(t, 'cuda', trainPath, inputPath, [/CUDA/i, /--backend/], ['--backend', 'cuda']);
});

test('an --output in a folder that does not exist exits 1 and writes nothing', async (t) => {
  const dir = await freshDir('no-folder');
  const output = join(dir, 'missing', 'y.npy');
  const r = await cli(['infer', '--weights', trainPath, '--input', inputPath, '--output', output]);
  await expectFailure(t, r, 1, [/--output/, /missing\/y\.npy/, /folder does not exist/], dir);
});

test('an --output that is a folder exits 1 and leaves no temp file', async (t) => {
  const dir = await freshDir('output-is-dir');
  await mkdir(join(dir, 'y.npy'));
  const r = await cli(['infer', '--weights', trainPath, '--input', inputPath, '--output', join(dir, 'y.npy')]);
  await expectFailure(t, r, 1, [/--output/, /y\.npy/]);
  t.deepEqual(await readdir(dir), ['y.npy']);
  t.deepEqual(await readdir(join(dir, 'y.npy')), []);
});

test('convert --out in a folder that does not exist exits 1 naming --out and writes nothing', async (t) => {
  const dir = await freshDir('no-folder-convert');
  const c = await cli(['convert', '--arch', 'A0', '--in', trainPath, '--out', join(dir, 'missing', 'd.safetensors')]);
  await expectFailure(t, c, 1, [/--out\b/, /folder does not exist/], dir);
});

test('export-onnx --out in a folder that does not exist exits 1 naming --out and writes nothing', async (t) => {
  const dir = await freshDir('no-folder-onnx');
  const e = await cli(['export-onnx', '--weights', trainPath, '--out', join(dir, 'missing', 'm.onnx')]);
  await expectFailure(t, e, 1, [/--out\b/, /folder does not exist/], dir);
});
