// GPU throughput benchmark of the CUDA backend: for each RepVGG variant, precision and batch, our deployed network
// (eager and CUDA-graph replay, device time per forward with the input already on the GPU, as PyTorch benchmarks
// measure), our host-to-host run() (pinned staging copies included) and our training-time network. Before timing
// anything each (model, precision) is checked against the CPU backend on a random batch. It also exports each
// deployed model (safetensors + layer list), the check input and our logits for bench/device/torch_bench.py, which
// times PyTorch on the same weights and prints the comparison table.
// Usage: USAGE below (`node dist/bench/cuda.js --help`). DIR/ours.json is rewritten after every model, so a run cut
// short keeps what it measured.
// Not for: correctness tests (test/cuda.test.ts) or the CPU benchmark (bench/cpu.ts).

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { cudaStatus, requireCudaAddon } from '../lib/backend/cuda.js';
import { OptionError, archList, choiceList, integerList, parseBenchArgs, positiveNumber, runBench } from '../lib/bench/args.js';
import { unitScaledLayers } from '../lib/bench/speed.js';
import type { CudaAddon, CudaPlanReport, CudaProgram } from '../lib/backend/cuda.js';
import { RepVGGNetwork, deployedProgram, trainProgram } from '../lib/engine.js';
import type { StepProgram } from '../lib/engine.js';
import { writeNpy } from '../lib/io/npy.js';
import { encodeSafetensors } from '../lib/io/safetensors.js';
import { randomStateDict, seededUniform } from '../lib/models/init.js';
import { featureChannels, officialSpec } from '../lib/models/repvgg.js';
import type { RepVGGSpec } from '../lib/models/repvgg.js';
import { deployedStateDict, reparameterize } from '../lib/reparam/reparam.js';
import { argmaxRows, maxRelativeError } from '../test/helpers/reference.js';
import { FP16, MODEL_FP32 } from '../test/helpers/tolerances.js';

const IMAGE_SIZE = 224;
const NUM_CLASSES = 1000;
const WEIGHT_SEED = 1;
const INPUT_SEED = 2;
const CHECK_BATCH = 2;

type Precision = 'fp32' | 'fp16';

/**
 * A CUDA Program of a step program built by lib/engine.ts, assembled as RepVGGNetwork assembles it. Made here and
 * not through RepVGGNetwork because the benchmark needs the addon's benchmark() (device time, input on the GPU).
 */
function makeProgram(addon: CudaAddon, spec: RepVGGSpec, program: StepProgram, linear: { weight: Float32Array; bias: Float32Array },
  precision: Precision, cudaGraph: boolean): CudaProgram {
  return new addon.Program({
    precision, convAlgorithm: 'auto', cudaGraph, inChannels: spec.inChannels, numBuffers: program.numBuffers, steps: program.steps,
    head: { src: program.headSrc, features: featureChannels(spec), classes: spec.numClasses, weight: linear.weight, bias: linear.bias },
  });
}

function randomImages(n: number, seed: number): Float32Array {
  const uniform = seededUniform(seed);
  const data = new Float32Array(n * 3 * IMAGE_SIZE * IMAGE_SIZE);
  for (let i = 0; i < data.length; i++) data[i] = 2 * uniform() - 1; // never all zero
  return data;
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
};

interface Timing {
  medianMs: number;
  imagesPerSecond: number;
  runs: number;
}

/** Device time per forward: a short probe sizes the run to about `seconds`, then the median of the timed runs. */
async function deviceTiming(program: CudaProgram, input: Float32Array, batch: number, seconds: number): Promise<Timing & { cudaGraph: boolean }> {
  const probe = await program.benchmark({ input, batch, height: IMAGE_SIZE, width: IMAGE_SIZE, warmup: 2, iterations: 3 });
  const estimate = Math.max(median(probe.ms), 0.01);
  const iterations = Math.max(5, Math.min(300, Math.round((seconds * 1000) / estimate)));
  const result = await program.benchmark({ input, batch, height: IMAGE_SIZE, width: IMAGE_SIZE, warmup: 3, iterations });
  const ms = median(result.ms);
  return { medianMs: ms, imagesPerSecond: (batch * 1000) / ms, runs: iterations, cudaGraph: result.cudaGraph };
}

/** Host-to-host run() (input copied into pinned memory, uploaded, forward, logits back), timed with performance.now. */
async function endToEndTiming(program: CudaProgram, input: Float32Array, batch: number, seconds: number): Promise<Timing> {
  const output = new Float32Array(batch * NUM_CLASSES);
  const options = { input, output, batch, height: IMAGE_SIZE, width: IMAGE_SIZE };
  for (let i = 0; i < 2; i++) await program.run(options);
  const times: number[] = [];
  const deadline = performance.now() + seconds * 1000;
  while (times.length < 5 || (performance.now() < deadline && times.length < 300)) {
    const start = performance.now();
    await program.run(options);
    times.push(performance.now() - start);
  }
  const ms = median(times);
  return { medianMs: ms, imagesPerSecond: (batch * 1000) / ms, runs: times.length };
}

function planSummary(report: CudaPlanReport) {
  const algorithms: Record<string, number> = {};
  for (const c of report.convs) {
    const key = `${c.algorithm}/${c.mathType}${c.fused ? '+fused' : ''}`;
    algorithms[key] = (algorithms[key] ?? 0) + 1;
  }
  const notes = [...new Set(report.convs.map((c) => c.note).filter((n): n is string => n !== undefined))];
  return {
    activationBytes: report.activationBytes, weightBytes: report.weightBytes, workspaceBytes: report.workspaceBytes,
    cudaGraph: report.cudaGraph, cudaGraphError: report.cudaGraphError, algorithms, notes,
  };
}

/** Bounds of the command line: a batch of 1024 224x224 images is 616 MB of input. */
const MAX_BATCH = 1024;
const MAX_SECONDS = 600;
const USAGE = `Usage: node dist/bench/cuda.js --out DIR [--models A0,A1,B0,B1g4,B3] [--batches 1,32,128] [--precisions fp32,fp16]
         [--seconds 1] [--train-batches 128 | --no-train-form] [--no-check] [--export-only]
  --out            folder for ours.json and, per model, the deployed weights, check input and our logits
  --models         official variants (default A0,A1,B0,B1g4,B3)
  --batches        batch sizes of the deployed network (default 1,32,128; at most ${MAX_BATCH})
  --precisions     fp32 and/or fp16 (default fp32,fp16)
  --seconds        seconds of timed forwards per configuration (default 1)
  --train-batches  batch sizes of the training-time network (default: --batches); --no-train-form skips it
  --no-check       skip the check against the CPU backend
  --export-only    write the weights, input and CPU logits only (no GPU needed)`;

async function main(): Promise<void> {
  const values = parseBenchArgs(USAGE, {
    out: { type: 'string' },
    models: { type: 'string', default: 'A0,A1,B0,B1g4,B3' },
    batches: { type: 'string', default: '1,32,128' },
    precisions: { type: 'string', default: 'fp32,fp16' },
    seconds: { type: 'string', default: '1' },
    'no-train-form': { type: 'boolean', default: false },
    'train-batches': { type: 'string' },
    'no-check': { type: 'boolean', default: false },
    'export-only': { type: 'boolean', default: false },
  });
  const outDir = values.out;
  if (!outDir) throw new OptionError('Expected --out DIR (where the results go)');
  const models = archList(values.models, '--models');
  const batches = integerList(values.batches, '--batches', { min: 1, max: MAX_BATCH });
  const precisions: Precision[] = choiceList(values.precisions, '--precisions', ['fp32', 'fp16']);
  const seconds = positiveNumber(values.seconds, '--seconds', MAX_SECONDS);
  const trainBatches = values['no-train-form'] ? [] : values['train-batches'] === undefined ? batches : integerList(values['train-batches'], '--train-batches', { min: 1, max: MAX_BATCH });
  const exportOnly = values['export-only'];
  const status = cudaStatus();
  if (!status.available && !exportOnly) throw new Error(`CUDA is unavailable: ${status.reason ?? ''}`);
  const addon = exportOnly ? undefined : requireCudaAddon();
  process.stderr.write(`cuda: ${JSON.stringify(status.details)}\n`);
  await mkdir(outDir, { recursive: true });

  const results: object[] = [];
  const checkInput = randomImages(CHECK_BATCH, INPUT_SEED);
  for (const arch of models) {
    const spec = officialSpec(arch, { numClasses: NUM_CLASSES });
    const trainState = randomStateDict(spec, 'train', WEIGHT_SEED);
    // Deployed weights in a trained network's range, so fp16 can be checked against fp32 (see unitScaledLayers).
    const model = await unitScaledLayers(reparameterize(spec, trainState), { shape: [CHECK_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE], data: checkInput });
    const linear = { weight: model.linearWeight, bias: model.linearBias };
    const trainLinear = { weight: trainState.get('linear.weight')!.data, bias: trainState.get('linear.bias')!.data };

    // Export for PyTorch: the deployed weights, the layer list it cannot infer from them (strides), the check input.
    const name = arch.replace(/^RepVGG-/i, '');
    await writeFile(join(outDir, `${name}.safetensors`), encodeSafetensors(deployedStateDict(model), { arch: spec.arch, form: 'deploy' }));
    await writeFile(join(outDir, `${name}.layers.json`), JSON.stringify({
      arch: spec.arch, numClasses: NUM_CLASSES, features: featureChannels(spec),
      layers: model.layers.map((l) => ({ name: l.name, inChannels: l.inChannels, outChannels: l.outChannels, stride: l.stride, groups: l.groups, se: l.se !== undefined })),
    }, null, 1));
    await writeNpy(join(outDir, `${name}.input.npy`), checkInput, [CHECK_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE]);

    let cpuLogits: Float32Array | undefined;
    if (!values['no-check']) {
      process.stderr.write(`${arch}: CPU reference logits for the check batch\n`);
      const net = RepVGGNetwork.fromDeployed(model, { backend: 'cpu', convAlgorithm: 'direct' });
      try {
        cpuLogits = (await net.predict({ shape: [CHECK_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE], data: checkInput })).data;
      } finally {
        net.dispose();
      }
      await writeNpy(join(outDir, `${name}.cpu_logits.npy`), cpuLogits, [CHECK_BATCH, NUM_CLASSES]);
    }

    if (!addon) continue;
    for (const precision of precisions) {
      const row: Record<string, unknown> = { model: arch, precision };
      // Correctness first: no timing for a configuration that computes something else.
      const eager = makeProgram(addon, spec, deployedProgram(model), linear, precision, false);
      const graphed = makeProgram(addon, spec, deployedProgram(model), linear, precision, true);
      try {
        const logits = new Float32Array(CHECK_BATCH * NUM_CLASSES);
        await eager.run({ input: checkInput, output: logits, batch: CHECK_BATCH, height: IMAGE_SIZE, width: IMAGE_SIZE });
        await writeNpy(join(outDir, `${name}.ours_${precision}.npy`), logits, [CHECK_BATCH, NUM_CLASSES]);
        if (cpuLogits) {
          const error = maxRelativeError(logits, cpuLogits);
          const top1 = argmaxRows(logits, [CHECK_BATCH, NUM_CLASSES]).join(',') === argmaxRows(cpuLogits, [CHECK_BATCH, NUM_CLASSES]).join(',');
          // The CPU backend's fp32 logits are themselves within MODEL_FP32 of float64 (test/helpers/tolerances.ts).
          const tolerance = precision === 'fp16' ? FP16 : MODEL_FP32;
          row['check'] = { maxRelativeErrorVsCpu: error, tolerance, top1Agrees: top1, ok: error <= tolerance };
          process.stderr.write(`${arch} ${precision}: max relative error vs CPU ${error.toExponential(2)} (tolerance ${tolerance}), top-1 ${top1 ? 'agrees' : 'DIFFERS'}\n`);
          if (!(error <= tolerance)) {
            row['error'] = `logits differ from the CPU backend by ${error}`;
            results.push(row);
            continue;
          }
        }
        const perBatch: object[] = [];
        for (const batch of batches) {
          const input = randomImages(batch, INPUT_SEED + batch);
          const entry: Record<string, unknown> = { batch };
          try {
            const report = await eager.prepare({ batch, height: IMAGE_SIZE, width: IMAGE_SIZE });
            entry['plan'] = planSummary(report);
            entry['eager'] = await deviceTiming(eager, input, batch, seconds);
            const graphReport = await graphed.prepare({ batch, height: IMAGE_SIZE, width: IMAGE_SIZE });
            // Each program chooses its algorithms by timing them, so the graph's plan is recorded as well.
            entry['graph'] = { ...(await deviceTiming(graphed, input, batch, seconds)), error: graphReport.cudaGraphError, plan: planSummary(graphReport) };
            entry['endToEnd'] = await endToEndTiming(eager, input, batch, seconds);
            if (trainBatches.includes(batch)) {
              const train = makeProgram(addon, spec, trainProgram(spec, trainState), trainLinear, precision, false);
              try {
                entry['trainForm'] = await deviceTiming(train, input, batch, seconds);
              } finally {
                train.dispose();
              }
            }
          } catch (err) {
            entry['error'] = err instanceof Error ? err.message : String(err);
          }
          const e = entry as { eager?: Timing; graph?: Timing; trainForm?: Timing; error?: string };
          process.stderr.write(`${arch} ${precision} batch ${batch}: ` + (e.error ? `FAILED ${e.error}` :
            `eager ${e.eager?.imagesPerSecond.toFixed(0)} img/s, graph ${e.graph?.imagesPerSecond.toFixed(0)} img/s` +
            (e.trainForm ? `, train-form ${e.trainForm.imagesPerSecond.toFixed(0)} img/s` : '')) + '\n');
          perBatch.push(entry);
        }
        row['batches'] = perBatch;
      } catch (err) {
        row['error'] = err instanceof Error ? err.message : String(err);
        process.stderr.write(`${arch} ${precision}: FAILED ${String(row['error'])}\n`);
      } finally {
        eager.dispose();
        graphed.dispose();
      }
      results.push(row);
    }
    await writeSummary();
  }
  await writeSummary();
  process.stderr.write(`wrote ${join(outDir, 'ours.json')}\n`);

  async function writeSummary(): Promise<void> {
    const summary = { imageSize: IMAGE_SIZE, classes: NUM_CLASSES, seconds, cuda: status.details, results };
    await writeFile(join(outDir as string, 'ours.json'), JSON.stringify(summary, null, 1));
  }
}

await runBench(USAGE, main);
