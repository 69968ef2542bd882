// The CUDA backend: what it reports without a GPU (every machine runs these), and on a GPU the model-level
// checks of the CPU suite on the CUDA addon — deployed and training-time programs of custom, grouped, SE and
// official networks against the CPU backend, the float64 reference and PyTorch's golden logits, in fp32 and
// fp16, with and without CUDA graphs — plus plan reports, batching, errors and dispose().
// Not for: the CPU backend's own tests (test/models.test.ts) or performance (bench/cuda.ts, bench/device/run.sh).
//
// The GPU tests build the addon's step programs here, the same way lib/engine.ts does, so that they exercise the
// addon directly; they are registered with test.skip (titles say "needs a CUDA GPU") where CUDA is unavailable,
// and the first test below logs exactly why.

import { existsSync } from 'node:fs';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';

import { cudaAddonPath, cudaStatus, cudnnSearchDirs, loadCudaAddon } from '../lib/backend/cuda.js';
import type { CudaProgram } from '../lib/backend/cuda.js';
import { RepVGGNetwork } from '../lib/engine.js';
import { readNpy } from '../lib/io/npy.js';
import { blocksOf, customSpec, featureChannels, officialSpec } from '../lib/models/repvgg.js';
import type { RepVGGSpec } from '../lib/models/repvgg.js';
import { BN_EPS, reparameterize } from '../lib/reparam/reparam.js';
import type { DeployedModel } from '../lib/reparam/types.js';
import type { HostTensor, StateDict } from '../lib/tensor.js';
import { fixturePath, fixtureSpec, fixtureStateDict, readFixtureJson } from './helpers/fixture-weights.js';
import { makeRng, maxRelativeError, modelDeployRef, modelTrainRef, randomArray, randomTrainState } from './helpers/reference.js';
import { FP16, MODEL_FP32, checkClose, checkTop1Agreement } from './helpers/tolerances.js';

const status = cudaStatus();
const load = loadCudaAddon();
const gpu = status.available;
/** GPU tests: registered everywhere, run only where CUDA is available (their titles say so when skipped). */
const gpuTest = gpu ? test.serial : test.skip;
/** Short form of why CUDA is unavailable for skipped titles, e.g. 'no NVIDIA driver is loaded' (the first test logs it all). */
const shortReason = (status.reason ?? '').split(/[(:;]/)[0]?.trim().slice(0, 80) ?? '';
const needsGpu = (title: string): string => (gpu ? title : `${title} [needs a CUDA GPU: ${shortReason}]`);
/** An NVIDIA kernel driver is loaded on this machine (independently of our addon). */
const driverPresent = existsSync('/proc/driver/nvidia/version') || existsSync('/dev/nvidiactl');

// ---------------------------------------------------------------------------------------------------------------
// Step programs, built as lib/engine.ts builds them

type Precision = 'fp32' | 'fp16';

interface StepProgram {
  steps: object[];
  numBuffers: number;
  headSrc: number;
}

function deployedSteps(model: DeployedModel): StepProgram {
  const steps: object[] = [];
  model.layers.forEach((layer, i) => {
    const src = i % 2;
    const dst = 1 - src;
    steps.push({
      kind: 'conv', src, dst, inChannels: layer.inChannels, outChannels: layer.outChannels, kernel: 3, stride: layer.stride,
      pad: 1, groups: layer.groups, weight: layer.weight, bias: layer.bias, relu: layer.se === undefined,
    });
    const se = layer.se;
    if (se) {
      steps.push({
        kind: 'se', buf: dst, channels: layer.outChannels, internal: se.channels, relu: true,
        downWeight: se.downWeight, downBias: se.downBias, upWeight: se.upWeight, upBias: se.upBias,
      });
    }
  });
  return { steps, numBuffers: 2, headSrc: model.layers.length % 2 };
}

function trainSteps(spec: RepVGGSpec, state: StateDict): StepProgram {
  const get = (key: string): Float32Array => {
    const tensor = state.get(key);
    if (!tensor) throw new Error(`test setup: ${key} missing`);
    return tensor.data;
  };
  const bn = (prefix: string, src: number, dst: number, channels: number): object => ({
    kind: 'batchnorm', src, dst, channels, eps: BN_EPS,
    mean: get(`${prefix}.running_mean`), var: get(`${prefix}.running_var`), gamma: get(`${prefix}.weight`), beta: get(`${prefix}.bias`),
  });
  const steps: object[] = [];
  let x = 0;
  for (const b of blocksOf(spec)) {
    const [dense, pointwise, identity] = [0, 1, 2, 3].filter((i) => i !== x) as [number, number, number];
    const conv = { kind: 'conv', inChannels: b.inChannels, outChannels: b.outChannels, stride: b.stride, groups: b.groups, src: x, relu: false };
    const se = b.seChannels > 0;
    steps.push({ ...conv, dst: dense, kernel: 3, pad: 1, weight: get(`${b.name}.rbr_dense.conv.weight`) });
    steps.push(bn(`${b.name}.rbr_dense.bn`, dense, dense, b.outChannels));
    steps.push({ ...conv, dst: pointwise, kernel: 1, pad: 0, weight: get(`${b.name}.rbr_1x1.conv.weight`) });
    steps.push(bn(`${b.name}.rbr_1x1.bn`, pointwise, pointwise, b.outChannels));
    steps.push({ kind: 'add', a: dense, b: pointwise, dst: dense, relu: !b.hasIdentity && !se });
    if (b.hasIdentity) {
      steps.push(bn(`${b.name}.rbr_identity`, x, identity, b.inChannels));
      steps.push({ kind: 'add', a: dense, b: identity, dst: dense, relu: !se });
    }
    if (se) {
      const p = `${b.name}.se`;
      steps.push({
        kind: 'se', buf: dense, channels: b.outChannels, internal: b.seChannels, relu: true,
        downWeight: get(`${p}.down.weight`), downBias: get(`${p}.down.bias`), upWeight: get(`${p}.up.weight`), upBias: get(`${p}.up.bias`),
      });
    }
    x = dense;
  }
  return { steps, numBuffers: 4, headSrc: x };
}

interface ProgramOptions {
  precision?: Precision;
  cudaGraph?: boolean;
}

function cudaProgram(spec: RepVGGSpec, program: StepProgram, linear: { weight: Float32Array; bias: Float32Array }, options: ProgramOptions = {}): CudaProgram {
  const addon = load.addon;
  if (!addon) throw new Error(`test setup: no CUDA addon: ${status.reason ?? ''}`);
  return new addon.Program({
    precision: options.precision ?? 'fp32', convAlgorithm: 'auto', cudaGraph: options.cudaGraph ?? false,
    inChannels: spec.inChannels, numBuffers: program.numBuffers, steps: program.steps,
    head: { src: program.headSrc, features: featureChannels(spec), classes: spec.numClasses, weight: linear.weight, bias: linear.bias },
  });
}

function deployedProgram(model: DeployedModel, options: ProgramOptions = {}): CudaProgram {
  return cudaProgram(model.spec, deployedSteps(model), { weight: model.linearWeight, bias: model.linearBias }, options);
}

function trainProgram(spec: RepVGGSpec, state: StateDict, options: ProgramOptions = {}): CudaProgram {
  const weight = state.get('linear.weight');
  const bias = state.get('linear.bias');
  if (!weight || !bias) throw new Error('test setup: linear weights missing');
  return cudaProgram(spec, trainSteps(spec, state), { weight: weight.data, bias: bias.data }, options);
}

async function runProgram(program: CudaProgram, spec: RepVGGSpec, x: HostTensor): Promise<Float32Array> {
  const [n, , h, w] = x.shape as [number, number, number, number];
  const output = new Float32Array(n * spec.numClasses);
  await program.run({ input: x.data, output, batch: n, height: h, width: w });
  return output;
}

/** Runs fn with a program and disposes it whatever happens. */
async function using<T>(program: CudaProgram, fn: (p: CudaProgram) => Promise<T>): Promise<T> {
  try {
    return await fn(program);
  } finally {
    program.dispose();
  }
}

function randomInput(shape: readonly [number, number, number, number], seed: number): HostTensor {
  return { shape: [...shape], data: randomArray(shape.reduce((p, d) => p * d, 1), makeRng(seed), 1) };
}

async function cpuDeployed(model: DeployedModel, x: HostTensor): Promise<Float32Array> {
  const net = RepVGGNetwork.fromDeployed(model, { backend: 'cpu' });
  try {
    return (await net.predict(x)).data;
  } finally {
    net.dispose();
  }
}

/** Small enough for the float64 reference to run in well under a second, with identity branches, strides 1/2 and groups. */
const tinyOptions = {
  inChannels: 3, numClasses: 5, stemChannels: 8, stemStride: 1,
  stageChannels: [8, 16, 16, 32], stageDepths: [2, 1, 2, 1], stageStrides: [1, 2, 1, 2], groups: 2,
};
const tinySpec = customSpec(tinyOptions);
const tinySeSpec = customSpec({ ...tinyOptions, stemStride: 2, stageStrides: [1, 2, 1, 1], seReduction: 2 });

// ---------------------------------------------------------------------------------------------------------------
// Everywhere: status, search list, clean errors

test('cudaStatus() never throws and says whether CUDA is usable, or exactly why not', (t) => {
  t.is(typeof status.available, 'boolean');
  t.is(status.details['addon'], cudaAddonPath(), 'details name the addon path that was tried');
  if (status.available) {
    t.is(status.reason, undefined);
    t.truthy(status.details['deviceName'], 'a device name');
    t.regex(status.details['computeCapability'] ?? '', /^\d+\.\d+$/);
    t.regex(status.details['cudnnVersion'] ?? '', /^[89]\.\d+\.\d+$/);
    t.log(`CUDA: ${status.details['deviceName']} (sm ${status.details['computeCapability']}), driver ${status.details['driverVersion']}, ` +
      `runtime ${status.details['runtimeVersion']}, cuDNN ${status.details['cudnnVersion']} at ${status.details['cudnnPath']}`);
  } else {
    t.true(typeof status.reason === 'string' && status.reason.length > 20, `a reason: ${String(status.reason)}`);
    t.log(`CUDA unavailable, GPU tests skipped: ${status.reason}`);
  }
});

(driverPresent ? test.skip : test)('without an NVIDIA driver, cudaStatus() is unavailable and names the driver (or the missing build)', (t) => {
  t.false(status.available);
  const reason = status.reason ?? '';
  if (load.addon) {
    t.regex(reason, /driver/i, reason);
    t.regex(status.details['deviceError'] ?? '', /cudaGetDeviceCount/);
    t.is(status.details['driverVersion'], 'none');
  } else {
    t.regex(reason, /build:cuda|could not be loaded/, reason);
  }
});

(load.addon ? test : test.skip)('info() reports the runtime, the architectures built, and every place cuDNN was looked for', (t) => {
  const addon = load.addon;
  if (!addon) return;
  const info = addon.info();
  t.is(info.backend, 'cuda');
  t.regex(info.runtimeVersion, /^\d+\.\d+$/);
  t.regex(info.builtFor, /^\d+(,\d+)*/);
  t.true(Array.isArray(info.cudnnTried) && Array.isArray(info.cudnnWarnings));
  if (info.cudnnLoaded) {
    t.truthy(info.cudnnPath);
  } else {
    t.true(info.cudnnTried.some((entry) => entry.includes('system loader path')), info.cudnnTried.join('\n'));
    t.regex(info.cudnnError ?? '', /REPVGG_CUDNN_PATH/);
  }
});

(load.addon && !gpu ? test : test.skip)('constructing a Program where CUDA is unavailable is a clean ERR_BACKEND_UNAVAILABLE error', (t) => {
  const model = reparameterize(tinySpec, randomTrainState(tinySpec, makeRng(1)));
  const error = t.throws(() => deployedProgram(model));
  t.regex(error?.message ?? '', /^ERR_BACKEND_UNAVAILABLE: the CUDA backend is unavailable: .{20,}/);
});

(load.addon ? test : test.skip)('the addon rejects a bad spec with typed errors before touching the GPU', (t) => {
  const model = reparameterize(tinySpec, randomTrainState(tinySpec, makeRng(2)));
  const addon = load.addon;
  if (!addon) return;
  const base = deployedSteps(model);
  const head = { src: base.headSrc, features: featureChannels(tinySpec), classes: tinySpec.numClasses, weight: model.linearWeight, bias: model.linearBias };
  const spec = (overrides: object) => ({ precision: 'fp32', inChannels: 3, numBuffers: 2, steps: base.steps, head, ...overrides });
  t.regex(t.throws(() => new addon.Program(spec({ precision: 'bf16' })))?.message ?? '', /^ERR_ARG_VALUE: .*fp32 or fp16/);
  t.regex(t.throws(() => new addon.Program(spec({ convAlgorithm: 'winograd' })))?.message ?? '', /^ERR_ARG_VALUE: .*cudnnFind/);
  const inPlace = [{ ...(base.steps[0] as object), dst: 0 }, ...base.steps.slice(1)];
  t.regex(t.throws(() => new addon.Program(spec({ steps: inPlace })))?.message ?? '', /^ERR_ARG_VALUE: conv cannot run in place/);
  t.regex(t.throws(() => new addon.Program(spec({ head: { ...head, bias: new Float32Array(2) } })))?.message ?? '', /^ERR_SHAPE: classifier/);
  t.regex(t.throws(() => new addon.Program(spec({ steps: 'none' })))?.message ?? '', /^ERR_ARG_TYPE: /);
});

test('cudnnSearchDirs: $REPVGG_CUDNN_PATH first, then the system loader, then existing Python wheel folders', async (t) => {
  const home = await mkdtemp(join(tmpdir(), 'repvgg-cudnn-'));
  try {
    const userWheel = join(home, '.local', 'lib', 'python3.11', 'site-packages', 'nvidia', 'cudnn', 'lib');
    const venvWheel = join(home, 'venv', 'lib', 'python3.12', 'site-packages', 'nvidia', 'cudnn', 'lib');
    await mkdir(userWheel, { recursive: true });
    await mkdir(venvWheel, { recursive: true });
    await mkdir(join(home, '.local', 'lib', 'python3.10', 'site-packages'), { recursive: true }); // no cuDNN there
    const env = { HOME: home, REPVGG_CUDNN_PATH: '/opt/cudnn/lib/libcudnn.so.9', VIRTUAL_ENV: join(home, 'venv') };
    const dirs = cudnnSearchDirs({ env, askPython: false });
    t.is(dirs[0], '/opt/cudnn/lib/libcudnn.so.9', 'the explicit path comes first, even if it does not exist');
    t.is(dirs[1], '@system');
    t.true(dirs.includes(userWheel), dirs.join('\n'));
    t.true(dirs.includes(venvWheel), dirs.join('\n'));
    t.false(dirs.some((d) => d.includes('python3.10')), 'folders without nvidia/cudnn/lib are not listed');
    t.is(new Set(dirs).size, dirs.length, 'no duplicates');
    t.deepEqual(cudnnSearchDirs({ env: { HOME: home }, askPython: false }).slice(0, 1), ['@system'], 'without the variable, the system loader is first');
  } finally {
    await rm(home, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------------------------
// On a GPU: accuracy against the CPU backend, the float64 reference and PyTorch

gpuTest(needsGpu('deployed grouped network, fp32: CUDA = CPU backend = float64 reference'), async (t) => {
  const model = reparameterize(tinySpec, randomTrainState(tinySpec, makeRng(11)));
  const x = randomInput([3, 3, 12, 12], 12);
  const ours = await using(deployedProgram(model), (p) => runProgram(p, tinySpec, x));
  checkClose(t, 'cuda vs float64', ours, modelDeployRef(model, x).logits, MODEL_FP32);
  checkClose(t, 'cuda vs cpu', ours, await cpuDeployed(model, x), MODEL_FP32);
});

gpuTest(needsGpu('training-time grouped network (conv, BN, add, identity branches), fp32 vs float64 reference'), async (t) => {
  const state = randomTrainState(tinySpec, makeRng(13));
  const x = randomInput([2, 3, 12, 12], 14);
  const ours = await using(trainProgram(tinySpec, state), (p) => runProgram(p, tinySpec, x));
  checkClose(t, 'cuda train vs float64', ours, modelTrainRef(tinySpec, state, x).logits, MODEL_FP32);
});

gpuTest(needsGpu('squeeze-excitation network, deployed and training-time, fp32 vs float64 reference'), async (t) => {
  const state = randomTrainState(tinySeSpec, makeRng(15));
  const model = reparameterize(tinySeSpec, state);
  const x = randomInput([2, 3, 16, 16], 16);
  const deployed = await using(deployedProgram(model), (p) => runProgram(p, tinySeSpec, x));
  checkClose(t, 'cuda deploy SE vs float64', deployed, modelDeployRef(model, x).logits, MODEL_FP32);
  const train = await using(trainProgram(tinySeSpec, state), (p) => runProgram(p, tinySeSpec, x));
  checkClose(t, 'cuda train SE vs float64', train, modelTrainRef(tinySeSpec, state, x).logits, MODEL_FP32);
});

for (const arch of ['A0', 'B1g4'] as const) {
  gpuTest(needsGpu(`official ${arch} deployed, fp32 at 64x64: CUDA = CPU backend = float64 reference`), async (t) => {
    const spec = officialSpec(arch, { numClasses: 10 });
    const model = reparameterize(spec, randomTrainState(spec, makeRng(21)));
    const x = randomInput([2, 3, 64, 64], 22);
    const ours = await using(deployedProgram(model), (p) => runProgram(p, spec, x));
    checkClose(t, `${arch} cuda vs float64`, ours, modelDeployRef(model, x).logits, MODEL_FP32);
    checkClose(t, `${arch} cuda vs cpu`, ours, await cpuDeployed(model, x), MODEL_FP32);
  });
}

async function readFloat64Npy(file: string): Promise<Float64Array> {
  const array = await readNpy(fixturePath(file));
  if (array.dtype !== 'float64') throw new Error(`${file}: expected float64 but the file holds ${array.dtype}`);
  return array.data as Float64Array;
}

async function readFloat32Npy(file: string): Promise<HostTensor> {
  const array = await readNpy(fixturePath(file));
  if (array.dtype !== 'float32') throw new Error(`${file}: expected float32 but the file holds ${array.dtype}`);
  return { shape: array.shape, data: array.data as Float32Array };
}

for (const name of ['a0', 'b1g4', 'tiny_se_g2']) {
  gpuTest(needsGpu(`fixture ${name}: CUDA train and deploy logits match PyTorch's (fp32), deploy also in fp16`), async (t) => {
    const spec = fixtureSpec(readFixtureJson(name));
    const state = fixtureStateDict(spec);
    const x = await readFloat32Npy(`${name}.input.npy`);
    const torchTrain = await readFloat64Npy(`${name}.logits_train.npy`);
    const torchDeploy = await readFloat64Npy(`${name}.logits_deploy.npy`);
    const train = await using(trainProgram(spec, state), (p) => runProgram(p, spec, x));
    checkClose(t, `${name} cuda train vs PyTorch`, train, torchTrain, MODEL_FP32);
    const model = reparameterize(spec, state);
    const deploy = await using(deployedProgram(model), (p) => runProgram(p, spec, x));
    checkClose(t, `${name} cuda deploy vs PyTorch`, deploy, torchDeploy, MODEL_FP32);
    const half = await using(deployedProgram(model, { precision: 'fp16' }), (p) => runProgram(p, spec, x));
    const error = checkClose(t, `${name} cuda fp16 deploy vs PyTorch`, half, torchDeploy, FP16);
    t.log(`${name}: fp16 max relative error ${error.toExponential(2)}`);
  });
}

gpuTest(needsGpu('fp16 deployed A0: NHWC tensor cores, within FP16 of float64 with the same top-1'), async (t) => {
  const spec = officialSpec('A0', { numClasses: 10 });
  const model = reparameterize(spec, randomTrainState(spec, makeRng(31)));
  const x = randomInput([4, 3, 64, 64], 32);
  const ref = modelDeployRef(model, x).logits;
  await using(deployedProgram(model, { precision: 'fp16' }), async (p) => {
    const report = await p.prepare({ batch: 4, height: 64, width: 64 });
    t.is(report.layout, 'NHWC');
    t.is(report.precision, 'fp16');
    t.is(report.inputChannelsStored, 8, 'the 3-channel input is padded to 8 for tensor cores');
    t.true(report.convs.some((c) => c.mathType === 'TENSOR_OP'), report.convs.map((c) => c.implementation).join('; '));
    const ours = await runProgram(p, spec, x);
    const error = checkClose(t, 'A0 fp16 vs float64', ours, ref, FP16);
    const decisive = checkTop1Agreement(t, 'A0 fp16 top-1', ours, ref, [4, 10], FP16);
    t.log(`A0 fp16: max relative error ${error.toExponential(2)}, ${decisive}/4 decisive samples agree`);
  });
});

gpuTest(needsGpu('fp16 training-time grouped and SE networks within FP16 of float64'), async (t) => {
  for (const [name, spec] of [['tiny', tinySpec], ['tiny SE', tinySeSpec]] as const) {
    const state = randomTrainState(spec, makeRng(33));
    const x = randomInput([2, 3, 16, 16], 34);
    const ours = await using(trainProgram(spec, state, { precision: 'fp16' }), (p) => runProgram(p, spec, x));
    checkClose(t, `${name} fp16 train vs float64`, ours, modelTrainRef(spec, state, x).logits, FP16);
  }
});

gpuTest(needsGpu('plan report (fp32): every deployed layer runs the fused conv+bias+ReLU with FMA (no TF32) math'), async (t) => {
  const spec = officialSpec('A0', { numClasses: 10 });
  const model = reparameterize(spec, randomTrainState(spec, makeRng(41)));
  await using(deployedProgram(model), async (p) => {
    const report = await p.prepare({ batch: 2, height: 64, width: 64 });
    t.is(report.layout, 'NCHW');
    t.is(report.convs.length, model.layers.length);
    for (const conv of report.convs) {
      t.is(conv.mathType, 'FMA', `step ${conv.step}: ${conv.implementation}`);
      t.true(conv.fused, `step ${conv.step} unfused: ${conv.note ?? ''}`);
    }
    t.true(report.activationBytes > 0 && report.weightBytes > 0);
    t.log(report.convs.map((c) => `${c.step}: ${c.implementation}${c.note ? ` (${c.note})` : ''}`).join('\n'));
  });
});

gpuTest(needsGpu('cudaGraph: the captured forward replays to the eager logits, across repeated runs and batch sizes'), async (t) => {
  const spec = officialSpec('A0', { numClasses: 10 });
  const model = reparameterize(spec, randomTrainState(spec, makeRng(51)));
  for (const precision of ['fp32', 'fp16'] as const) {
    const x = randomInput([3, 3, 64, 64], 52);
    const eager = await using(deployedProgram(model, { precision }), (p) => runProgram(p, spec, x));
    await using(deployedProgram(model, { precision, cudaGraph: true }), async (p) => {
      const report = await p.prepare({ batch: 3, height: 64, width: 64 });
      t.true(report.cudaGraph, `${precision}: graph not used: ${report.cudaGraphError ?? ''}`);
      for (let rep = 0; rep < 2; rep++) {
        const graphed = await runProgram(p, spec, x);
        t.true(maxRelativeError(graphed, eager) <= 1e-6, `${precision} replay ${rep}: ${maxRelativeError(graphed, eager)}`);
      }
      // Another batch size builds (and captures) another plan; the first one must still replay correctly.
      const one = randomInput([1, 3, 64, 64], 53);
      checkClose(t, `${precision} batch 1`, await runProgram(p, spec, one), modelDeployRef(model, one).logits, precision === 'fp16' ? FP16 : MODEL_FP32);
      t.true(maxRelativeError(await runProgram(p, spec, x), eager) <= 1e-6, `${precision}: first plan after the second`);
    });
  }
});

gpuTest(needsGpu('a batch gives the same logits as its images one by one; runSync equals run'), async (t) => {
  const model = reparameterize(tinySpec, randomTrainState(tinySpec, makeRng(61)));
  const x = randomInput([4, 3, 12, 12], 62);
  await using(deployedProgram(model), async (p) => {
    const all = await runProgram(p, tinySpec, x);
    const image = 3 * 12 * 12;
    for (let i = 0; i < 4; i++) {
      const one: HostTensor = { shape: [1, 3, 12, 12], data: x.data.slice(i * image, (i + 1) * image) };
      const alone = await runProgram(p, tinySpec, one);
      checkClose(t, `image ${i}`, alone, all.subarray(i * 5, (i + 1) * 5), MODEL_FP32);
    }
    const output = new Float32Array(4 * 5);
    p.runSync({ input: x.data, output, batch: 4, height: 12, width: 12 });
    t.deepEqual(output, all);
  });
});

gpuTest(needsGpu('bad run arguments are typed errors; dispose() frees and later calls throw ERR_DISPOSED'), async (t) => {
  const model = reparameterize(tinySpec, randomTrainState(tinySpec, makeRng(71)));
  const p = deployedProgram(model);
  const output = new Float32Array(5);
  t.throws(() => p.run({ input: new Float32Array(10), output, batch: 1, height: 12, width: 12 }), { message: /^ERR_SHAPE: input holds 10/ });
  await t.throwsAsync(p.run({ input: new Float32Array(0), output, batch: 0, height: 12, width: 12 }), { message: /^ERR_SHAPE: input must have a positive batch/ });
  p.dispose();
  p.dispose();
  t.throws(() => p.run({ input: new Float32Array(3 * 144), output, batch: 1, height: 12, width: 12 }), { message: /^ERR_DISPOSED/ });
});

gpuTest(needsGpu('benchmark() returns one positive device time per iteration'), async (t) => {
  const spec = officialSpec('A0', { numClasses: 10 });
  const model = reparameterize(spec, randomTrainState(spec, makeRng(81)));
  const x = randomInput([2, 3, 64, 64], 82);
  await using(deployedProgram(model), async (p) => {
    const result = await p.benchmark({ input: x.data, batch: 2, height: 64, width: 64, warmup: 2, iterations: 5 });
    t.is(result.ms.length, 5);
    t.true(result.ms.every((ms) => ms > 0 && Number.isFinite(ms)), result.ms.join(', '));
  });
});
