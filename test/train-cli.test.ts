// `repvgg train` and `repvgg eval` end to end: each run spawned as a child process (node dist/lib/cli/main.js) on
// small .npy data (the default 'mini' arch on 16x16 one-channel images), checking exit codes, printed text and the
// files written: final weights for --out W.safetensors, the run folder for --out DIR, Ctrl-C saving a checkpoint
// (exit 130) and --resume finishing the run with the same weights as an uninterrupted one; and every bad input
// failing before any work with exit 1 or 2, one stderr line naming the argument, and nothing written.
// Not for: training numerics (train.test.ts) or the other commands (cli.test.ts).

import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { writeNpy } from '../lib/io/npy.js';
import { readSafetensors, writeSafetensors } from '../lib/io/safetensors.js';
import { loadWeights } from '../lib/io/weights.js';
import { latestCheckpoint } from '../lib/train/checkpoint.js';
import { CLI_PATH, cli, describeResult as describe, withCpuBackend, withProcessSlot, type CliResult } from './helpers/cli-runner.js';
import { makeRng } from './helpers/reference.js';

const SIDE = 16; // the mini arch's total stride 16, below A0's 32
const CLASSES = 3;
const COUNT = 48;
const BATCH = 8; // 6 steps per epoch

/** Runs the CLI and sends it SIGINT as soon as the first progress line ('epoch ...') appears on stderr. */
function cliInterrupted(args: readonly string[]): Promise<CliResult & { signalled: boolean }> {
  return withProcessSlot(
    () =>
      new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [CLI_PATH, ...withCpuBackend(args)], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        let signalled = false;
        const timer = setTimeout(() => child.kill('SIGKILL'), 180_000);
        child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
        child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
          stderr += chunk;
          if (!signalled && /^epoch \d+\/\d+ /m.test(stderr)) {
            signalled = true;
            child.kill('SIGINT');
          }
        });
        child.on('error', reject);
        child.on('close', (code, signal) => {
          clearTimeout(timer);
          resolve({ code, signal, stdout, stderr, signalled });
        });
      }),
  );
}

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'repvgg-train-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Images of CLASSES classes that survive random crops and flips: horizontal stripes, vertical stripes or a
 * checkerboard, plus seeded noise.
 */
async function writeData(dir: string, name: string, count: number, seed: number, o: { side?: number; labels?: (y: Int32Array) => void; labelCount?: number } = {}): Promise<string> {
  const side = o.side ?? SIDE;
  const rng = makeRng(seed);
  const x = new Float32Array(count * side * side);
  const y = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const c = i % CLASSES;
    y[i] = c;
    for (let p = 0; p < side * side; p++) {
      const [row, col] = [Math.floor(p / side), p % side];
      const on = c === 0 ? row % 2 : c === 1 ? col % 2 : (row + col) % 2;
      x[i * side * side + p] = on + 0.4 * (2 * rng() - 1);
    }
  }
  o.labels?.(y);
  const xPath = join(dir, `${name}-x.npy`);
  const yPath = join(dir, `${name}-y.npy`);
  await writeNpy(xPath, x, [count, 1, side, side]);
  const labelCount = o.labelCount ?? count;
  await writeNpy(yPath, y.slice(0, labelCount), [labelCount]);
  return `${xPath},${yPath}`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Successful runs

test('--out W.safetensors writes the final training-time weights, with updated BN running statistics', async (t) => {
  const dir = await tempDir(t);
  const data = await writeData(dir, 'train', COUNT, 1);
  const out = join(dir, 'w.safetensors');
  const r = await cli(['train', '--train-npy', data, '--epochs', '1', '--steps', '4', '--batch-size', String(BATCH), '--out', out]);
  t.is(r.code, 0, describe(r));
  t.regex(r.stdout, /trained RepVGG-mini .*-> .*w\.safetensors/);
  t.deepEqual((await readdir(dir)).sort(), ['train-x.npy', 'train-y.npy', 'w.safetensors'], 'only the weights file is written');
  const w = await loadWeights(out);
  t.is(w.form, 'train');
  t.is(w.spec.arch, 'RepVGG-mini');
  t.is(w.spec.inChannels, 1);
  t.is(w.spec.numClasses, CLASSES);
  // TrainableRepVGG.init starts every running mean at 0 and variance at 1: training must have moved them all.
  for (const [key, tensor] of w.state) {
    if (key.endsWith('running_mean')) t.true(tensor.data.some((v) => v !== 0), `${key} was updated`);
    if (key.endsWith('running_var')) t.true(tensor.data.some((v) => v !== 1), `${key} was updated`);
  }
});

test('--block qa trains QARepVGG blocks: its keys in the weights, learnable, the deployed form agrees; --resume keeps them', async (t) => {
  const dir = await tempDir(t);
  const data = await writeData(dir, 'train', COUNT, 1);
  const testData = await writeData(dir, 'test', 30, 2);
  const run = join(dir, 'run');
  const r = await cli(['train', '--train-npy', data, '--test-npy', testData, '--block', 'qa', '--epochs', '4', '--batch-size', String(BATCH), '--seed', '5', '--lr', '0.05', '--out', run]);
  t.is(r.code, 0, describe(r));
  const w = await loadWeights(join(run, 'train.safetensors'));
  t.is(w.spec.block, 'qa');
  t.true(w.state.has('stage1.0.rbr_1x1.weight') && w.state.has('stage1.0.bn.running_var') && !w.state.has('stage1.0.rbr_1x1.bn.weight'));
  const summary = JSON.parse(await readFile(join(run, 'summary.json'), 'utf8')) as Record<string, number>;
  t.true(summary.test_accuracy! >= 0.9, `the patterns are learnable with QARepVGG blocks: ${summary.test_accuracy}`);
  t.true(Math.abs(summary.test_accuracy! - summary.deploy_test_accuracy!) <= 1 / 30, 'deployed form agrees');
  const resumed = await cli(['train', '--resume', run, '--epochs', '5']);
  t.is(resumed.code, 0, describe(resumed));
  t.is((await loadWeights(join(run, 'train.safetensors'))).spec.block, 'qa', 'the resumed run keeps its blocks');

  const usage = await cli(['train', '--train-npy', data, '--block', 'qa', '--custom-l2', '--steps', '1', '--out', join(dir, 'x.safetensors')]);
  t.is(usage.code, 2, describe(usage));
  t.regex(usage.stderr, /--custom-l2 with --block qa/);
  const mismatch = await cli(['train', '--train-npy', data, '--init', join(run, 'train.safetensors'), '--steps', '1', '--out', join(dir, 'y.safetensors')]);
  t.is(mismatch.code, 2, describe(mismatch));
  t.regex(mismatch.stderr, /Expected --block qa \(the blocks of --init/);
  const bad = await cli(['train', '--train-npy', data, '--block', 'pa', '--steps', '1', '--out', join(dir, 'z.safetensors')]);
  t.is(bad.code, 2, describe(bad));
  t.regex(bad.stderr, /--block/);
});

test('--crop-padding sets the random crop of in-memory data: Fashion-MNIST defaults to 0 (flips only), the run records it', async (t) => {
  const dir = await tempDir(t);
  const summaryOf = async (run: string): Promise<{ config: { cropPadding?: number; augment: boolean } }> =>
    JSON.parse(await readFile(join(run, 'summary.json'), 'utf8')) as { config: { cropPadding?: number; augment: boolean } };
  const fashion = await cli(['train', '--dataset', 'fashion-mnist', '--steps', '2', '--out', join(dir, 'fashion')]);
  t.is(fashion.code, 0, describe(fashion));
  t.is((await summaryOf(join(dir, 'fashion'))).config.cropPadding, 0, 'the default recipe only flips Fashion-MNIST');
  const data = await writeData(dir, 'train', COUNT, 1);
  const padded = await cli(['train', '--train-npy', data, '--crop-padding', '2', '--steps', '2', '--batch-size', String(BATCH), '--out', join(dir, 'padded')]);
  t.is(padded.code, 0, describe(padded));
  const summary = await summaryOf(join(dir, 'padded'));
  t.deepEqual([summary.config.cropPadding, summary.config.augment], [2, true], '--crop-padding 2 is recorded');

  // A checkpoint is untrusted: a recorded padding as large as the image side, or beyond the bound, is refused on --resume.
  const checkpointPath = (await latestCheckpoint(join(dir, 'padded')))!;
  const { tensors, metadata } = await readSafetensors(checkpointPath);
  const state = new Map([...tensors].map(([key, tensor]) => [key, { shape: tensor.shape, data: tensor.data as Float32Array }]));
  for (const [padding, code, message] of [[16, 1, /crop padding of the checkpoint .*step-\d+\.safetensors below the image side 16 but received 16/], [5000, 1, /'cropPadding' is 5000; expected an integer in \[0, 4096\]/]] as const) {
    const config = { ...(JSON.parse(metadata.config!) as Record<string, unknown>), cropPadding: padding };
    await writeSafetensors(checkpointPath, state, { ...metadata, config: JSON.stringify(config) });
    const resumed = await cli(['train', '--resume', join(dir, 'padded')]);
    t.is(resumed.code, code, describe(resumed));
    t.regex(resumed.stderr, message);
  }
});

const RUN_FLAGS = ['--epochs', '5', '--batch-size', String(BATCH), '--seed', '5', '--lr', '0.05'];

/** The uninterrupted run of the run-folder tests, shared by two tests (started once). */
let straightRun: Promise<{ dir: string; testData: string; result: CliResult }> | undefined;
function runStraight(t: ExecutionContext): Promise<{ dir: string; testData: string; result: CliResult }> {
  straightRun ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'repvgg-train-cli-'));
    const trainData = await writeData(dir, 'train', COUNT, 1);
    const testData = await writeData(dir, 'test', 30, 2);
    const result = await cli(['train', '--train-npy', trainData, '--test-npy', testData, ...RUN_FLAGS, '--out', join(dir, 'run')]);
    return { dir, testData, result };
  })();
  t.teardown(async () => {
    // The last test to finish removes the folder.
    if (--straightUsers === 0) await rm((await straightRun!).dir, { recursive: true, force: true });
  });
  straightUsers++;
  return straightRun;
}
let straightUsers = 0;

test('--out DIR writes checkpoints, deploy weights, curve.svg and summary.json; eval reports the same accuracy', async (t) => {
  const { dir, testData, result: r } = await runStraight(t);
  t.is(r.code, 0, describe(r));
  const run = join(dir, 'run');
  t.deepEqual((await readdir(run)).sort(), ['checkpoints', 'curve.svg', 'deploy.safetensors', 'summary.json', 'train.safetensors']);
  t.deepEqual((await readdir(join(run, 'checkpoints'))).sort(), ['step-00000018.safetensors', 'step-00000024.safetensors', 'step-00000030.safetensors'], 'one checkpoint per epoch, the newest 3 kept (the default --keep-checkpoints)');
  const summary = JSON.parse(await readFile(join(run, 'summary.json'), 'utf8')) as Record<string, unknown>;
  for (const key of ['test_accuracy', 'deploy_test_accuracy']) {
    const v = summary[key];
    t.true(typeof v === 'number' && v >= 0 && v <= 1 && Math.round(v * 30) === v * 30, `${key} is a fraction of the 30 test images: ${String(v)}`);
  }
  t.true(typeof summary.seconds === 'number' && summary.seconds > 0, `seconds ${String(summary.seconds)}`);
  t.is(summary.steps, 30);
  t.is((summary.config as { cropPadding?: unknown }).cropPadding, 4, '.npy data crops with padding 4 unless --crop-padding says otherwise');
  t.true((summary.test_accuracy as number) >= 0.9, `the patterns are learnable: ${String(summary.test_accuracy)}`);
  t.true(Math.abs((summary.test_accuracy as number) - (summary.deploy_test_accuracy as number)) <= 1 / 30, 'deployed form agrees');
  t.regex(r.stdout, /\| training-time \| [\d.]+% +\| \d+ +\|\n\| deployed +\| [\d.]+% +\| \d+ +\|/);
  const svg = await readFile(join(run, 'curve.svg'), 'utf8');
  t.true(svg.startsWith('<svg') || svg.startsWith('<?xml'), 'curve.svg is an SVG document');
  t.is((await loadWeights(join(run, 'deploy.safetensors'))).form, 'deploy');
  t.is((await loadWeights(join(run, 'train.safetensors'))).form, 'train');

  const evaluated = await cli(['eval', '--weights', join(run, 'deploy.safetensors'), '--test-npy', testData]);
  t.is(evaluated.code, 0, describe(evaluated));
  const match = /accuracy ([\d.]+)% on 30 images/.exec(evaluated.stdout);
  t.truthy(match, evaluated.stdout);
  t.is(Number(match?.[1]), Number(((summary.deploy_test_accuracy as number) * 100).toFixed(2)), 'eval prints the accuracy of summary.json');
});

test('Ctrl-C saves a checkpoint and exits 130; --resume DIR then completes with the weights of an uninterrupted run', async (t) => {
  const straight = runStraight(t);
  const dir = await tempDir(t);
  const trainData = await writeData(dir, 'train', COUNT, 1);
  const testData = await writeData(dir, 'test', 30, 2);
  const run = join(dir, 'run');
  const interrupted = await cliInterrupted(['train', '--train-npy', trainData, '--test-npy', testData, ...RUN_FLAGS, '--out', run]);
  t.true(interrupted.signalled, `a progress line appeared: ${interrupted.stderr}`);
  t.is(interrupted.code, 130, describe(interrupted));
  t.regex(interrupted.stderr, /interrupted: checkpoint at step \d+ saved/);
  const checkpoints = await readdir(join(run, 'checkpoints'));
  t.true(checkpoints.length >= 1, 'a checkpoint was written');
  t.false(await exists(join(run, 'summary.json')), 'no summary for an interrupted run');
  const stoppedAt = Number(/checkpoint at step (\d+)/.exec(interrupted.stderr)?.[1]);
  t.true(stoppedAt >= 1 && stoppedAt < 30, `stopped early, at step ${stoppedAt}`);

  const resumed = await cli(['train', '--resume', run, '--train-npy', trainData, '--test-npy', testData]);
  t.is(resumed.code, 0, describe(resumed));
  const summary = JSON.parse(await readFile(join(run, 'summary.json'), 'utf8')) as Record<string, unknown>;
  t.is(summary.steps, 30, 'the resumed run finishes all 5 epochs');
  t.is(typeof summary.test_accuracy, 'number');

  const { dir: straightDir, result } = await straight;
  t.is(result.code, 0, describe(result));
  const a = (await loadWeights(join(straightDir, 'run', 'train.safetensors'))).state;
  const b = (await loadWeights(join(run, 'train.safetensors'))).state;
  let worst = 0;
  for (const [key, tensor] of a) tensor.data.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - (b.get(key)!.data[i] as number)))));
  t.log(`interrupted at step ${stoppedAt}; max |uninterrupted - resumed| = ${worst}`);
  t.is(worst, 0, 'resumed weights equal the uninterrupted run exactly');
});

// ---------------------------------------------------------------------------------------------------------------
// Bad inputs: fail before any work, exit 1 or 2, one line naming the argument, nothing written

interface BadCase {
  name: string;
  /** Builds the arguments in dir (the files it needs are written there). */
  args: (dir: string) => Promise<string[]>;
  code: 1 | 2;
  mentions: RegExp;
}

const valid = (dir: string): Promise<string> => writeData(dir, 'train', 16, 3);

const BAD_CASES: BadCase[] = [
  {
    name: 'a negative training label',
    args: async (dir) => ['--train-npy', await writeData(dir, 'train', 16, 3, { labels: (y) => (y[5] = -1) }), '--out', join(dir, 'out')],
    code: 1,
    mentions: /--train-npy/,
  },
  {
    name: 'a test label outside the training classes',
    args: async (dir) => ['--train-npy', await valid(dir), '--test-npy', await writeData(dir, 'test', 8, 4, { labels: (y) => (y[2] = CLASSES) }), '--out', join(dir, 'out')],
    code: 1,
    mentions: /--test-npy/,
  },
  {
    name: 'x/y length mismatch',
    args: async (dir) => ['--train-npy', await writeData(dir, 'train', 16, 3, { labelCount: 15 }), '--out', join(dir, 'out')],
    code: 1,
    mentions: /--train-npy/,
  },
  {
    name: 'images too small for the arch (--arch A0 on 16x16)',
    args: async (dir) => ['--train-npy', await valid(dir), '--arch', 'A0', '--out', join(dir, 'out')],
    code: 1,
    mentions: /--arch/,
  },
  {
    name: 'an unwritable --out DIR (under a regular file)',
    args: async (dir) => {
      await writeFile(join(dir, 'file'), 'x');
      return ['--train-npy', await valid(dir), '--out', join(dir, 'file', 'run')];
    },
    code: 1,
    mentions: /--out/,
  },
  {
    name: 'an unwritable --out W.safetensors (under a regular file)',
    args: async (dir) => {
      await writeFile(join(dir, 'file'), 'x');
      return ['--train-npy', await valid(dir), '--out', join(dir, 'file', 'w.safetensors')];
    },
    code: 1,
    mentions: /--out/,
  },
  {
    name: 'an unknown flag',
    args: async (dir) => ['--train-npy', await valid(dir), '--bogus', '--out', join(dir, 'out')],
    code: 2,
    mentions: /--bogus/,
  },
  {
    name: '--lr abc',
    args: async (dir) => ['--train-npy', await valid(dir), '--lr', 'abc', '--out', join(dir, 'out')],
    code: 2,
    mentions: /--lr/,
  },
  {
    name: '--crop-padding as large as the image side (16)',
    args: async (dir) => ['--train-npy', await valid(dir), '--crop-padding', '16', '--out', join(dir, 'out')],
    code: 1,
    mentions: /--crop-padding below the image side 16 but received 16/,
  },
  {
    name: '--crop-padding with --no-augment',
    args: async (dir) => ['--train-npy', await valid(dir), '--crop-padding', '2', '--no-augment', '--out', join(dir, 'out')],
    code: 2,
    mentions: /--crop-padding with --no-augment/,
  },
  {
    name: '--crop-padding x',
    args: async (dir) => ['--train-npy', await valid(dir), '--crop-padding', 'x', '--out', join(dir, 'out')],
    code: 2,
    mentions: /--crop-padding/,
  },
  {
    name: 'both --dataset and --train-npy',
    args: async (dir) => ['--dataset', 'fashion-mnist', '--train-npy', await valid(dir), '--out', join(dir, 'out')],
    code: 2,
    mentions: /--dataset.*--train-npy|--train-npy.*--dataset/,
  },
];

for (const c of BAD_CASES) {
  test(`train fails early on ${c.name}`, async (t) => {
    const dir = await tempDir(t);
    const args = await c.args(dir);
    const before = (await readdir(dir)).sort();
    const started = performance.now();
    const r = await cli(['train', ...args]);
    const seconds = (performance.now() - started) / 1000;
    t.is(r.code, c.code, describe(r));
    const lines = r.stderr.trimEnd().split('\n');
    t.is(lines.length, 1, `one line on stderr: ${r.stderr}`);
    t.regex(lines[0] ?? '', /^repvgg: /);
    t.regex(lines[0] ?? '', c.mentions, 'the message names the argument');
    t.notRegex(r.stderr, /^epoch /m, 'no training step was taken');
    t.is(r.stdout, '');
    t.deepEqual((await readdir(dir)).sort(), before, 'nothing was written');
    t.log(`${lines[0]} (${seconds.toFixed(1)} s)`);
  });
}
