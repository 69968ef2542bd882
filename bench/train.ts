// Training-step throughput of ours (the autograd tape on the CPU backend's oneDNN ops, or with --backend cuda on
// the GPU) against PyTorch on the same model, batch and data: for each model, first checks that a few of our SGD
// steps on one random batch give a finite, decreasing loss, then times our steps, then spawns
// bench/torch_train.py (--python: Debian python3-torch on the CPU with torch.set_num_threads(--threads); on a GPU
// machine the pip torch, on the GPU, eager fp32 or --torch-amp for autocast fp16) on the very same batch and
// network (our spec as JSON; both sides' parameter counts must agree), --rounds times in turn, and prints one
// markdown table of the medians.
// Usage: USAGE below (`node dist/bench/train.js --help`).
// --precision fp16 (CUDA): ours in mixed precision (fp16 convolutions, dynamic loss scale), to compare with
// --torch-amp; bf16 likewise (compute capability 8.0+, no loss scale).
// Models: 'mini' = miniSpec(1, 10) at 28x28 (the default of `repvgg train`), 'A0' and 'B0' = official variants with
// 10 classes at 32x32x3 (--size overrides the side, e.g. 224 on a GPU). The initial weights differ between the
// two frameworks (each uses its own default init); the work per step is the same.
// Not for: accuracy (the trainer), inference speed (bench/cpu.ts, bench/cuda.ts).

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

import { OptionError, choiceList, integerOption, parseBenchArgs, runBench } from '../lib/bench/args.js';
import { garbageCollectionsDuring, profiledBackend, type OpTime, type ProfileMode } from '../lib/bench/train-profile.js';
import type { TrainBackend } from '../lib/autograd/backend.js';
import { cudaBackend } from '../lib/autograd/cuda-backend.js';
import * as F from '../lib/autograd/functions.js';
import { Tape } from '../lib/autograd/tape.js';
import { seededUniform } from '../lib/models/init.js';
import { officialSpec, type RepVGGSpec } from '../lib/models/repvgg.js';
import { retainFreedMemory } from '../lib/ops/index.js';
import { cpuBackend } from '../lib/autograd/cpu-backend.js';
import { DynamicLossScale } from '../lib/train/loss-scale.js';
import { TrainableRepVGG } from '../lib/train/model.js';
import { SGD } from '../lib/train/optimizer.js';
import { miniSpec } from '../lib/train/presets.js';
import { numel, type HostTensor } from '../lib/tensor.js';
import { median, runProcess } from './process.js';

// Small enough that a few steps on one fixed batch lower the loss of every model (A0 overshoots at 0.05).
const LR = 0.01;
const LABEL_SMOOTHING = 0.1;
const SGD_OPTIONS = { momentum: 0.9, nesterov: true, weightDecay: 5e-4, customL2: false };
const TORCH_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'torch_train.py');

interface BenchModel {
  /** The --models name (mini, A0, B0). */
  name: string;
  spec: RepVGGSpec;
  size: number;
}

const MODELS: Record<string, () => BenchModel> = {
  mini: () => ({ name: 'mini', spec: miniSpec(1, 10), size: 28 }),
  A0: () => ({ name: 'A0', spec: officialSpec('A0', { numClasses: 10, inChannels: 3 }), size: 32 }),
  B0: () => ({ name: 'B0', spec: officialSpec('B0', { numClasses: 10, inChannels: 3 }), size: 32 }),
};

type Shaped = { readonly shape: readonly number[] };

interface RunResult {
  /** Trainable parameters (weights, BN's gamma and beta), to check that both sides train the same network. */
  parameters: number;
  imagesPerSecond: number;
  medianStepMs: number;
  stepMs: number[];
  losses: number[];
  load: number;
}


/** A fixed random batch: images ~ uniform(-1.7, 1.7) (unit variance), labels uniform over the classes. */
function randomBatch(model: BenchModel, batch: number, seed: number): { images: HostTensor; labels: Int32Array } {
  const { inChannels, numClasses } = model.spec;
  const uniform = seededUniform(seed);
  const data = new Float32Array(batch * inChannels * model.size * model.size);
  for (let i = 0; i < data.length; i++) data[i] = Math.sqrt(3) * (2 * uniform() - 1);
  const labels = Int32Array.from({ length: batch }, () => Math.floor(uniform() * numClasses));
  return { images: { shape: [batch, inChannels, model.size, model.size], data }, labels };
}

async function sgdStep<V extends Shaped, G>(
  model: TrainableRepVGG<V, G>, opt: SGD<V, G>, images: HostTensor, labels: Int32Array, lossScale: DynamicLossScale | undefined,
): Promise<number> {
  const tape = new Tape(model.backend);
  opt.zeroGrad();
  const logits = await model.forward(tape, images);
  const { loss, value } = await F.softmaxCrossEntropy(tape, logits, labels, LABEL_SMOOTHING);
  await tape.backward(loss, lossScale?.seed());
  // As the trainer does: the activation buffers go back to the backend for the next step.
  tape.recycle();
  if (lossScale === undefined || (await lossScale.unscale(model.backend, model.params))) await opt.step(LR);
  return value;
}

/** Our network from its seed-1 initialization on `backend`, its optimizer and (fp16) loss scale. */
async function ourTraining<V extends Shaped, G>(backend: TrainBackend<V, G>, model: BenchModel) {
  const net = await TrainableRepVGG.onBackend(backend, model.spec, TrainableRepVGG.init(model.spec, 1).stateDict());
  const opt = new SGD(net.params, SGD_OPTIONS, backend);
  const lossScale = backend.precision === 'fp16' ? new DynamicLossScale() : undefined;
  return { net, opt, lossScale };
}

async function runOurs<V extends Shaped, G>(
  backend: TrainBackend<V, G>, model: BenchModel, images: HostTensor, labels: Int32Array, warmup: number, steps: number,
): Promise<RunResult> {
  const { net, opt, lossScale } = await ourTraining(backend, model);
  const losses: number[] = [];
  // Correctness first: the warm-up steps must give finite losses that go down on this one batch.
  for (let s = 0; s < warmup; s++) losses.push(await sgdStep(net, opt, images, labels, lossScale));
  if (!losses.every(Number.isFinite)) throw new Error(`${model.name}: non-finite loss in the check steps: ${losses.join(', ')}`);
  if (warmup >= 2 && !((losses.at(-1) as number) < (losses[0] as number))) {
    throw new Error(`${model.name}: the loss did not decrease over ${warmup} steps on one batch: ${losses.map((l) => l.toFixed(4)).join(', ')}`);
  }
  const stepMs: number[] = [];
  const started = performance.now();
  for (let s = 0; s < steps; s++) {
    const t0 = performance.now();
    losses.push(await sgdStep(net, opt, images, labels, lossScale));
    stepMs.push(performance.now() - t0);
  }
  // On the GPU the last update is still queued when its step returns: wait for it (a download follows every op).
  await backend.download(net.params.values().next().value!.value);
  const total = performance.now() - started;
  if (!losses.every(Number.isFinite)) throw new Error(`${model.name}: non-finite loss while timing`);
  const parameters = [...net.params.values()].reduce((sum, p) => sum + numel(p.value.shape), 0);
  return {
    parameters, imagesPerSecond: (images.shape[0] as number) * steps * 1000 / total, medianStepMs: median(stepMs), stepMs, losses,
    load: loadavg()[0] as number,
  };
}

const PROFILE_STEPS = 3;

interface OpProfile {
  op: string;
  callsPerStep: number;
  asyncMsPerStep: number;
  syncMsPerStep: number;
  syncsPerStep: number;
}

interface StepProfile {
  asyncStepMs: number;
  /** Garbage collections per step, and their pause in ms per step, while the async-mode steps ran. */
  gcPerStep: number;
  gcMsPerStep: number;
  syncStepMs: number;
  idleSyncMs: number;
  ops: OpProfile[];
}

/**
 * Per-op times of our step in both modes of profiledBackend (a fresh network for each, 2 warm-up steps, then
 * PROFILE_STEPS profiled steps), ops sorted by their time with a sync after each.
 */
async function profileOurs<V extends Shaped, G>(
  makeBackend: () => TrainBackend<V, G>, model: BenchModel, images: HostTensor, labels: Int32Array,
): Promise<StepProfile> {
  const measured = new Map<ProfileMode, { stepMs: number; times: Map<string, OpTime>; idleSyncMs: number; gc: { collections: number; ms: number } }>();
  for (const mode of ['async', 'sync'] as const) {
    const profiled = profiledBackend(makeBackend(), mode);
    const backend = profiled.backend;
    const { net, opt, lossScale } = await ourTraining(backend, model);
    for (let s = 0; s < 2; s++) await sgdStep(net, opt, images, labels, lossScale);
    await backend.download(net.params.values().next().value!.value);
    profiled.reset();
    const started = performance.now();
    const gc = await garbageCollectionsDuring(async () => {
      for (let s = 0; s < PROFILE_STEPS; s++) await sgdStep(net, opt, images, labels, lossScale);
      await backend.download(net.params.values().next().value!.value);
    });
    const stepMs = (performance.now() - started) / PROFILE_STEPS;
    measured.set(mode, { stepMs, times: new Map(profiled.times), idleSyncMs: await profiled.idleSyncMs(50), gc });
  }
  const asyncRun = measured.get('async')!;
  const syncRun = measured.get('sync')!;
  const names = new Set([...asyncRun.times.keys(), ...syncRun.times.keys()]);
  const perStep = (t: OpTime | undefined, field: keyof OpTime) => (t?.[field] ?? 0) / PROFILE_STEPS;
  const ops = [...names].map((op) => ({
    op, callsPerStep: perStep(asyncRun.times.get(op), 'calls'),
    asyncMsPerStep: perStep(asyncRun.times.get(op), 'ms'), syncMsPerStep: perStep(syncRun.times.get(op), 'ms'),
    syncsPerStep: perStep(syncRun.times.get(op), 'syncs'),
  })).sort((a, b) => b.syncMsPerStep - a.syncMsPerStep);
  return {
    asyncStepMs: asyncRun.stepMs, gcPerStep: asyncRun.gc.collections / PROFILE_STEPS, gcMsPerStep: asyncRun.gc.ms / PROFILE_STEPS,
    syncStepMs: syncRun.stepMs, idleSyncMs: syncRun.idleSyncMs, ops,
  };
}

function profileTable(name: string, p: StepProfile): string[] {
  const calls = p.ops.reduce((sum, o) => sum + o.callsPerStep, 0);
  const syncs = p.ops.reduce((sum, o) => sum + o.syncsPerStep, 0);
  const lines = [
    '',
    `Profile of our ${name} step (${PROFILE_STEPS} steps per mode): ${p.asyncStepMs.toFixed(1)} ms per step as it runs, ${calls.toFixed(0)} backend calls, ` +
      `${p.gcPerStep.toFixed(1)} garbage collections (${p.gcMsPerStep.toFixed(1)} ms); ` +
      `${p.syncStepMs.toFixed(1)} ms with a device sync after each call (an idle sync costs ${(p.idleSyncMs * 1000).toFixed(0)} us, ` +
      `${(syncs * p.idleSyncMs).toFixed(1)} ms of the synced step). "async" = call until its promise settles (host cost); "synced" adds the wait for the device.`,
    '',
    '| backend method | calls per step | async ms per step | synced ms per step | synced minus idle syncs |',
    '| --- | ---: | ---: | ---: | ---: |',
  ];
  for (const o of p.ops) {
    lines.push(`| ${o.op} | ${o.callsPerStep.toFixed(1)} | ${o.asyncMsPerStep.toFixed(2)} | ${o.syncMsPerStep.toFixed(2)} | ${(o.syncMsPerStep - o.syncsPerStep * p.idleSyncMs).toFixed(2)} |`);
  }
  return lines;
}

async function runTorch(
  python: string, model: BenchModel, images: HostTensor, labels: Int32Array, warmup: number, steps: number, threads: number,
  device: 'cpu' | 'cuda', amp: boolean,
): Promise<RunResult> {
  const dir = await mkdtemp(join(tmpdir(), 'repvgg-train-bench-'));
  try {
    const { data } = images;
    await writeFile(join(dir, 'x.f32'), new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    await writeFile(join(dir, 'y.i32'), new Uint8Array(labels.buffer, labels.byteOffset, labels.byteLength));
    const out = await runProcess(python, [
      TORCH_SCRIPT, '--arch', model.spec.arch, '--spec', JSON.stringify(model.spec), '--batch', String(images.shape[0]),
      '--size', String(model.size), '--data', dir,
      '--steps', String(steps), '--warmup', String(warmup), '--threads', String(threads), '--lr', String(LR),
      '--device', device, ...(amp ? ['--amp'] : []),
    ]);
    const line = out.trim().split('\n').at(-1) ?? '';
    const r = JSON.parse(line) as { parameters: number; images_per_second: number; step_ms: number[]; losses: number[] };
    return {
      parameters: r.parameters, imagesPerSecond: r.images_per_second, medianStepMs: median(r.step_ms), stepMs: r.step_ms, losses: r.losses,
      load: loadavg()[0] as number,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const USAGE = `Usage: node dist/bench/train.js [--batch 128] [--steps 20] [--warmup 5] [--rounds 3] [--models mini,A0] [--size N]
         [--threads 2] [--backend cpu|cuda] [--precision fp32|fp16|bf16] [--torch-amp] [--python /usr/bin/python3] [--no-torch]
         [--json out.json] [--profile]
  --batch      images per step (default 128)
  --steps      timed steps per round and side (default 20)
  --warmup     untimed steps first, at least 2: the loss check (default 5)
  --rounds     rounds, ours and PyTorch's in turns (default 3)
  --models     mini (28x28x1), A0 and/or B0 (32x32x3) (default mini,A0)
  --size       input side instead of the model's (at least 16)
  --threads    PyTorch's CPU threads (default 2)
  --backend    cpu or cuda (default cpu)
  --precision  fp32, or with --backend cuda fp16 / bf16 mixed precision (default fp32)
  --torch-amp  PyTorch under autocast fp16 (CUDA)
  --python     the Python with torch (default /usr/bin/python3)
  --no-torch   time ours only
  --json       also write the rows as JSON to this file
  --profile    after the rounds, time our step op by op (each backend call as it runs, then with a device sync after
               each) and print a table per model`;

async function main(): Promise<void> {
  const values = parseBenchArgs(USAGE, {
    batch: { type: 'string', default: '128' },
    steps: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '5' },
    models: { type: 'string', default: 'mini,A0' },
    threads: { type: 'string', default: '2' },
    size: { type: 'string' },
    backend: { type: 'string', default: 'cpu' },
    'torch-amp': { type: 'boolean', default: false },
    precision: { type: 'string', default: 'fp32' },
    python: { type: 'string', default: '/usr/bin/python3' },
    'no-torch': { type: 'boolean', default: false },
    json: { type: 'string' },
    profile: { type: 'boolean', default: false },
  });
  const batch = integerOption(values.batch, '--batch', { min: 1, max: 4096 });
  const steps = integerOption(values.steps, '--steps', { min: 1, max: 100_000 });
  const warmup = integerOption(values.warmup, '--warmup', { min: 2, max: 100_000 });
  const threads = integerOption(values.threads, '--threads', { min: 1, max: 1024 });
  const rounds = integerOption(values.rounds, '--rounds', { min: 1, max: 100 });
  if (values.backend !== 'cpu' && values.backend !== 'cuda') throw new OptionError(`Expected cpu or cuda for --backend but received '${values.backend}'`);
  const device = values.backend;
  const precision = values.precision;
  if (precision !== 'fp32' && precision !== 'fp16' && precision !== 'bf16') throw new OptionError(`Expected fp32, fp16 or bf16 for --precision but received '${precision}'`);
  if (precision !== 'fp32' && device !== 'cuda') throw new OptionError(`--precision ${precision} needs --backend cuda`);
  const size = values.size === undefined ? undefined : integerOption(values.size, '--size', { min: 16, max: 1024 });
  const modelNames = choiceList(values.models, '--models', Object.keys(MODELS));
  // As the trainer does: keep freed output buffers for reuse rather than page-faulting fresh ones every step.
  retainFreedMemory();
  const rows: string[] = [];
  const profiles: string[] = [];
  const json: object[] = [];
  for (const name of modelNames) {
    const model = { ...MODELS[name]!(), ...(size !== undefined && { size }) };
    const { images, labels } = randomBatch(model, batch, 7);
    const loadBefore = loadavg()[0] as number;
    // Rounds alternate ours and PyTorch, so that a machine whose speed drifts (a shared host) moves both sides of a
    // round's ratio alike; the table gives medians over the rounds.
    const ours: RunResult[] = [];
    const torch: RunResult[] = [];
    for (let round = 1; round <= rounds; round++) {
      process.stderr.write(`${name}, round ${round}/${rounds}: ours (${warmup} check steps + ${steps} timed), load ${(loadavg()[0] as number).toFixed(2)}\n`);
      const run = device === 'cuda'
        ? await runOurs(cudaBackend({ precision }), model, images, labels, warmup, steps)
        : await runOurs(cpuBackend, model, images, labels, warmup, steps);
      ours.push(run);
      process.stderr.write(`${name}: ours ${run.imagesPerSecond.toFixed(1)} img/s, losses ${run.losses.slice(0, warmup).map((l) => l.toFixed(3)).join(' ')} ...\n`);
      if (values['no-torch']) continue;
      process.stderr.write(`${name}: PyTorch (${device === 'cuda' ? `GPU${values['torch-amp'] ? ', AMP' : ', fp32'}` : `${threads} threads`})\n`);
      const peer = await runTorch(values.python, model, images, labels, warmup, steps, threads, device, values['torch-amp']);
      if (peer.parameters !== run.parameters) {
        throw new Error(`${name}: PyTorch built a network of ${peer.parameters} parameters, ours has ${run.parameters}: not the same network`);
      }
      torch.push(peer);
      process.stderr.write(`${name}: PyTorch ${peer.imagesPerSecond.toFixed(1)} img/s\n`);
    }
    const ratios = torch.map((peer, i) => (ours[i] as RunResult).imagesPerSecond / peer.imagesPerSecond);
    const imagesPerSecond = (runs: RunResult[]) => median(runs.map((r) => r.imagesPerSecond)).toFixed(1);
    const stepMs = (runs: RunResult[]) => median(runs.map((r) => r.medianStepMs)).toFixed(0);
    const ratio = ratios.length === 0 ? '-' : `${median(ratios).toFixed(2)} (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})`;
    rows.push(
      `| ${model.spec.arch} | ${model.size}x${model.size}x${model.spec.inChannels} | ${batch} | ${imagesPerSecond(ours)} | ${stepMs(ours)} | ` +
        `${torch.length > 0 ? imagesPerSecond(torch) : '-'} | ${torch.length > 0 ? stepMs(torch) : '-'} | ${ratio} | ` +
        `${loadBefore.toFixed(2)} / ${(loadavg()[0] as number).toFixed(2)} |`,
    );
    let profile: StepProfile | undefined;
    if (values.profile) {
      process.stderr.write(`${name}: profiling our step op by op\n`);
      profile = device === 'cuda'
        ? await profileOurs(() => cudaBackend({ precision }), model, images, labels)
        : await profileOurs(() => cpuBackend, model, images, labels);
      profiles.push(...profileTable(`${model.spec.arch} ${model.size}x${model.size} batch ${batch}`, profile));
    }
    json.push({ model: model.spec.arch, size: model.size, batch, steps, warmup, rounds, ours, torch, ...(profile && { profile }) });
  }
  console.log(`Training throughput on ${device === 'cuda' ? `the GPU (ours ${precision === 'fp32' ? 'fp32' : `mixed precision, ${precision} convolutions`})` : 'the CPU'}, SGD step (forward + backward + update), ${steps} timed steps after ${warmup} check/warm-up steps; PyTorch ${device}${values['torch-amp'] ? ' with AMP (fp16 autocast)' : ' fp32'}; medians of ${rounds} rounds, each ours then PyTorch`);
  console.log('');
  console.log('| model | input | batch | ours img/s | ours median step ms | PyTorch img/s | PyTorch median step ms | ours/PyTorch (rounds min–max) | load avg (start / end) |');
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of rows) console.log(r);
  for (const line of profiles) console.log(line);
  if (values.json) await writeFile(values.json, JSON.stringify(json, null, 2));
}

await runBench(USAGE, main);
