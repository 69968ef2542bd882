// `repvgg bench` and its library (lib/bench/): every requested combination measured once with sane statistics, the
// deployed form's activation memory below the training-time form's (the paper's memory claim, on our plans), the
// onnxruntime-node peer, the paper's figures labelled as another card, JSON and SVG outputs, and bad options as
// typed errors; and the per-thread CPU accounting bench/serve.ts reports. Speeds themselves are never asserted
// (machines differ; bench/ holds the speed goals).

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';

import { cpuCapabilities } from '../lib/backends.js';
import { speedChartSvg } from '../lib/bench/chart.js';
import { MAX_ROUNDS, measureInterleaved, measureThroughput, pairedRatio, quantile } from '../lib/bench/measure.js';
import { garbageCollectionsDuring, profiledBackend } from '../lib/bench/train-profile.js';
import { PAPER_1080TI_IMAGES_PER_SECOND, benchmarkSpeed, randomImages, unitScaledLayers, type SpeedRow } from '../lib/bench/speed.js';
import { ArgumentValueError } from '../lib/errors.js';
import type { TrainBackend } from '../lib/autograd/backend.js';
import { cpuBackend } from '../lib/autograd/cpu-backend.js';
import * as F from '../lib/autograd/functions.js';
import { Tape } from '../lib/autograd/tape.js';
import { randomStateDict, seededUniform } from '../lib/models/init.js';
import { blocksOf, officialSpec } from '../lib/models/repvgg.js';
import { TrainableRepVGG } from '../lib/train/model.js';
import { miniSpec } from '../lib/train/presets.js';
import { reparameterize } from '../lib/reparam/reparam.js';
import type { DeployedModel } from '../lib/reparam/types.js';
import { cpuSecondsBetween, threadCpuTimes, type ThreadCpu } from '../bench/process.js';
import { cli, describeResult } from './helpers/cli-runner.js';
import { conv2dRef, reluRef, type RefTensor } from './helpers/reference.js';

const TINY = { size: 32, seconds: 0.01 } as const;

test('quantile interpolates between order statistics', (t) => {
  t.is(quantile([1, 2, 3, 4], 0.5), 2.5);
  t.is(quantile([1, 2, 3, 4], 0), 1);
  t.is(quantile([1, 2, 3, 4], 1), 4);
  t.is(quantile([10], 0.9), 10);
  t.true(Math.abs(quantile([0, 10, 20], 0.1) - 2) < 1e-12);
});

/** A clock that only moves when an engine runs: each engine's run takes its own fixed number of milliseconds. */
function fakeEngines<K extends string>(msPerRun: Record<K, number>) {
  let clock = 0;
  const calls: string[] = [];
  const runs = Object.fromEntries(Object.entries<number>(msPerRun).map(([key, ms]) => [key, async () => {
    calls.push(key);
    clock += ms;
  }])) as Record<K, () => Promise<void>>;
  return { runs, calls, now: () => clock };
}

test('measureInterleaved: warm-ups first, then rounds in alternating order, each engine timed over all its runs', async (t) => {
  const { runs, calls, now } = fakeEngines({ a: 10, b: 40 });
  const result = await measureInterleaved(runs, 8, { seconds: 0.4, rounds: 4, warmupRuns: 1, minRuns: 4, now });
  t.deepEqual(calls.slice(0, 2), ['a', 'b'], 'one warm-up each');
  // Each round gives each engine 100 ms: a runs 10 times, b 3 times (the third run passes 100 ms).
  const turns = calls.slice(2).reduce<string[]>((seq, key) => (seq.at(-1) === key ? seq : [...seq, key]), []);
  t.deepEqual(turns, ['a', 'b', 'a', 'b', 'a'], 'a b | b a | a b | b a: the same order every round would give 8 turns');
  t.is(result.a.timedRuns, 40);
  t.is(result.b.timedRuns, 12);
  t.is(result.a.medianImagesPerSecond, 800, '8 images in 10 ms');
  t.is(result.b.medianImagesPerSecond, 200);
  t.is(result.b.p10ImagesPerSecond, 200);
  t.deepEqual(result.a.roundMedians, [800, 800, 800, 800]);
  t.is(pairedRatio(result.a, result.b), 4);
});

test('pairedRatio compares round with round: a machine that slows down mid-run does not bias it', (t) => {
  const throughput = (roundMedians: number[] | undefined, median: number) => ({
    medianImagesPerSecond: median, p10ImagesPerSecond: median, p90ImagesPerSecond: median, timedRuns: 10, ...(roundMedians && { roundMedians }),
  });
  // a is twice as fast as b in every round, the machine twice as fast in the first round as in the others. Overall
  // medians taken over different mixes of fast and slow moments can say anything (here 1.0); the paired ratio says 2.
  const a = throughput([200, 100, 100], 100);
  const b = throughput([100, 50, 50], 100);
  t.is(pairedRatio(a, b), 2);
  t.is(pairedRatio(b, a), 0.5);
  t.is(pairedRatio(throughput(undefined, 30), throughput(undefined, 20)), 1.5, 'one round: the overall medians');
  t.is(pairedRatio(a, throughput([1, 2], 50)), 2, 'different round counts: the overall medians');
});

test('measureInterleaved runs each engine at least minRuns times; measureThroughput is one round of one engine', async (t) => {
  const { runs, calls, now } = fakeEngines({ slow: 1000, fast: 1 });
  const result = await measureInterleaved(runs, 1, { seconds: 0.002, rounds: 3, warmupRuns: 0, minRuns: 5, now });
  t.is(result.slow.timedRuns, 6, 'ceil(5 / 3) = 2 runs in each of 3 rounds, though one run spends the budget');
  t.true(result.fast.timedRuns >= 6);
  t.is(result.slow.medianImagesPerSecond, 1);
  calls.length = 0;
  const single = await measureThroughput(runs.fast, 4, { seconds: 0.01, warmupRuns: 2, minRuns: 3, now });
  t.is(calls.length, 2 + 10, '2 warm-ups, then 1 ms runs until 10 ms');
  t.is(single.medianImagesPerSecond, 4000);
  for (const rounds of [0, 1.5, MAX_ROUNDS + 1]) {
    await t.throwsAsync(measureInterleaved(runs, 1, { seconds: 0, rounds, now }), { instanceOf: ArgumentValueError, message: new RegExp(`rounds but received ${rounds}`) });
  }
  await t.throwsAsync(measureInterleaved({}, 1, { seconds: 0 }), { instanceOf: ArgumentValueError, message: /at least one engine/ });
});

test('unitScaledLayers: every layer of the scaled random B0 has unit-RMS pre-activations in float64, where the raw one grows past 1000x', async (t) => {
  const spec = officialSpec('B0', { numClasses: 10 });
  const raw = reparameterize(spec, randomStateDict(spec, 'train', 1));
  const images = randomImages(2, 32, 5);
  const scaled = await unitScaledLayers(raw, images);
  // Pre-activation RMS of each layer, by the float64 reference (no library op).
  const layerRms = (model: DeployedModel): number[] => {
    let act: RefTensor = { data: Float64Array.from(images.data), shape: images.shape };
    return model.layers.map((l) => {
      const y = conv2dRef(act, { data: l.weight, shape: [l.outChannels, l.inChannels / l.groups, 3, 3] }, l.bias, { stride: l.stride, pad: 1, groups: l.groups });
      act = reluRef(y);
      let squares = 0;
      for (const v of y.data) squares += v * v;
      return Math.sqrt(squares / y.data.length);
    });
  };
  const rawRms = layerRms(raw);
  t.true(rawRms.at(-1)! / rawRms[0]! > 1000, `raw random weights grow: ${rawRms[0]} -> ${rawRms.at(-1)}`);
  const scaledRms = layerRms(scaled);
  for (const [i, rms] of scaledRms.entries()) t.true(Math.abs(rms - 1) < 1e-4, `layer ${i}: RMS ${rms}`);
  t.is(scaled.linearWeight, raw.linearWeight, 'the head is left as it was');
});

test('garbageCollectionsDuring counts the collections an allocating task causes and returns its result', async (t) => {
  const { result, collections, ms } = await garbageCollectionsDuring(async () => {
    // ~200 MB of short-lived objects (each escapes into a ring of 1000): far more than V8's young generation
    // holds, so it must collect.
    const ring: { value: number; pair: number[] }[] = new Array(1000);
    for (let i = 0; i < 2_000_000; i++) ring[i % 1000] = { value: i, pair: [i, i + 1] };
    return ring[999]!.value;
  });
  t.is(result, 1_999_999);
  t.true(collections >= 1, `${collections} collections`);
  t.true(ms > 0, `${ms} ms`);
});

test('profiledBackend counts and times every backend call of a training step, in both modes, without changing its result', async (t) => {
  const spec = miniSpec(1, 10);
  const uniform = seededUniform(11);
  const images = { shape: [4, 1, 28, 28], data: Float32Array.from({ length: 4 * 28 * 28 }, () => 2 * uniform() - 1) };
  const labels = Int32Array.of(1, 2, 3, 4);
  type Shaped = { readonly shape: readonly number[] };
  const stepLoss = async <V extends Shaped, G>(backend: TrainBackend<V, G>): Promise<number> => {
    const net = await TrainableRepVGG.onBackend(backend, spec, TrainableRepVGG.init(spec, 1).stateDict());
    const tape = new Tape(backend);
    const { loss, value } = await F.softmaxCrossEntropy(tape, await net.forward(tape, images), labels, 0.1);
    await tape.backward(loss);
    return value;
  };
  const plain = await stepLoss(cpuBackend);
  const convs = 2 * blocksOf(spec).length; // a 3x3 and a 1x1 branch per block
  for (const mode of ['async', 'sync'] as const) {
    const profiled = profiledBackend(cpuBackend, mode);
    t.is(await stepLoss(profiled.backend), plain, `${mode}: the same loss`);
    const conv = profiled.times.get('conv2d');
    const backward = profiled.times.get('conv2dBackward');
    t.is(conv?.calls, convs, `${mode}: conv2d calls`);
    t.is(backward?.calls, convs, `${mode}: conv2dBackward calls`);
    t.is(conv?.syncs, mode === 'sync' ? convs : 0, `${mode}: one sync per call in sync mode only`);
    t.true((conv?.ms ?? 0) > 0);
    t.is(profiled.times.get('releaseValue')?.syncs ?? 0, 0, 'synchronous methods are never synced');
    profiled.reset();
    t.is(profiled.times.size, 0);
    t.true(await profiled.idleSyncMs(3) >= 0);
  }
});

test('benchmarkSpeed measures every combination once, on the backend asked, with the deployed form leaner than the training-time form', async (t) => {
  const progress: string[] = [];
  const { bf16 } = cpuCapabilities(); // bf16 where oneDNN has it for this CPU (AVX-512 on), else the refusal below
  const precisions = bf16 ? ['fp32', 'bf16', 'int8'] as const : ['fp32', 'int8'] as const;
  const rows = await benchmarkSpeed({
    models: ['A0'], backend: 'cpu', precisions: [...precisions], batches: [1, 2], peer: true, ...TINY,
    onProgress: (line) => progress.push(line),
  });
  const key = (r: SpeedRow): string => `${r.engine} ${r.precision} ${r.form} ${r.batch}`;
  t.deepEqual(rows.map(key).sort(), [
    'onnxruntime-node fp32 deploy 1', 'onnxruntime-node fp32 deploy 2',
    ...(bf16 ? ['ours bf16 deploy 1', 'ours bf16 deploy 2', 'ours bf16 train 1', 'ours bf16 train 2'] : []),
    'ours fp32 deploy 1', 'ours fp32 deploy 2', 'ours fp32 train 1', 'ours fp32 train 2',
    'ours int8 deploy 1', 'ours int8 deploy 2', // int8 needs deployed, calibrated weights: no training-time row
  ]);
  for (const r of rows) {
    const { medianImagesPerSecond: median, p10ImagesPerSecond: p10, p90ImagesPerSecond: p90, timedRuns } = r.throughput;
    t.true(Number.isFinite(median) && median > 0, key(r));
    t.true(p10 <= median && median <= p90, `${key(r)}: ${p10} <= ${median} <= ${p90}`);
    t.true(timedRuns >= 5, key(r));
    t.is(r.backend, 'cpu');
    t.is(r.model, 'A0');
    if (r.engine === 'ours') t.true((r.activationBytes ?? 0) > 0 && (r.weightBytes ?? 0) > 0, key(r));
  }
  for (const precision of precisions.filter((p) => p !== 'int8')) {
    for (const batch of [1, 2]) {
      const find = (form: string): SpeedRow => rows.find((r) => r.engine === 'ours' && r.precision === precision && r.form === form && r.batch === batch)!;
      t.true(find('deploy').activationBytes! < find('train').activationBytes!, `${precision} batch ${batch}: deployed activations below the training-time form's`);
    }
  }
  t.true(progress.some((line) => /A0 fp32 deploy batch 2: [\d.]+ img\/s/.test(line)), progress.join('\n'));
});

test('benchmarkSpeed refuses bad options before measuring anything, naming the option and value', async (t) => {
  const base = { models: ['A0'], backend: 'cpu', precisions: ['fp32'], batches: [1], ...TINY } as const;
  const refuse = async (overrides: object, pattern: RegExp): Promise<void> => {
    const error = await t.throwsAsync(() => benchmarkSpeed({ ...base, ...overrides }), { instanceOf: ArgumentValueError });
    t.regex(error?.message ?? '', pattern);
  };
  await refuse({ models: ['Z9'] }, /Z9/);
  await refuse({ precisions: ['fp16'] }, /precisions on the cpu backend.*'fp16'/);
  await refuse({ backend: 'cuda', precisions: ['bf16'] }, /precisions on the cuda backend.*'bf16'/);
  const cpu = cpuCapabilities();
  if (!cpu.bf16) await refuse({ precisions: ['fp32', 'bf16'] }, new RegExp(`for precisions on this CPU \\(oneDNN's instruction set here is ${cpu.isa};.*received 'bf16'`));
  await refuse({ batches: [0] }, /batches.*0/);
  await refuse({ batches: [] }, /batch size/);
  await refuse({ batches: [4096], size: 4096 }, /1 GiB of input/);
  await refuse({ size: 16 }, /size.*16/);
  await refuse({ seconds: 0 }, /seconds/);
  await refuse({ backend: 'cuda', profile: true }, /cpu backend for profile/);
});

test("the chart draws the paper's line only on a comparable scale, and says so otherwise", (t) => {
  const row = (median: number): SpeedRow => ({
    model: 'A0', engine: 'ours', backend: 'cuda', precision: 'fp32', form: 'deploy', batch: 128,
    throughput: { medianImagesPerSecond: median, p10ImagesPerSecond: median * 0.9, p90ImagesPerSecond: median * 1.1, timedRuns: 5 },
  });
  const gpu = speedChartSvg([row(5000)], 'H200', PAPER_1080TI_IMAGES_PER_SECOND);
  t.regex(gpu, /stroke-dasharray="6,4"/);
  t.regex(gpu, /paper, 1080 Ti: 3256</);
  const cpu = speedChartSvg([row(150)], 'EPYC', PAPER_1080TI_IMAGES_PER_SECOND);
  t.notRegex(cpu, /stroke-dasharray="6,4"/);
  t.regex(cpu, /paper, 1080 Ti: 3256 img\/s \(off this scale\)/);
  t.regex(cpu, /another card/);
});

test('repvgg bench prints the table and the paper reference, and writes the same rows as JSON and an SVG', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'repvgg-bench-'));
  try {
    const json = join(dir, 'bench.json');
    const plot = join(dir, 'bench.svg');
    const r = await cli(['bench', '--models', 'RepVGG-A0,B1g4', '--batches', '1', '--size', '32', '--seconds', '0.01', '--json', json, '--plot', plot]);
    t.is(r.code, 0, describeResult(r));
    t.regex(r.stdout, /\| model \| engine \| backend \| precision \| form \| batch \| img\/s \(median\)/);
    t.regex(r.stdout, /\| A0 \| ours \| cpu \| fp32 \| deploy \| 1 \| [\d.]+ \|/);
    t.regex(r.stdout, /\| B1g4 \| ours \| cpu \| fp32 \| train \| 1 \| [\d.]+ \|/);
    t.regex(r.stdout, /a different card: GTX 1080 Ti, fp32, batch 128/);
    t.regex(r.stdout, /\| B1g4 \| 868 \|/);
    t.regex(r.stderr, /bench: A0 fp32 deploy batch 1: [\d.]+ img\/s/);
    const written = JSON.parse(await readFile(json, 'utf8')) as { results: SpeedRow[]; paper1080Ti: Record<string, number> };
    t.is(written.results.length, 4);
    t.is(written.paper1080Ti['A0'], 3256);
    for (const row of written.results) t.regex(r.stdout, new RegExp(`\\| ${row.model} \\| ours \\| cpu \\| fp32 \\| ${row.form} \\| 1 \\| ${row.throughput.medianImagesPerSecond.toFixed(1)} \\|`));
    const svg = await readFile(plot, 'utf8');
    t.true(svg.startsWith('<svg'));
    t.regex(svg, /RepVGG-A0/);
    t.regex(svg, /RepVGG-B1g4/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('repvgg bench with bad flags exits 2 (usage) or 1 (a value the backend refuses) with one line naming it', async (t) => {
  const oneLine = (stderr: string): string[] => stderr.split('\n').filter((l) => l !== '' && !l.startsWith('bench: '));
  for (const [args, code, pattern] of [
    [['--models', 'Z9'], 2, /--models.*'Z9'/],
    [['--batches', '1,0'], 2, /--batches.*'0'/],
    [['--batches', '1,,8'], 2, /--batches/],
    [['--precision', 'fp64'], 2, /--precision.*'fp64'/],
    [['--precision', 'fp16'], 1, /precisions on the cpu backend.*'fp16'/],
    [['--seconds', '-1'], 2, /--seconds/],
  ] as const) {
    const r = await cli(['bench', '--size', '32', ...args]);
    t.is(r.code, code, `${args.join(' ')}: ${describeResult(r)}`);
    const lines = oneLine(r.stderr);
    t.is(lines.length, 1, r.stderr);
    t.regex(lines[0] ?? '', pattern);
    t.notRegex(r.stderr, /\n\s+at /);
  }
});

test('cpuSecondsBetween splits the CPU used between two snapshots by nice value, counting new threads from zero', (t) => {
  const snapshot = (entries: Array<[string, number, number]>) => new Map<string, ThreadCpu>(entries.map(([task, nice, seconds]) => [task, { nice, seconds }]));
  const before = snapshot([['100', 0, 1.5], ['101', 10, 2], ['102', 10, 4], ['103', 0, 7]]);
  // 101 used 0.75 s and 102 nothing at nice 10, 104 started (0.25 s); 100 used 0.5 s at nice 0, 103 exited.
  const after = snapshot([['100', 0, 2], ['101', 10, 2.75], ['102', 10, 4], ['104', 10, 0.25]]);
  t.deepEqual(cpuSecondsBetween(before, after, 10), { atNice: 1, others: 0.5 });
  t.deepEqual(cpuSecondsBetween(before, after, 0), { atNice: 0.5, others: 1 });
  t.deepEqual(cpuSecondsBetween(before, after, Number.NaN), { atNice: 0, others: 1.5 }, 'NaN matches no thread');
});

test('threadCpuTimes agrees with process.cpuUsage and sees the main thread burn its CPU (Linux /proc)', (t) => {
  const cpuStart = process.cpuUsage();
  const before = threadCpuTimes();
  if (before === undefined) {
    t.not(process.platform, 'linux', '/proc/self/task is readable on Linux');
    return;
  }
  const mainThread = String(process.pid); // the main thread's id is the process id (ava runs test files in processes)
  t.true(before.has(mainThread), `main thread ${mainThread} among ${[...before.keys()].join(', ')}`);
  let spin = 0;
  while (process.cpuUsage(cpuStart).user < 300_000) spin += Math.sqrt(spin + 1); // at least 300 ms of CPU
  const after = threadCpuTimes()!;
  const cpu = process.cpuUsage(cpuStart);
  t.true(spin > 0);
  const mainUsed = after.get(mainThread)!.seconds - before.get(mainThread)!.seconds;
  t.true(mainUsed >= 0.2, `main thread used ${mainUsed} s of CPU`);
  // /proc counts in 10 ms ticks per thread: the totals agree to about a tick per thread.
  const procTotal = cpuSecondsBetween(before, after, Number.NaN).others;
  const cpuTotal = (cpu.user + cpu.system) / 1e6;
  t.true(Math.abs(procTotal - cpuTotal) <= 0.01 * after.size + 0.02, `/proc ${procTotal} s vs process.cpuUsage ${cpuTotal} s over ${after.size} threads`);
});
