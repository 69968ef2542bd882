// CPU throughput benchmark: for each RepVGG variant, times our deployed network (fp32, bf16 and int8), our
// training-time network (fp32), onnxruntime-node on the same deployed model and onnxruntime-node on our int8 QDQ
// export, after checking that all of them agree with onnxruntime (the int8 ones with our fp32 and with each other) on
// one random batch. The six engines are timed in turns (12 interleaved rounds per batch size, `--seconds` per engine in
// all) and the ratios are medians of per-round ratios, so that they do not depend on when the machine was fast. int8 is
// calibrated (lib/quant/calibrate.ts) on a few other random images. Prints markdown tables on stdout and progress on
// stderr; optionally writes every number as JSON (--json) and a grouped bar chart as SVG (--plot). Weights are random
// (with random BN statistics), so only speed, memory and agreement are meaningful, not the predicted classes.
// With --profile it also prints, per model and batch, where each deployed precision spends its time, layer by layer
// (RepVGGNetwork.profile: every primitive timed on its own).
// Usage: USAGE below (`node dist/bench/cpu.js --help`).
// Not for: accuracy against PyTorch (test/reference.test.ts) or the GPU backend.

import { writeFile } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';

import { InferenceSession, Tensor } from 'onnxruntime-node';

import { cpuCapabilities } from '../lib/backends.js';
import { loadCpuAddon } from '../lib/backend/native.js';
import { archList, integerList, parseBenchArgs, positiveNumber, runBench } from '../lib/bench/args.js';
import { barChartSvg } from '../lib/bench/chart.js';
import { markdownTable } from '../lib/bench/report.js';
import { randomImages } from '../lib/bench/speed.js';
import { measureInterleaved, pairedRatio, type Throughput } from '../lib/bench/measure.js';
import { RepVGGNetwork, type NetworkProfile, type PlanReport } from '../lib/engine.js';
import { ONNX_INPUT_NAME, ONNX_OUTPUT_NAME, encodeOnnx } from '../lib/io/onnx.js';
import { randomStateDict } from '../lib/models/init.js';
import { officialSpec, type RepVGGSpec } from '../lib/models/repvgg.js';
import { calibrate, type CalibrationResult } from '../lib/quant/calibrate.js';
import { reparameterize } from '../lib/reparam/reparam.js';
import type { HostTensor } from '../lib/tensor.js';
import { maxRelativeError } from '../test/helpers/reference.js';

const IMAGE_SIZE = 224;
const NUM_CLASSES = 1000;
const WEIGHT_SEED = 1;
const INPUT_SEED = 2;
/** Images in the batch that every engine is checked on before timing. */
const CHECK_BATCH = 8;
/** Timings of a model are skipped when an fp32 engine differs from onnxruntime by more than this. */
const MAX_FP32_RELATIVE_ERROR = 1e-4;
const WARMUP_RUNS = 2;
/** Bounds of the command line: a batch of 256 224x224 images is 154 MB of input alone. */
const MAX_BATCH = 256;
const MAX_SECONDS = 3600;
/** Runs each primitive is timed over for --profile. */
const PROFILE_RUNS = 10;
/** bf16 only where oneDNN has bfloat16 convolutions for this CPU (AVX-512 on); elsewhere its columns read '–'. */
const CPU = cpuCapabilities();
const runsHere = (key: string): boolean => key !== 'deployedBf16' || CPU.bf16;
const PROFILED_ENGINES = (['deployedFp32', 'deployedBf16', 'deployedInt8'] as const).filter(runsHere);
/** Each engine runs at least this many timed iterations, however long they take. */
const MIN_TIMED_RUNS = 5;
/** The engines take turns this many times per batch size (lib/bench/measure.ts measureInterleaved). */
const TIMING_ROUNDS = 12;

/** Random images the int8 engines are calibrated on (other images than the ones checked and timed). */
const CALIBRATION_IMAGES = 16;
const CALIBRATION_SEED = 3;

type EngineKey = 'deployedFp32' | 'deployedBf16' | 'deployedInt8' | 'trainFp32' | 'onnxruntime' | 'onnxruntimeInt8';
type OurEngineKey = 'deployedFp32' | 'deployedBf16' | 'deployedInt8' | 'trainFp32';

const ENGINE_LABELS: Record<EngineKey, string> = {
  deployedFp32: 'ours deployed fp32',
  deployedBf16: 'ours deployed bf16',
  deployedInt8: 'ours deployed int8',
  trainFp32: 'ours train-form fp32',
  onnxruntime: 'onnxruntime deployed fp32',
  onnxruntimeInt8: 'onnxruntime int8 (our QDQ)',
};
const ENGINE_KEYS = (Object.keys(ENGINE_LABELS) as EngineKey[]).filter(runsHere);
const ENGINE_COLORS: Record<EngineKey, string> = {
  deployedFp32: '#1f77b4',
  deployedBf16: '#2ca02c',
  deployedInt8: '#9467bd',
  trainFp32: '#ff7f0e',
  onnxruntime: '#7f7f7f',
  onnxruntimeInt8: '#bcbd22',
};

/** Something that classifies a batch; prepare() returns our plan report (undefined for onnxruntime). */
interface Engine {
  prepare(batch: number): Promise<PlanReport | undefined>;
  /** Ours only: the per-primitive profile of this batch size. */
  profile?(batch: number): Promise<NetworkProfile>;
  logits(images: HostTensor): Promise<Float32Array>;
  dispose(): Promise<void>;
}

interface PlanSummary {
  activationBytes: number;
  weightBytes: number;
  /** The Winograd transforms' scratch. */
  workspaceBytes: number;
  /** Conv count per algorithm ('direct', 'winograd', 'winograd2x2', 'int8'). */
  algorithms: Record<string, number>;
  /** Conv count per oneDNN implementation name. */
  implementations: Record<string, number>;
}

interface BatchResult {
  batch: number;
  /** Every engine of ENGINE_KEYS (no bf16 where the CPU has none). */
  throughput: Partial<Record<EngineKey, Throughput>>;
  plans: Partial<Record<OurEngineKey, PlanSummary>>;
  /** Median img/s over onnxruntime fp32's: ours fp32, bf16, int8 and onnxruntime's own int8. */
  overOnnxruntime: Partial<Record<'deployedFp32' | 'deployedBf16' | 'deployedInt8' | 'onnxruntimeInt8', number>>;
  deployedOverTrainForm: number;
  /** --profile: per deployed precision, ms per layer and role ('stage1.0 int8 conv'), and the whole run. */
  profiles?: Partial<Record<(typeof PROFILED_ENGINES)[number], NetworkProfile>>;
}

interface Agreement {
  /** max|ours - onnxruntime| / max|onnxruntime| over the logits of the check batch. */
  relativeErrorVsOnnxruntime: { deployedFp32: number; deployedBf16?: number; trainFp32: number };
  /** bf16 vs deployed fp32 (where the CPU has bf16): max relative error and the fraction of images with the same top-1 class. */
  bf16RelativeErrorVsFp32?: number;
  bf16Top1AgreementWithFp32?: number;
  /** int8 vs deployed fp32, likewise. */
  int8RelativeErrorVsFp32: number;
  int8Top1AgreementWithFp32: number;
  /** onnxruntime on our QDQ export vs our int8, likewise. */
  onnxruntimeInt8RelativeErrorVsOurs: number;
  onnxruntimeInt8Top1AgreementWithOurs: number;
  /** The calibration's own SQNR of the int8 logits (dB) on its images. */
  calibrationLogitsSqnrDb: number;
}

interface ModelResult {
  arch: string;
  agreement: Agreement;
  /** Why the timings were skipped, when they were. */
  skipped?: string;
  batches: BatchResult[];
}

interface BenchOptions {
  models: string[];
  batches: number[];
  seconds: number;
  jsonPath: string | undefined;
  plotPath: string | undefined;
  profile: boolean;
}

function progress(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

const USAGE = `Usage: node dist/bench/cpu.js [--models A0,B0] [--batches 1,8,32] [--seconds 3] [--json out.json] [--plot out.svg] [--profile]
  --models    official variants to time (default A0,B0)
  --batches   batch sizes (default 1,8,32; at most ${MAX_BATCH})
  --seconds   seconds of timed runs per engine and batch size, over all rounds (default 3)
  --json      also write every number as JSON to this file
  --plot      also write a grouped bar chart (SVG) to this file
  --profile   also print each deployed precision's time per layer`;

function parseOptions(): BenchOptions {
  const values = parseBenchArgs(USAGE, {
    models: { type: 'string', default: 'A0,B0' },
    batches: { type: 'string', default: '1,8,32' },
    seconds: { type: 'string', default: '3' },
    json: { type: 'string' },
    plot: { type: 'string' },
    profile: { type: 'boolean', default: false },
  });
  return {
    models: archList(values.models, '--models'),
    batches: integerList(values.batches, '--batches', { min: 1, max: MAX_BATCH }),
    seconds: positiveNumber(values.seconds, '--seconds', MAX_SECONDS),
    jsonPath: values.json,
    plotPath: values.plot,
    profile: values.profile,
  };
}

function ourEngine(network: RepVGGNetwork): Engine {
  return {
    prepare: (batch) => network.prepare(batch, IMAGE_SIZE, IMAGE_SIZE),
    profile: (batch) => network.profile(batch, IMAGE_SIZE, IMAGE_SIZE, { runs: PROFILE_RUNS }),
    logits: async (images) => (await network.predict(images)).data,
    dispose: async () => network.dispose(),
  };
}

function onnxruntimeEngine(session: InferenceSession): Engine {
  return {
    prepare: async () => undefined,
    logits: async (images) => {
      const outputs = await session.run({ [ONNX_INPUT_NAME]: new Tensor('float32', images.data, images.shape) });
      return outputs[ONNX_OUTPUT_NAME]!.data as Float32Array;
    },
    dispose: () => session.release(),
  };
}

async function createEngines(spec: RepVGGSpec, maxBatch: number): Promise<{ engines: Partial<Record<EngineKey, Engine>>; calibration: CalibrationResult }> {
  const trainState = randomStateDict(spec, 'train', WEIGHT_SEED);
  const deployed = reparameterize(spec, trainState);
  const sessionOptions = { intraOpNumThreads: availableParallelism(), graphOptimizationLevel: 'all' } as const;
  const session = await InferenceSession.create(encodeOnnx(deployed), sessionOptions);
  progress(`${spec.arch}: calibrating int8 on ${CALIBRATION_IMAGES} random images`);
  const calibration = await calibrate(deployed, randomImages(CALIBRATION_IMAGES, IMAGE_SIZE, CALIBRATION_SEED));
  const int8Session = await InferenceSession.create(encodeOnnx(calibration.model, { quantization: calibration.quantization }), sessionOptions);
  const engines = {
    deployedFp32: ourEngine(RepVGGNetwork.fromDeployed(deployed, { precision: 'fp32', convAlgorithm: 'auto', maxBatch })),
    ...(CPU.bf16 && { deployedBf16: ourEngine(RepVGGNetwork.fromDeployed(deployed, { precision: 'bf16', maxBatch })) }),
    deployedInt8: ourEngine(RepVGGNetwork.fromDeployed(calibration.model, { precision: 'int8', quantization: calibration.quantization, maxBatch })),
    trainFp32: ourEngine(RepVGGNetwork.fromStateDict(spec, trainState, { precision: 'fp32', maxBatch })),
    onnxruntime: onnxruntimeEngine(session),
    onnxruntimeInt8: onnxruntimeEngine(int8Session),
  };
  return { engines, calibration };
}


function top1Classes(logits: Float32Array): number[] {
  const classes: number[] = [];
  for (let start = 0; start < logits.length; start += NUM_CLASSES) {
    let best = start;
    for (let i = start + 1; i < start + NUM_CLASSES; i++) if (logits[i]! > logits[best]!) best = i;
    classes.push(best - start);
  }
  return classes;
}

/** The fraction of images whose top-1 class is the same in a and b. */
function top1Agreement(a: Float32Array, b: Float32Array): number {
  const classesA = top1Classes(a);
  const classesB = top1Classes(b);
  return classesA.filter((c, i) => c === classesB[i]).length / classesA.length;
}

async function checkAgreement(engines: Partial<Record<EngineKey, Engine>>, calibration: CalibrationResult): Promise<Agreement> {
  const images = randomImages(CHECK_BATCH, IMAGE_SIZE, INPUT_SEED);
  const reference = await engines.onnxruntime!.logits(images);
  const deployedFp32 = await engines.deployedFp32!.logits(images);
  const deployedBf16 = await engines.deployedBf16?.logits(images);
  const deployedInt8 = await engines.deployedInt8!.logits(images);
  const onnxruntimeInt8 = await engines.onnxruntimeInt8!.logits(images);
  const trainFp32 = await engines.trainFp32!.logits(images);
  return {
    int8RelativeErrorVsFp32: maxRelativeError(deployedInt8, deployedFp32),
    int8Top1AgreementWithFp32: top1Agreement(deployedInt8, deployedFp32),
    onnxruntimeInt8RelativeErrorVsOurs: maxRelativeError(onnxruntimeInt8, deployedInt8),
    onnxruntimeInt8Top1AgreementWithOurs: top1Agreement(onnxruntimeInt8, deployedInt8),
    calibrationLogitsSqnrDb: calibration.logitsSqnrDb,
    relativeErrorVsOnnxruntime: {
      deployedFp32: maxRelativeError(deployedFp32, reference),
      ...(deployedBf16 && { deployedBf16: maxRelativeError(deployedBf16, reference) }),
      trainFp32: maxRelativeError(trainFp32, reference),
    },
    ...(deployedBf16 && {
      bf16RelativeErrorVsFp32: maxRelativeError(deployedBf16, deployedFp32),
      bf16Top1AgreementWithFp32: top1Agreement(deployedBf16, deployedFp32),
    }),
  };
}

function countBy(values: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const v of values) counts[v] = (counts[v] ?? 0) + 1;
  return counts;
}

function summarizePlan(report: PlanReport): PlanSummary {
  return {
    activationBytes: report.activationBytes,
    weightBytes: report.weightBytes,
    workspaceBytes: report.workspaceBytes,
    algorithms: countBy(report.convs.map((c) => c.algorithm)),
    implementations: countBy(report.convs.map((c) => c.implementation)),
  };
}

async function benchmarkBatch(
  engines: Partial<Record<EngineKey, Engine>>, arch: string, batch: number, seconds: number, profile: boolean,
): Promise<BatchResult> {
  const images = randomImages(batch, IMAGE_SIZE, INPUT_SEED + batch);
  const plans = {} as BatchResult['plans'];
  for (const key of ENGINE_KEYS) {
    progress(`${arch} batch ${batch}: preparing ${ENGINE_LABELS[key]}`);
    const report = await engines[key]!.prepare(batch);
    if (report && key !== 'onnxruntime' && key !== 'onnxruntimeInt8') plans[key] = summarizePlan(report);
  }
  progress(`${arch} batch ${batch}: timing the ${ENGINE_KEYS.length} engines in ${TIMING_ROUNDS} interleaved rounds, ${seconds} s each in all`);
  const runs = Object.fromEntries(ENGINE_KEYS.map((key) => [key, () => engines[key]!.logits(images)])) as Record<EngineKey, () => Promise<unknown>>; // the keys of ENGINE_KEYS
  const throughput = await measureInterleaved(runs, batch, {
    seconds: seconds * ENGINE_KEYS.length, rounds: TIMING_ROUNDS, warmupRuns: WARMUP_RUNS, minRuns: MIN_TIMED_RUNS,
  });
  for (const key of ENGINE_KEYS) progress(`${arch} batch ${batch}: ${ENGINE_LABELS[key]}: ${formatThroughput(throughput[key])} img/s`);
  const overOnnxruntime = (key: 'deployedFp32' | 'deployedBf16' | 'deployedInt8' | 'onnxruntimeInt8') =>
    throughput[key] && pairedRatio(throughput[key], throughput.onnxruntime!);
  let profiles: BatchResult['profiles'];
  if (profile) {
    progress(`${arch} batch ${batch}: profiling the deployed precisions`);
    profiles = {};
    for (const key of PROFILED_ENGINES) profiles[key] = await engines[key]!.profile!(batch);
  }
  return {
    ...(profiles && { profiles }),
    batch,
    throughput,
    plans,
    overOnnxruntime: {
      deployedFp32: overOnnxruntime('deployedFp32'),
      deployedBf16: overOnnxruntime('deployedBf16'),
      deployedInt8: overOnnxruntime('deployedInt8'),
      onnxruntimeInt8: overOnnxruntime('onnxruntimeInt8'),
    },
    deployedOverTrainForm: pairedRatio(throughput.deployedFp32!, throughput.trainFp32!),
  };
}

async function benchmarkModel(name: string, options: BenchOptions): Promise<ModelResult> {
  const spec = officialSpec(name, { numClasses: NUM_CLASSES });
  progress(`${spec.arch}: building engines`);
  const { engines, calibration } = await createEngines(spec, Math.max(CHECK_BATCH, ...options.batches));
  try {
    progress(`${spec.arch}: checking agreement on ${CHECK_BATCH} random images`);
    const agreement = await checkAgreement(engines, calibration);
    const errors = agreement.relativeErrorVsOnnxruntime;
    const worstFp32 = Math.max(errors.deployedFp32, errors.trainFp32);
    if (!(worstFp32 <= MAX_FP32_RELATIVE_ERROR)) {
      const skipped = `fp32 relative error vs onnxruntime ${worstFp32.toExponential(2)} > ${MAX_FP32_RELATIVE_ERROR}`;
      progress(`${spec.arch}: timings skipped: ${skipped}`);
      return { arch: spec.arch, agreement, skipped, batches: [] };
    }
    const batches: BatchResult[] = [];
    for (const batch of options.batches) batches.push(await benchmarkBatch(engines, spec.arch, batch, options.seconds, options.profile));
    return { arch: spec.arch, agreement, batches };
  } finally {
    for (const engine of Object.values(engines)) await engine.dispose();
  }
}

function mebibytes(bytes: number | undefined): string {
  return bytes === undefined ? '–' : (bytes / 2 ** 20).toFixed(1);
}

function formatThroughput(t: Throughput | undefined): string {
  if (t === undefined) return '–';
  return `${t.medianImagesPerSecond.toFixed(1)} (${t.p10ImagesPerSecond.toFixed(1)}–${t.p90ImagesPerSecond.toFixed(1)})`;
}

/** A value with `digits` digits, '–' where it was not measured (bf16 on a CPU without it). */
function fixed(value: number | undefined, digits: number, suffix = ''): string {
  return value === undefined ? '–' : `${value.toFixed(digits)}${suffix}`;
}

function exponential(value: number | undefined): string {
  return value === undefined ? '–' : value.toExponential(2);
}

function formatCounts(counts: Record<string, number>): string {
  return Object.entries(counts).map(([name, count]) => `${name} ×${count}`).join(', ');
}

/** One table per (model, batch): ms per layer and role for each deployed precision, then the sums and whole runs. */
function profileTables(results: ModelResult[]): string[] {
  const tables: string[] = [];
  for (const model of results) {
    for (const b of model.batches) {
      if (!b.profiles) continue;
      const profiles = b.profiles;
      const rows = new Map<string, { step: number; order: number; cells: Partial<Record<(typeof PROFILED_ENGINES)[number], number>> }>();
      for (const key of PROFILED_ENGINES) {
        profiles[key]!.entries.forEach((e, order) => {
          // int8 convs and float convs of the same layer share a row; the role names the precision's primitive.
          const what = e.what === 'int8 conv' ? 'conv' : e.what;
          const row = what.startsWith(e.layer) ? what : `${e.layer} ${what}`;
          const entry = rows.get(row) ?? { step: e.step, order, cells: {} };
          entry.cells[key] = (entry.cells[key] ?? 0) + e.ms;
          rows.set(row, entry);
        });
      }
      // In network order (a quantize before its layer's conv), whichever precision has the row.
      const rank = (row: string): number => (row.endsWith('quantize') ? 0 : 1);
      const ordered = [...rows].sort(([rowA, a], [rowB, b]) => a.step - b.step || rank(rowA) - rank(rowB) || a.order - b.order);
      const ms = (v: number | undefined): string => (v === undefined ? '-' : v.toFixed(3));
      tables.push(
        `### ${model.arch}, batch ${b.batch}: ms per run (each primitive on its own, mean of ${PROFILE_RUNS} runs)`,
        '',
        markdownTable(
          ['layer', ...PROFILED_ENGINES.map((k) => ENGINE_LABELS[k])],
          [
            ...ordered.map(([row, { cells }]) => [row, ...PROFILED_ENGINES.map((k) => ms(cells[k]))]),
            ['sum of primitives', ...PROFILED_ENGINES.map((k) => ms(profiles[k]!.sumMs))],
            ['whole run (median)', ...PROFILED_ENGINES.map((k) => ms(profiles[k]!.networkMs))],
          ],
        ),
        '',
      );
    }
  }
  return tables;
}

function markdownReport(results: ModelResult[], machine: Record<string, unknown>, options: BenchOptions): string {
  const timed = results.flatMap((m) => m.batches.map((b) => ({ arch: m.arch, ...b })));
  const throughputTable = markdownTable(
    ['model', 'batch', ...ENGINE_KEYS.map((k) => `${ENGINE_LABELS[k]} img/s`), 'ours fp32/ORT fp32', 'ours bf16/ORT fp32',
      'ours int8/ORT fp32', 'ORT int8/ORT fp32', 'deployed/train-form'],
    timed.map((r) => [
      r.arch, String(r.batch), ...ENGINE_KEYS.map((k) => formatThroughput(r.throughput[k])),
      ...(['deployedFp32', 'deployedBf16', 'deployedInt8', 'onnxruntimeInt8'] as const).map((k) => fixed(r.overOnnxruntime[k], 2, '×')),
      `${r.deployedOverTrainForm.toFixed(2)}×`,
    ]),
  );
  const memoryTable = markdownTable(
    ['model', 'batch', 'activations deployed fp32 MiB', 'activations deployed bf16 MiB', 'activations deployed int8 MiB',
      'activations train-form MiB', 'train-form/deployed activations', 'weights deployed fp32 MiB', 'weights deployed bf16 MiB',
      'weights deployed int8 MiB', 'weights train-form MiB', 'Winograd workspace deployed fp32 / bf16 MiB'],
    timed.map((r) => [
      r.arch, String(r.batch), mebibytes(r.plans.deployedFp32?.activationBytes), mebibytes(r.plans.deployedBf16?.activationBytes),
      mebibytes(r.plans.deployedInt8?.activationBytes), mebibytes(r.plans.trainFp32?.activationBytes),
      `${(r.plans.trainFp32!.activationBytes / r.plans.deployedFp32!.activationBytes).toFixed(2)}×`,
      mebibytes(r.plans.deployedFp32?.weightBytes), mebibytes(r.plans.deployedBf16?.weightBytes), mebibytes(r.plans.deployedInt8?.weightBytes),
      mebibytes(r.plans.trainFp32?.weightBytes),
      `${mebibytes(r.plans.deployedFp32?.workspaceBytes)} / ${mebibytes(r.plans.deployedBf16?.workspaceBytes)}`,
    ]),
  );
  const algorithmTable = markdownTable(
    ['model', 'batch', 'engine', 'conv algorithms', 'oneDNN implementations'],
    timed.flatMap((r) =>
      PROFILED_ENGINES.map((k) => [
        r.arch, String(r.batch), ENGINE_LABELS[k], formatCounts(r.plans[k]!.algorithms), formatCounts(r.plans[k]!.implementations),
      ]),
    ),
  );
  const agreementTable = markdownTable(
    ['model', 'deployed fp32 vs ORT', 'train-form fp32 vs ORT', 'deployed bf16 vs ORT', 'bf16 vs fp32', 'bf16 top-1 = fp32',
      'int8 vs fp32', 'int8 top-1 = fp32', 'int8 calibration logits SQNR', 'ORT int8 vs ours int8', 'ORT int8 top-1 = ours int8', 'timings'],
    results.map((m) => {
      const e = m.agreement.relativeErrorVsOnnxruntime;
      const a = m.agreement;
      return [
        m.arch, e.deployedFp32.toExponential(2), e.trainFp32.toExponential(2), exponential(e.deployedBf16),
        exponential(a.bf16RelativeErrorVsFp32), fixed(a.bf16Top1AgreementWithFp32 === undefined ? undefined : 100 * a.bf16Top1AgreementWithFp32, 0, '%'),
        a.int8RelativeErrorVsFp32.toExponential(2), `${(100 * a.int8Top1AgreementWithFp32).toFixed(0)}%`,
        `${a.calibrationLogitsSqnrDb.toFixed(1)} dB`, a.onnxruntimeInt8RelativeErrorVsOurs.toExponential(2),
        `${(100 * a.onnxruntimeInt8Top1AgreementWithOurs).toFixed(0)}%`,
        m.skipped ? `skipped: ${m.skipped}` : 'run',
      ];
    }),
  );
  return [
    `# RepVGG CPU benchmark (${IMAGE_SIZE}x${IMAGE_SIZE}, ${NUM_CLASSES} classes, ~${options.seconds} s per measurement)`,
    '',
    `Machine: ${Object.entries(machine).map(([k, v]) => `${k} ${String(v)}`).join('; ')}`,
    '',
    '## Throughput: median img/s (p10–p90)',
    '',
    throughputTable,
    '',
    `## Agreement on ${CHECK_BATCH} random images: max|a-b| / max|b| of the logits`,
    '',
    agreementTable,
    '',
    '## Memory (from prepare(): activation buffers and weights in the layouts the primitives chose)',
    '',
    memoryTable,
    '',
    '## Deployed conv algorithms (per-layer choice of convAlgorithm auto)',
    '',
    algorithmTable,
    '',
    ...(options.profile ? ['## Profiles', '', ...profileTables(results)] : []),
  ].join('\n');
}

/** One panel per model: groups of bars per batch size, one bar per engine, whiskers from p10 to p90. */
function svgChart(results: ModelResult[], subtitle: string): string {
  return barChartSvg({
    title: 'RepVGG CPU throughput, images/s (median; whiskers p10–p90)',
    subtitle,
    legend: ENGINE_KEYS.map((key) => ({ label: ENGINE_LABELS[key], color: ENGINE_COLORS[key] })),
    legendColumnWidth: 300,
    panels: results.map((model) => ({
      title: model.arch,
      ...(model.skipped && { message: `timings skipped: ${model.skipped}` }),
      groups: model.batches.map((b) => ({ label: `batch ${b.batch}`, bars: ENGINE_KEYS.map((key) => b.throughput[key]!) })),
    })),
  });
}

async function main(): Promise<void> {
  const options = parseOptions();
  const native = loadCpuAddon().info();
  const machine = {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: availableParallelism(),
    node: process.version,
    library: `${native.library} ${native.libraryVersion} (${native.isa}, bf16 ${native.bf16 ? (native.nativeBf16 ? 'native' : 'emulated') : 'none: its columns are empty'}, ` +
      `int8 ${native.int8Vnni ? 'VNNI, 8-bit weights' : 'without VNNI, 7-bit weights'})`,
  };
  const results: ModelResult[] = [];
  for (const name of options.models) results.push(await benchmarkModel(name, options));
  process.stdout.write(markdownReport(results, machine, options));
  if (options.jsonPath) {
    await writeFile(options.jsonPath, `${JSON.stringify({ machine, options, results }, null, 2)}\n`);
    progress(`wrote ${options.jsonPath}`);
  }
  if (options.plotPath) {
    await writeFile(options.plotPath, `${svgChart(results, `${machine.cpu}, ${machine.cores} cores, ${IMAGE_SIZE}x${IMAGE_SIZE}`)}\n`);
    progress(`wrote ${options.plotPath}`);
  }
}

await runBench(USAGE, main);
