// The CLI with the inputs real users bring, end to end as child processes: JPEG/PNG files and folders through
// `infer --images` (text and the --json contract, labels, unreadable files skipped with exit 1), image-folder
// training and evaluation (`--train-dir`/`--val-dir`, top-5), fine-tuning (`--init` with another class count, the
// head replaced; `--freeze-backbone`), timm names through `convert --key-style timm`, and the defects found by
// trying the CLI as a new user: --arch ignored for --init, the class count of --init runs, --resume needing data
// flags, convert refusing custom specs, an output path equal to an input, stale temp files and unbounded checkpoints.
// Not for: the decoders themselves (images.test.ts, pth.test.ts) or training numerics (train.test.ts).

import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { writeSyntheticImageFolder } from '../bench/synthetic-images.js';
import { withKeyStyle } from '../lib/io/keys.js';
import { readNpy, writeNpy } from '../lib/io/npy.js';
import { writeSafetensors } from '../lib/io/safetensors.js';
import { loadWeights, saveWeights } from '../lib/io/weights.js';
import { randomStateDict } from '../lib/models/init.js';
import { officialSpec } from '../lib/models/repvgg.js';
import { miniSpec } from '../lib/train/presets.js';
import { cli, describeResult as describe, type CliResult } from './helpers/cli-runner.js';
import { fixturePath } from './helpers/fixture-weights.js';
import { makeRng, maxRelativeError } from './helpers/reference.js';
import { MODEL_FP32 } from './helpers/tolerances.js';

/** Asserts a failed run: the exit code, one 'repvgg: ' stderr line without a stack trace, matching every pattern. */
function expectError(t: ExecutionContext, r: CliResult, code: 1 | 2, patterns: readonly RegExp[]): void {
  t.is(r.code, code, describe(r));
  const lines = r.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('epoch '));
  t.is(lines.length, 1, `one stderr line expected:\n${r.stderr}`);
  t.notRegex(r.stderr, /unexpected error|\n\s+at /);
  for (const p of patterns) t.regex(lines[0] ?? '', p);
}

function expectOk(t: ExecutionContext, r: CliResult): CliResult {
  t.is(r.code, 0, describe(r));
  return r;
}

let scratch = '';
/** Synthetic image folders: 4 classes for training/validation, 3 other classes for fine-tuning. */
let trainDir = '';
let valDir = '';
let otherDir = '';
/** A run folder trained on trainDir (made once, shared). */
let runPromise: Promise<{ dir: string; result: CliResult }> | undefined;

test.before(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'repvgg-real-inputs-'));
  trainDir = join(scratch, 'shapes', 'train');
  valDir = join(scratch, 'shapes', 'val');
  otherDir = join(scratch, 'other', 'train');
  await writeSyntheticImageFolder(trainDir, { classes: 4, imagesPerClass: 12, minSide: 36, maxSide: 64, seed: 1 });
  await writeSyntheticImageFolder(valDir, { classes: 4, imagesPerClass: 4, minSide: 36, maxSide: 64, seed: 2 });
  await writeSyntheticImageFolder(otherDir, { classes: 3, imagesPerClass: 6, minSide: 36, maxSide: 64, seed: 3, firstPattern: 4 });
});

test.after.always(async () => {
  if (scratch !== '') await rm(scratch, { recursive: true, force: true });
});

const fresh = (name: string): Promise<string> => mkdtemp(join(scratch, `${name}-`));

/** `train --train-dir --val-dir` of the default mini net at 32x32, 2 epochs: the run the image tests share. */
function imageFolderRun(): Promise<{ dir: string; result: CliResult }> {
  runPromise ??= (async () => {
    const dir = join(await fresh('run'), 'run');
    const result = await cli(['train', '--train-dir', trainDir, '--val-dir', valDir, '--image-size', '32', '--epochs', '2', '--batch-size', '16', '--out', dir]);
    return { dir, result };
  })();
  return runPromise;
}

/** Writes (N, C, S, S) float32 images in [-1, 1] and int64 labels; returns 'x.npy,y.npy'. */
async function npyData(dir: string, count: number, channels: number, side: number, labels: (i: number) => number): Promise<string> {
  const rng = makeRng(count * 31 + side);
  const x = new Float32Array(count * channels * side * side).map(() => 2 * rng() - 1);
  const y = new BigInt64Array(count).map((_, i) => BigInt(labels(i)));
  await writeNpy(join(dir, 'x.npy'), x, [count, channels, side, side]);
  await writeNpy(join(dir, 'y.npy'), y, [count]);
  return `${join(dir, 'x.npy')},${join(dir, 'y.npy')}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Image folders: training, evaluation, classification

test('train --train-dir/--val-dir writes a run whose weights record the class names; eval --val-dir agrees', async (t) => {
  const { dir, result } = await imageFolderRun();
  expectOk(t, result);
  t.regex(result.stdout, /trained RepVGG-mini/);
  const classes = ['0-stripes', '1-rings', '2-checker', '3-dots'];
  t.is(await readFile(join(dir, 'classes.txt'), 'utf8'), classes.join('\n') + '\n');
  const weights = await loadWeights(join(dir, 'deploy.safetensors'));
  t.is(weights.spec.numClasses, 4);
  t.is(weights.spec.inChannels, 3);
  t.deepEqual(JSON.parse(weights.metadata.class_names ?? '[]'), classes);
  const summary = JSON.parse(await readFile(join(dir, 'summary.json'), 'utf8')) as { deploy_test_accuracy: number; config: { data: unknown } };
  t.deepEqual(summary.config.data, { kind: 'image-folder', trainDir, valDir, imageSize: 32 });
  const evalRun = expectOk(t, await cli(['eval', '--weights', join(dir, 'deploy.safetensors'), '--val-dir', valDir, '--crop', '32']));
  const accuracy = Number(/accuracy ([\d.]+)% on 16 images/.exec(evalRun.stdout)?.[1]);
  t.is(accuracy, Number((summary.deploy_test_accuracy * 100).toFixed(2)), evalRun.stdout);
  // Fewer than 5 classes: no top-5 line.
  t.notRegex(evalRun.stdout, /top-5/);
});

test('infer --images prints top-k per image for files and folders, --json follows the contract, labels come from the weights', async (t) => {
  const { dir, result } = await imageFolderRun();
  expectOk(t, result);
  const weights = join(dir, 'deploy.safetensors');
  const file = join(valDir, '1-rings', 'img0000.jpg');
  const text = expectOk(t, await cli(['infer', '--weights', weights, '--images', file, join(valDir, '2-checker'), '--top', '2', '--crop', '32']));
  const lines = text.stdout.trim().split('\n');
  t.is(lines.length, 5, text.stdout); // the file, then the folder's 4 images in name order
  t.true(lines[0]!.startsWith(`${file}: `));
  t.true(lines[1]!.startsWith(`${join(valDir, '2-checker', 'img0000.jpg')}: `));
  t.regex(lines[0]!, /^\S+: \d-\w+ \(\d\) [01]\.\d{4}, \d-\w+ \(\d\) [01]\.\d{4}$/);

  const json = expectOk(t, await cli(['infer', '--weights', weights, '--images', join(valDir, '0-stripes'), '--json', '--top', '3', '--crop', '32']));
  const rows = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as { file: string; top: { index: number; label: string | null; probability: number }[] });
  t.is(rows.length, 4);
  for (const row of rows) {
    t.deepEqual(Object.keys(row), ['file', 'top']);
    t.is(row.top.length, 3);
    for (const c of row.top) {
      t.deepEqual(Object.keys(c), ['index', 'label', 'probability']);
      t.is(c.label, ['0-stripes', '1-rings', '2-checker', '3-dots'][c.index] ?? 'no such class');
    }
    t.true(row.top[0]!.probability >= row.top[1]!.probability && row.top[1]!.probability >= row.top[2]!.probability);
    const total = row.top.reduce((s, c) => s + c.probability, 0);
    t.true(total > 0 && total <= 1 + 1e-9);
  }
  // --labels FILE overrides the recorded names.
  const labelsFile = join(await fresh('labels'), 'names.txt');
  await writeFile(labelsFile, 'alpha\nbeta\ngamma\ndelta\n');
  const named = expectOk(t, await cli(['infer', '--weights', weights, '--images', file, '--json', '--labels', labelsFile, '--crop', '32']));
  const top = (JSON.parse(named.stdout) as { top: { index: number; label: string }[] }).top;
  for (const c of top) t.is(c.label, ['alpha', 'beta', 'gamma', 'delta'][c.index] ?? 'no such class');
});

test('infer --images skips unreadable files with a line each, classifies the rest, and exits 1 at the end', async (t) => {
  const { dir, result } = await imageFolderRun();
  expectOk(t, result);
  const bad = await fresh('bad-images');
  await writeFile(join(bad, 'empty.jpg'), '');
  await writeFile(join(bad, 'text.png'), 'this is not an image');
  const good = await readFile(join(valDir, '1-rings', 'img0000.jpg'));
  await writeFile(join(bad, 'truncated.jpg'), good.subarray(0, Math.floor(good.length / 2)));
  await copyFile(join(valDir, '1-rings', 'img0000.jpg'), join(bad, 'ok.jpg'));
  const r = await cli(['infer', '--weights', join(dir, 'deploy.safetensors'), '--images', bad, join(bad, 'missing.jpg'), '--crop', '32']);
  t.is(r.code, 1, describe(r));
  t.is(r.stdout.trim().split('\n').length, 1, 'the readable image is still classified');
  t.true(r.stdout.startsWith(join(bad, 'ok.jpg')));
  for (const name of ['missing.jpg', 'empty.jpg', 'text.png', 'truncated.jpg']) t.regex(r.stderr, new RegExp(`skipped \\S*${name.replace('.', '\\.')}: `), name);
  t.regex(r.stderr, /4 of 5 images could not be classified/);
  t.notRegex(r.stderr, /unexpected error|\n\s+at /);
});

test('fine-tuning: --init with another class count replaces the head and says so; --freeze-backbone trains only the head', async (t) => {
  const { dir, result } = await imageFolderRun();
  expectOk(t, result);
  const out = await fresh('finetune');
  const init = join(dir, 'train.safetensors');
  const full = await cli(['train', '--train-dir', otherDir, '--init', init, '--image-size', '32', '--epochs', '1', '--batch-size', '6', '--out', join(out, 'full.safetensors')]);
  expectOk(t, full);
  t.regex(full.stderr, /has a 4-class head; training a new, freshly initialized 3-class head/);
  const probe = await cli(['train', '--train-dir', otherDir, '--init', init, '--image-size', '32', '--epochs', '1', '--batch-size', '6', '--freeze-backbone', '--out', join(out, 'probe.safetensors')]);
  expectOk(t, probe);
  const before = await loadWeights(init);
  const [fullW, probeW] = [await loadWeights(join(out, 'full.safetensors')), await loadWeights(join(out, 'probe.safetensors'))];
  t.is(probeW.spec.numClasses, 3);
  t.deepEqual(JSON.parse(probeW.metadata.class_names ?? '[]'), ['0-diagonal', '1-blob', '2-cross']);
  for (const [key, tensor] of before.state) {
    if (key.startsWith('linear.')) continue;
    t.deepEqual(probeW.state.get(key)!.data, tensor.data, `${key} unchanged by linear probing (BN statistics included)`);
  }
  const moved = (key: string): boolean => !fullW.state.get(key)!.data.every((v, i) => v === before.state.get(key)!.data[i]);
  t.true(moved('stage0.rbr_dense.conv.weight') && moved('stage1.0.rbr_dense.bn.running_mean'), 'full fine-tuning moves the backbone');
});

// ---------------------------------------------------------------------------------------------------------------
// PyTorch checkpoints (made by test/fixtures/make_official_pth.py with torch.save)

/** Gunzips a committed .pth.gz fixture into the scratch folder. */
async function pthFixture(name: string): Promise<string> {
  const path = join(await fresh('pth'), name);
  await writeFile(path, gunzipSync(await readFile(fixturePath(`pth/${name}.gz`))));
  return path;
}

test('every command takes torch.save checkpoints: logits match PyTorch float64, official or timm/DataParallel/legacy', async (t) => {
  const official = await pthFixture('a0_official_train.pth');
  const timm = await pthFixture('a0_timm_dataparallel_legacy.pth');
  const input = fixturePath('pth/a0_official.input.npy');
  const expected = await readNpy(fixturePath('pth/a0_official.logits.npy'), 'logits');
  const dir = await fresh('pth-cli');
  for (const [name, args] of [['official-no-arch', ['--weights', official]], ['timm-legacy', ['--weights', timm, '--arch', 'A0']]] as const) {
    const output = join(dir, `${name}.npy`);
    expectOk(t, await cli(['infer', ...args, '--input', input, '--output', output]));
    const logits = await readNpy(output, 'logits');
    const error = maxRelativeError(logits.data as Float32Array, Float32Array.from(expected.data as Float64Array));
    t.true(error <= MODEL_FP32, `${name}: max relative error ${error.toExponential(2)} vs PyTorch float64`);
  }
  const deployed = join(dir, 'deploy.safetensors');
  const converted = expectOk(t, await cli(['convert', '--in', timm, '--out', deployed]));
  t.regex(converted.stdout, /converted RepVGG-A0 \(10 classes\)/);
  expectOk(t, await cli(['export-onnx', '--weights', official, '--arch', 'RepVGG-A0', '--out', join(dir, 'a0.onnx')]));
  const data = await npyData(await fresh('pth-train'), 4, 3, 32, (i) => i % 10);
  expectOk(t, await cli(['train', '--train-npy', data, '--test-npy', data, '--init', official, '--arch', 'A0', '--steps', '1', '--batch-size', '4', '--out', join(dir, 'tuned.safetensors')]));
  expectOk(t, await cli(['eval', '--weights', official, '--test-npy', data]));
});

// ---------------------------------------------------------------------------------------------------------------
// The defects

test('train --init FILE --arch A0 uses the flag for a file without metadata (it was ignored)', async (t) => {
  const dir = await fresh('init-arch');
  const spec = officialSpec('A0', { numClasses: 3 });
  const init = join(dir, 'a0.safetensors');
  await writeSafetensors(init, randomStateDict(spec, 'train', 8)); // no metadata, as the official code's exports
  const data = await npyData(dir, 4, 3, 32, (i) => i % 3);
  const r = await cli(['train', '--train-npy', data, '--init', init, '--arch', 'A0', '--steps', '1', '--batch-size', '4', '--out', join(dir, 'out.safetensors')]);
  expectOk(t, r);
  t.is((await loadWeights(join(dir, 'out.safetensors'))).spec.arch, 'RepVGG-A0');
});

test('with --init the class count comes from the weights (or --num-classes), not from the largest .npy label', async (t) => {
  const dir = await fresh('init-classes');
  const spec = officialSpec('A0', { numClasses: 1000 });
  const init = join(dir, 'a0.safetensors');
  await saveWeights(init, spec, 'train', randomStateDict(spec, 'train', 9));
  const data = await npyData(dir, 4, 3, 32, (i) => [3, 940, 17, 0][i]!);
  const out = join(dir, 'out.safetensors');
  expectOk(t, await cli(['train', '--train-npy', data, '--init', init, '--steps', '1', '--batch-size', '4', '--out', out]));
  t.is((await loadWeights(out)).spec.numClasses, 1000, 'the 1000-class head is kept');
  const smaller = await cli(['train', '--train-npy', data, '--init', init, '--num-classes', '941', '--steps', '1', '--batch-size', '4', '--out', join(dir, 'o2.safetensors')]);
  expectOk(t, smaller);
  t.regex(smaller.stderr, /1000-class head; training a new, freshly initialized 941-class head/);
  const outside = await npyData(await fresh('outside'), 4, 3, 32, (i) => [3, 1000, 17, 0][i]!);
  expectError(t, await cli(['train', '--train-npy', outside, '--init', init, '--steps', '1', '--out', join(dir, 'o3.safetensors')]), 1, [/labels in \[0, 1000\)/, /1000 at index 1/]);
});

test('train --resume DIR needs only the folder; stale temp files are removed and only --keep-checkpoints are kept', async (t) => {
  const dir = await fresh('resume');
  const data = await npyData(dir, 16, 1, 16, (i) => i % 3);
  const run = join(dir, 'run');
  expectOk(t, await cli(['train', '--train-npy', data, '--epochs', '3', '--batch-size', '8', '--keep-checkpoints', '2', '--out', run]));
  t.deepEqual((await readdir(join(run, 'checkpoints'))).sort(), ['step-00000004.safetensors', 'step-00000006.safetensors']);
  // A kill during a checkpoint write leaves its temp file; the next --resume removes it.
  const stale = join(run, 'checkpoints', `.step-00000008.safetensors.${process.pid}.0123456789ab.tmp`);
  await writeFile(stale, 'partial');
  await rm(join(run, 'checkpoints', 'step-00000006.safetensors'));
  await rm(join(run, 'summary.json'));
  const resumed = await cli(['train', '--resume', run]);
  expectOk(t, resumed);
  t.regex(resumed.stderr, /removed .*\.step-00000008\.safetensors\.\d+\.0123456789ab\.tmp, left by an interrupted write/);
  t.deepEqual((await readdir(join(run, 'checkpoints'))).sort(), ['step-00000004.safetensors', 'step-00000006.safetensors']);
  t.truthy(JSON.parse(await readFile(join(run, 'summary.json'), 'utf8')));
});

test('convert takes the spec from the metadata of weights that `repvgg train` wrote for the mini net', async (t) => {
  const dir = await fresh('convert-mini');
  const spec = miniSpec(1, 10);
  await saveWeights(join(dir, 'mini.safetensors'), spec, 'train', randomStateDict(spec, 'train', 10));
  const r = expectOk(t, await cli(['convert', '--in', join(dir, 'mini.safetensors'), '--out', join(dir, 'deploy.safetensors')]));
  t.regex(r.stdout, /converted RepVGG-mini \(10 classes\)/);
  const deployed = await loadWeights(join(dir, 'deploy.safetensors'));
  t.is(deployed.form, 'deploy');
  t.deepEqual(deployed.spec, spec);
});

test('convert --key-style timm writes timm names that every command reads back', async (t) => {
  const dir = await fresh('timm');
  const spec = officialSpec('A0', { numClasses: 5 });
  const trainPath = join(dir, 'a0.safetensors');
  await saveWeights(trainPath, spec, 'train', randomStateDict(spec, 'train', 11));
  const timmPath = join(dir, 'a0.timm.safetensors');
  expectOk(t, await cli(['convert', '--in', trainPath, '--out', timmPath, '--key-style', 'timm']));
  const header = (await readFile(timmPath)).subarray(8, 4000).toString('latin1');
  t.regex(header, /"stem\.reparam_conv\.weight"/);
  t.notRegex(header, /rbr_reparam/);
  const loaded = await loadWeights(timmPath);
  t.is(loaded.keyStyle, 'timm');
  const x = join(dir, 'x.npy');
  await writeNpy(x, new Float32Array(3 * 32 * 32).map((_, i) => Math.sin(i)), [1, 3, 32, 32]);
  expectOk(t, await cli(['infer', '--weights', timmPath, '--input', x, '--output', join(dir, 'y.npy')]));
  // Plain timm files (no metadata) need no --arch either: the shapes say A0.
  const bare = join(dir, 'bare.safetensors');
  await writeSafetensors(bare, withKeyStyle(randomStateDict(spec, 'train', 12), 'timm'));
  expectOk(t, await cli(['export-onnx', '--weights', bare, '--out', join(dir, 'a0.onnx')]));
});

test('an output path naming an input is refused before anything is written, and the input is untouched', async (t) => {
  const dir = await fresh('same-path');
  const spec = officialSpec('A0', { numClasses: 2 });
  const weights = join(dir, 'w.safetensors');
  await saveWeights(weights, spec, 'train', randomStateDict(spec, 'train', 13));
  const x = join(dir, 'x.npy');
  await writeNpy(x, new Float32Array(3 * 32 * 32).fill(0.25), [1, 3, 32, 32]);
  await symlink(weights, join(dir, 'link.safetensors'));
  const original = await readFile(weights);
  const originalX = await readFile(x);
  const data = await npyData(await fresh('same-path-data'), 4, 3, 32, (i) => i % 2);
  const cases: [string[], RegExp][] = [
    [['convert', '--in', weights, '--out', weights], /--out to be another file than --in/],
    [['convert', '--in', weights, '--out', join(dir, '.', 'link.safetensors')], /--out to be another file than --in/],
    [['infer', '--weights', weights, '--input', x, '--output', weights], /--output to be another file than --weights/],
    [['infer', '--weights', weights, '--input', x, '--output', x], /--output to be another file than --input/],
    [['export-onnx', '--weights', weights, '--out', weights], /--out to be another file than --weights/],
    [['train', '--train-npy', data, '--init', weights, '--steps', '1', '--out', weights], /--out to be another file than --init/],
  ];
  for (const [args, pattern] of cases) expectError(t, await cli(args), 2, [pattern]);
  t.true((await readFile(weights)).equals(original), '--weights untouched');
  t.true((await readFile(x)).equals(originalX), '--input untouched');
  t.deepEqual((await readdir(dir)).sort(), ['link.safetensors', 'w.safetensors', 'x.npy']);
});

test('usage errors of the new flags name the flag', async (t) => {
  const dir = await fresh('usage');
  await mkdir(join(dir, 'empty'));
  expectError(t, await cli(['train', '--val-dir', valDir, '--out', join(dir, 'r')]), 2, [/--train-dir with --val-dir/]);
  expectError(t, await cli(['train', '--train-dir', trainDir, '--dataset', 'fashion-mnist', '--out', join(dir, 'r')]), 2, [/not several/]);
  expectError(t, await cli(['train', '--train-dir', join(dir, 'empty'), '--out', join(dir, 'r')]), 1, [/empty/]);
  expectError(t, await cli(['train', '--train-dir', trainDir, '--freeze-backbone', '--out', join(dir, 'r')]), 2, [/--init weights with --freeze-backbone/]);
  expectError(t, await cli(['infer', '--weights', 'w', '--images', 'a.jpg', '--input', 'x.npy']), 2, [/exactly one of --input/]);
  expectError(t, await cli(['infer', '--weights', 'w', '--input', 'x.npy', '--output', 'y.npy', 'stray']), 2, [/'stray'/]);
  expectError(t, await cli(['convert', '--in', 'w', '--out', 'o', '--key-style', 'keras']), 2, [/--key-style/, /'keras'/]);
  expectError(t, await cli(['train', '--resume', join(dir, 'r'), '--init', 'w']), 2, [/no --init with --resume/]);
});
