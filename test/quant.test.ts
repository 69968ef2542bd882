// INT8: the calibration math on hand-checked cases, the native int8 program against the float64 int8 reference
// (plain, grouped, SE and mixed float/int8 networks, several input shapes), the calibration's simulation against
// the engine, the weights-file layout and its validation, the QDQ ONNX export in onnxruntime, and `repvgg
// quantize` / `infer --precision int8` / `eval --precision int8` / `export-onnx --int8` end to end, also from a
// torch.save checkpoint and an image folder.
// Not for: int8 speed (bench/cpu.ts) or the Fashion-MNIST accuracy goal (.ci/run checks it after `npm start`).

import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';

import test from 'ava';
import type { ExecutionContext } from 'ava';
import { InferenceSession, Tensor } from 'onnxruntime-node';

import { cpuCapabilities } from '../lib/backends.js';
import { INT8_WEIGHT_BITS_WARNING, RepVGGNetwork, type PlanReport } from '../lib/engine.js';
import { ArgumentValueError, FormatError, WeightsMismatchError } from '../lib/errors.js';
import { encodeOnnx } from '../lib/io/onnx.js';
import { readNpy, writeNpy } from '../lib/io/npy.js';
import { encodeSafetensors, writeSafetensors } from '../lib/io/safetensors.js';
import { loadWeights, saveWeights } from '../lib/io/weights.js';
import { randomStateDict } from '../lib/models/init.js';
import { customSpec, officialSpec, type RepVGGSpec } from '../lib/models/repvgg.js';
import {
  activationClipError,
  activationHistogram,
  calibrate,
  chooseActivationScale,
  chooseWeightScale,
  defaultWeightBits,
  sqnrDb,
  weightQuantizationError,
  type CalibrationResult,
} from '../lib/quant/calibrate.js';
import {
  integerWeights,
  maxIntegerWeight,
  putQuantization,
  quantizationForCpu,
  sevenBitWeights,
  weightQmax,
  type ModelQuantization,
} from '../lib/quant/params.js';
import { deployedStateDict, reparameterize } from '../lib/reparam/reparam.js';
import { createServer } from '../lib/serve/server.js';
import type { DeployedModel } from '../lib/reparam/types.js';
import type { HostTensor } from '../lib/tensor.js';
import { cli, describeResult as describe, type CliResult } from './helpers/cli-runner.js';
import { fixturePath } from './helpers/fixture-weights.js';
import { randomImages, randomPng } from './helpers/random-images.js';
import { makeRng, maxRelativeError, modelDeployRef, modelInt8Ref, randomTrainState } from './helpers/reference.js';
import { INT8_ONNX, INT8_REFERENCE, MODEL_FP32, checkClose, checkTop1Agreement } from './helpers/tolerances.js';

let scratch = '';
test.before(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'repvgg-quant-'));
});
test.after.always(async () => {
  if (scratch !== '') await rm(scratch, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------------------
// The calibration math

test('sqnrDb and the weight rounding error on hand-computed values', (t) => {
  t.true(Math.abs(sqnrDb([1, 2], [1, 2.1]) - 10 * Math.log10(5 / 0.01)) < 1e-9, '10 log10(5 / 0.1^2) = 26.99 dB');
  t.is(sqnrDb([1, 2], [1, 2]), Number.POSITIVE_INFINITY);
  // 1.0 is q = 127 exactly; 0.3 * 127 = 38.1 rounds to 38, which represents 38 / 127.
  const error = weightQuantizationError([1, 0.3], 1 / 127);
  t.true(Math.abs(error - (0.3 - 38 / 127) ** 2) < 1e-15, `error ${error}`);
  // Clipping 1.0 to any ratio below 1 costs at least 0.01^2 = 1e-4, far more than 6.2e-7: the max scale wins.
  t.is(chooseWeightScale([1, 0.3]), 1 / 127);
  t.is(chooseWeightScale([0, 0, 0]), 1, 'an all-zero channel keeps a valid scale');
});

test('chooseWeightScale is the least-error clip ratio of its grid, and clips a heavy tail', (t) => {
  const rng = makeRng(11);
  const values = [...Array.from({ length: 2000 }, () => (rng() - 0.5) * 0.02), 1.0, -0.9];
  let best = { ratio: 0, error: Number.POSITIVE_INFINITY };
  for (let r = 50; r <= 100; r++) {
    const error = weightQuantizationError(values, (1.0 * r) / 100 / 127);
    if (error < best.error) best = { ratio: r / 100, error };
  }
  const chosen = chooseWeightScale(values);
  t.true(Math.abs(chosen - best.ratio / 127) < 1e-15, `chosen ${chosen} vs grid minimum ${best.ratio / 127}`);
  t.true(weightQuantizationError(values, chosen) <= weightQuantizationError(values, 1 / 127));
});

test('7-bit weights: the grid of 63, and 8-bit weights halved onto twice the scale (odd q to the even neighbour)', (t) => {
  t.is(weightQmax(8), 127);
  t.is(weightQmax(7), 63);
  t.is(chooseWeightScale([1, 0.3], 63), 1 / 63, 'the max scale of the 7-bit grid');
  // scale 0.5: q = 127, -127, 3, -3, 5, 2, 0, -64 -> q / 2 = 63.5, -63.5, 1.5, -1.5, 2.5, 1, 0, -32
  const scales = Float32Array.of(0.5, 0.25);
  const weight = Float32Array.of(63.5, -63.5, 1.5, -1.5, 1.25, 0.5, 0, -16); // two channels of four (the second at 0.25)
  t.is(maxIntegerWeight(weight, scales), 127);
  const seven = sevenBitWeights(weight, scales);
  t.deepEqual([...seven.weightScales], [1, 0.5]);
  // 63.5 -> 64 (even) -> 63 (clamped); 1.5 -> 2; 2.5 -> 2; 1 and -32 stay.
  t.deepEqual([...integerWeights(seven.weight, seven.weightScales)], [63, -63, 2, -2, 2, 1, 0, -32]);
  t.deepEqual([...seven.weight], [63, -63, 2, -2, 1, 0.5, 0, -16]);
  t.is(maxIntegerWeight(seven.weight, seven.weightScales), 63);
});

test('quantizationForCpu: unchanged with VNNI or 7-bit layers; without VNNI only the layers above 63 move to 7 bits', async (t) => {
  const spec = plainSpec;
  const model = reparameterize(spec, randomTrainState(spec, makeRng(41)));
  const images = randomImages([4, 3, 32, 32], makeRng(42));
  const eight = await calibrate(model, images, { weightBits: 8 });
  const seven = await calibrate(model, images, { weightBits: 7 });
  t.is(eight.weightBits, 8);
  t.is(seven.weightBits, 7);
  for (const [name, q] of seven.quantization) {
    t.true(maxIntegerWeight(seven.model.layers.find((l) => l.name === name)!.weight, q.weightScales) <= 63, `${name} fits 7 bits`);
  }
  const withVnni = quantizationForCpu(eight.model, eight.quantization, true);
  t.is(withVnni.model, eight.model);
  t.deepEqual(withVnni.requantized, []);
  const alreadySeven = quantizationForCpu(seven.model, seven.quantization, false);
  t.is(alreadySeven.model, seven.model);
  t.deepEqual(alreadySeven.requantized, []);
  // Mixed: one layer with 7-bit weights, the others 8-bit.
  const [first, ...rest] = [...eight.quantization.keys()];
  const mixedModel = { ...eight.model, layers: eight.model.layers.map((l) => (l.name === first ? seven.model.layers.find((s) => s.name === first)! : l)) };
  const mixedQuantization = new Map(eight.quantization).set(first!, seven.quantization.get(first!)!);
  const fitted = quantizationForCpu(mixedModel, mixedQuantization, false);
  t.deepEqual(fitted.requantized, rest, 'every 8-bit layer (random weights always reach 127 somewhere), not the 7-bit one');
  for (const [index, layer] of fitted.model.layers.entries()) {
    const q = fitted.quantization.get(layer.name);
    if (!q) {
      t.is(layer, mixedModel.layers[index]!, `${layer.name} (float32) untouched`);
      continue;
    }
    t.true(maxIntegerWeight(layer.weight, q.weightScales) <= 63, `${layer.name} fits 7 bits`);
    if (rest.includes(layer.name)) {
      const expected = sevenBitWeights(mixedModel.layers[index]!.weight, mixedQuantization.get(layer.name)!.weightScales);
      t.deepEqual([...layer.weight], [...expected.weight], `${layer.name} weights`);
      t.deepEqual([...q.weightScales], [...expected.weightScales], `${layer.name} scales`);
      t.is(q.inputScale, mixedQuantization.get(layer.name)!.inputScale);
    } else {
      t.is(layer, mixedModel.layers[index]!, `${layer.name} kept`);
    }
  }
});

test('activationHistogram and activationClipError on a hand-computed histogram', (t) => {
  const h = activationHistogram(Float32Array.of(0, 0, 0.5, 3.9), 4);
  t.is(h.zeros, 2);
  t.is(h.max, Math.fround(3.9));
  t.deepEqual([...h.counts], [1, 0, 0, 1]);
  // Bin width 3.9 / 4 = 0.975: centers 0.4875 (kept, rounding noise step^2 / 12) and 3.4125 (clipped to 2).
  const step = 2 / 255;
  const expected = step ** 2 / 12 + (3.4125 - 2) ** 2;
  const error = activationClipError(h, 2);
  t.true(Math.abs(error - expected) < 1e-6, `error ${error}, expected ${expected}`);
});

test('chooseActivationScale clips a rare outlier and keeps the whole range of a dense one', (t) => {
  const counts = new Float64Array(2048);
  counts.fill(1e6, 0, 21); // most values below ~1
  counts[2047] = 1; // one near 100
  // Keeping 100 costs 2.1e7 * (100 / 255)^2 / 12 = 2.7e5 of rounding noise; clipping at 12.5 (the smallest clip
  // tried) costs 87.5^2 + 2.1e7 * (12.5 / 255)^2 / 12 = 1.2e4.
  t.is(chooseActivationScale({ max: 100, zeros: 0, counts }), 12.5 / 255);
  const uniform = new Float64Array(2048).fill(1000);
  const scale = chooseActivationScale({ max: 10, zeros: 0, counts: uniform });
  t.true(scale * 255 > 9.5, `a uniform histogram keeps almost all its range (clip ${scale * 255})`);
  t.is(chooseActivationScale({ max: 0, zeros: 10, counts: new Float64Array(2048) }), 1, 'all zeros');
});

// ---------------------------------------------------------------------------------------------------------------
// The native int8 program against the float64 int8 reference

const plainSpec = customSpec({ numClasses: 6, stemChannels: 16, stageChannels: [16, 32, 32, 48], stageDepths: [1, 2, 1, 1] });
const groupedSpec = customSpec({
  numClasses: 5, stemChannels: 16, stageChannels: [16, 32, 32, 32], stageDepths: [2, 1, 1, 1], groups: [2, 4, 2, 1, 1],
});
const seSpec = customSpec({ numClasses: 4, stemChannels: 16, stageChannels: [16, 16, 32, 32], stageDepths: [1, 1, 1, 1], seReduction: 4 });

async function calibrated(spec: RepVGGSpec, seed: number, keep: string[] = []) {
  const rng = makeRng(seed);
  const model = reparameterize(spec, randomTrainState(spec, rng));
  const result = await calibrate(model, randomImages([8, spec.inChannels, 32, 32], rng), { keep });
  return { model, result, rng };
}

function int8Network(model: DeployedModel, quantization: ModelQuantization): RepVGGNetwork {
  return RepVGGNetwork.fromDeployed(model, { backend: 'cpu', precision: 'int8', quantization });
}

// On AVX-512 an int8 network's first layer (up to 4 input channels) runs our own kernel (small_input_conv.h).
const OWN_FIRST_LAYER_KERNEL = /^avx512/.test(cpuCapabilities().isa);

/**
 * The int8 network's logits for x against the float64 int8 reference (its head rounded as the plan reports), and
 * not vacuously: int8 differs from the float network by far more than the tolerance.
 */
async function checkInt8Reference(
  t: ExecutionContext, label: string, network: RepVGGNetwork, model: DeployedModel, calibration: CalibrationResult, x: HostTensor,
  headPrecision: PlanReport['headPrecision'],
): Promise<void> {
  const ours = await network.predict(x);
  checkClose(t, label, ours.data, modelInt8Ref(calibration.model, calibration.quantization, x, headPrecision).logits, INT8_REFERENCE);
  const floatError = maxRelativeError(ours.data, modelDeployRef(model, x).logits);
  t.true(floatError > 10 * INT8_REFERENCE, `int8 really quantizes (${floatError.toExponential(2)} from float32)`);
}

for (const [title, spec, keep] of [
  ['plain', plainSpec, []],
  ['grouped 2 and 4', groupedSpec, []],
  ['squeeze-excitation', seSpec, []],
  ['one layer kept in float32 between int8 layers', plainSpec, ['stage2.0']],
] as const) {
  test(`int8 program matches the float64 int8 reference: ${title}`, async (t) => {
    const { model, result, rng } = await calibrated(spec, 100 + title.length, [...keep]);
    for (const name of keep) t.false(result.quantization.has(name), `${name} kept in float32`);
    t.is(result.quantization.size, model.layers.length - 1 - keep.length, 'every other layer but the first is int8');
    const network = int8Network(result.model, result.quantization);
    try {
      const report = await network.prepare(1, 32, 32);
      t.is(report.headPrecision, cpuCapabilities().nativeBf16 ? 'bf16' : 'fp32', 'the head in bf16 where the CPU multiplies it natively');
      for (const shape of [[1, 3, 32, 32], [3, 3, 48, 32]] as [number, number, number, number][]) {
        await checkInt8Reference(t, `${title} ${shape.join('x')}`, network, model, result, randomImages(shape, rng), report.headPrecision);
      }
      t.is(report.convs.filter((c) => c.algorithm === 'int8').length, result.quantization.size, 'the quantized layers run int8 primitives');
      const profile = await network.profile(1, 32, 32, { runs: 1 });
      t.deepEqual(profile.entries.filter((e) => e.what === 'int8 conv').map((e) => e.layer), [...result.quantization.keys()]);
      // Our first-layer kernel also writes stage1.0's u8 input unless the layer's SE block reads its output first;
      // otherwise a quantizing reorder makes stage1.0's input.
      const writesU8 = OWN_FIRST_LAYER_KERNEL && model.layers[0]!.se === undefined;
      const first = report.convs[0]!.implementation;
      t.is(first.startsWith('own direct'), OWN_FIRST_LAYER_KERNEL, `first layer: ${first}`);
      t.is(first.endsWith('u8 out'), writesU8, `first layer: ${first}`);
      t.is(profile.entries.some((e) => e.layer === 'stage1.0' && e.what === 'quantize'), !writesU8, 'stage1.0 quantizes its input only where the first layer does not');
    } finally {
      network.dispose();
    }
  });
}

// The first layer's own kernel (AVX-512, int8 networks): 1 to 4 input channels (5 go to oneDNN), strides 1 and 2,
// output channels that are not a multiple of 16 or need two passes of 64, and map sizes whose left and right edges
// and short rows take every path of the kernel; it writes u8 for an int8 stage1.0 and float32 for a float one.
const smallStage = { stageChannels: [16, 16, 16, 16], stageDepths: [1, 1, 1, 1] };
for (const [title, spec, keep] of [
  ['1 input channel, stride 1, 24 channels', customSpec({ inChannels: 1, numClasses: 4, stemChannels: 24, stemStride: 1, ...smallStage }), []],
  ['4 input channels, 80 channels', customSpec({ inChannels: 4, numClasses: 4, stemChannels: 80, ...smallStage }), []],
  ['5 input channels', customSpec({ inChannels: 5, numClasses: 4, stemChannels: 16, ...smallStage }), []],
  ['3 input channels, stage1.0 kept in float32', plainSpec, ['stage1.0']],
] as const) {
  test(`int8 first layer matches the float64 int8 reference: ${title}`, async (t) => {
    const { model, result, rng } = await calibrated(spec, 300 + title.length, [...keep]);
    const network = int8Network(result.model, result.quantization);
    try {
      const shapes: [number, number, number, number][] = [[1, spec.inChannels, 33, 37], [3, spec.inChannels, 45, 32]];
      for (const shape of shapes) {
        const { headPrecision, convs } = await network.prepare(shape[0], shape[2], shape[3]);
        const ownKernel = OWN_FIRST_LAYER_KERNEL && spec.inChannels <= 4;
        t.is(convs[0]!.implementation.startsWith('own direct'), ownKernel, `first layer: ${convs[0]!.implementation}`);
        t.is(convs[0]!.implementation.endsWith('u8 out'), ownKernel && keep.length === 0, `first layer: ${convs[0]!.implementation}`);
        await checkInt8Reference(t, `${title} ${shape.join('x')}`, network, model, result, randomImages(shape, rng), headPrecision);
      }
    } finally {
      network.dispose();
    }
  });
}

test("8-bit weights run exactly as this CPU can: the engine equals the float64 reference of quantizationForCpu's model", async (t) => {
  const cpu = cpuCapabilities();
  const rng = makeRng(43);
  const model = reparameterize(plainSpec, randomTrainState(plainSpec, rng));
  const result = await calibrate(model, randomImages([8, 3, 32, 32], rng), { weightBits: 8 });
  t.is(defaultWeightBits(), cpu.int8Vnni ? 8 : 7, `the default for this CPU (${cpu.isa})`);
  const fitted = quantizationForCpu(result.model, result.quantization, cpu.int8Vnni);
  t.deepEqual(fitted.requantized, cpu.int8Vnni ? [] : [...result.quantization.keys()], 'without VNNI every (8-bit) int8 layer moves to 7 bits');
  const warnings: Error[] = [];
  const onWarning = (warning: Error) => {
    if ((warning as Error & { code?: string }).code === INT8_WEIGHT_BITS_WARNING) warnings.push(warning);
  };
  process.on('warning', onWarning);
  const network = int8Network(result.model, result.quantization);
  try {
    const x = randomImages([3, 3, 32, 32], rng);
    const reference = modelInt8Ref(fitted.model, fitted.quantization, x, (await network.prepare(3, 32, 32)).headPrecision);
    checkClose(t, `int8 on ${cpu.isa}`, (await network.predict(x)).data, reference.logits, INT8_REFERENCE);
    await new Promise((resolve) => setImmediate(resolve)); // process warnings are emitted on the next tick
    t.is(warnings.length, cpu.int8Vnni ? 0 : 1, 'one warning when layers moved to 7 bits, none otherwise');
    if (!cpu.int8Vnni) t.regex(warnings[0]!.message, new RegExp(`${cpu.isa}.*no VNNI.*${fitted.requantized.length} layers \\(stage1\\.0, `));
  } finally {
    process.off('warning', onWarning);
    network.dispose();
  }
});

test('the calibration simulates what the engine computes: same logits SQNR and top-1 agreement', async (t) => {
  const spec = plainSpec;
  const rng = makeRng(7);
  const model = reparameterize(spec, randomTrainState(spec, rng));
  const images = randomImages([16, 3, 32, 32], rng);
  const result = await calibrate(model, images);
  const int8 = int8Network(result.model, result.quantization);
  const float = RepVGGNetwork.fromDeployed(model, { backend: 'cpu' });
  try {
    const a = await int8.predict(images);
    const b = await float.predict(images);
    const measured = sqnrDb(b.data, a.data);
    t.true(Math.abs(measured - result.logitsSqnrDb) < 0.5, `engine ${measured.toFixed(2)} dB vs calibration ${result.logitsSqnrDb.toFixed(2)} dB`);
    t.true(result.logitsSqnrDb > 20, `logits SQNR ${result.logitsSqnrDb.toFixed(1)} dB`);
    for (const layer of result.layers.slice(1)) t.true(layer.networkSqnrDb > 15 && (layer.layerSqnrDb ?? 0) > 15, `${layer.name}: ${JSON.stringify(layer)}`);
  } finally {
    int8.dispose();
    float.dispose();
  }
});

test("method 'max' without bias correction is the standard recipe: max-abs scales, nothing clipped, biases untouched", async (t) => {
  const rng = makeRng(31);
  const model = reparameterize(plainSpec, randomTrainState(plainSpec, rng));
  const images = randomImages([4, 3, 32, 32], rng);
  const result = await calibrate(model, images, { method: 'max', biasCorrection: false });
  for (const [index, layer] of result.model.layers.entries()) {
    t.deepEqual(layer.bias, model.layers[index]!.bias, `${layer.name} bias`);
    const q = result.quantization.get(layer.name);
    if (!q) continue;
    const perChannel = layer.weight.length / layer.outChannels;
    q.weightScales.forEach((scale, oc) => {
      const channel = model.layers[index]!.weight.subarray(oc * perChannel, (oc + 1) * perChannel);
      t.is(scale, Math.fround(channel.reduce((m, v) => Math.max(m, Math.abs(v)), 0) / weightQmax(result.weightBits)), `${layer.name}[${oc}] weight scale`);
    });
  }
  for (const report of result.layers.slice(1)) t.is(report.clippedFraction, 0, `${report.name}: the max scale clips nothing`);
  const mse = await calibrate(model, images, { biasCorrection: false });
  t.is(mse.layers[1]!.inputScale! <= result.layers[1]!.inputScale!, true, 'on the same input the MSE clip is at most the max');
  t.true(mse.layers.slice(1).some((l, i) => l.inputScale! < result.layers[i + 1]!.inputScale!), 'the MSE search clips somewhere');
});

test('bad calibration arguments and int8 without calibration are typed errors', async (t) => {
  const model = reparameterize(plainSpec, randomTrainState(plainSpec, makeRng(3)));
  const officialModel = reparameterize(officialSpec('A0', { numClasses: 4 }), randomStateDict(officialSpec('A0', { numClasses: 4 }), 'train', 2));
  await t.throwsAsync(calibrate(model, randomImages([2, 3, 32, 32], makeRng(1)), { keep: ['stage9.0'] }), { instanceOf: ArgumentValueError, message: /stage9\.0/ });
  await t.throwsAsync(calibrate(model, randomImages([2, 1, 32, 32], makeRng(1))), { message: /\[N, 3, H, W\].*\[2, 1, 32, 32\]/ });
  t.throws(() => RepVGGNetwork.fromDeployed(model, { backend: 'cpu', precision: 'int8' }), { instanceOf: ArgumentValueError, message: /repvgg quantize/ });
  const trainState = randomTrainState(plainSpec, makeRng(3));
  t.throws(() => RepVGGNetwork.fromStateDict(plainSpec, trainState, { backend: 'cpu', precision: 'int8' }), { message: /training-time weights/ });
  const first = new Map([[model.layers[0]!.name, { inputScale: 0.1, weightScales: new Float32Array(16).fill(0.01) }]]);
  t.throws(() => int8Network(model, first), { instanceOf: WeightsMismatchError, message: /first layer stage0/ });
  // Scales that are each valid but whose product leaves float32: refused by the native compile, not run as inf.
  const layer = model.layers[1]!;
  const huge = new Map([[layer.name, { inputScale: 1e30, weightScales: new Float32Array(layer.outChannels).fill(1e30) }]]);
  const network = int8Network({ ...model, layers: model.layers.map((l, i) => (i === 1 ? { ...l, weight: l.weight.map(() => 0) } : l)) }, huge);
  await t.throwsAsync(network.prepare(1, 32, 32), { message: /int8 conv step 1: the scales of output channel 0/ });
  network.dispose();
  // A calibration set too large for memory is refused from its shape, before anything is allocated.
  await t.throwsAsync(calibrate(officialModel, { shape: [2000, 3, 224, 224], data: new Float32Array(0) }), {
    instanceOf: ArgumentValueError, message: /at most \d+ calibration images of 224x224 for RepVGG-A0 .* but received 2000/,
  });
});

// ---------------------------------------------------------------------------------------------------------------
// The weights file

async function quantizedFile(name: string): Promise<{ path: string; model: DeployedModel; quantization: ModelQuantization; spec: RepVGGSpec }> {
  const { result } = await calibrated(plainSpec, 21);
  const state = deployedStateDict(result.model);
  putQuantization(state, result.quantization);
  const path = join(scratch, name);
  await saveWeights(path, plainSpec, 'deploy', state);
  return { path, model: result.model, quantization: result.quantization, spec: plainSpec };
}

test('a quantized file loads with its scales taken out, runs int8 and fp32, and is checked on load', async (t) => {
  const { path, model, quantization } = await quantizedFile('roundtrip.safetensors');
  const loaded = await loadWeights(path);
  t.is(loaded.form, 'deploy');
  t.deepEqual([...loaded.quantization!.keys()], [...quantization.keys()]);
  for (const [name, q] of quantization) {
    t.is(loaded.quantization!.get(name)!.inputScale, Math.fround(q.inputScale));
    t.deepEqual(loaded.quantization!.get(name)!.weightScales, q.weightScales);
  }
  t.false([...loaded.state.keys()].some((k) => k.endsWith('_scale')), 'the scale tensors are not weights');
  const x = randomImages([2, 3, 32, 32], makeRng(5));
  const fromFile = RepVGGNetwork.fromStateDict(loaded.spec, loaded.state, { backend: 'cpu', precision: 'int8', quantization: loaded.quantization! });
  const direct = int8Network(model, quantization);
  t.deepEqual((await fromFile.predict(x)).data, (await direct.predict(x)).data, 'the file runs exactly what was calibrated');
  fromFile.dispose();
  direct.dispose();
  // In fp32 (and in any tool that ignores the scale tensors) the file is the weight-quantized float network.
  const asFloat = RepVGGNetwork.fromStateDict(loaded.spec, loaded.state, { backend: 'cpu' });
  checkClose(t, 'quantized file in fp32', (await asFloat.predict(x)).data, modelDeployRef(model, x).logits, MODEL_FP32);
  asFloat.dispose();

  // Damaged files: each a typed error naming the key.
  const raw = new Map(loaded.state);
  putQuantization(raw, loaded.quantization!);
  const damaged = async (edit: (state: typeof raw) => void): Promise<string> => {
    const copy = new Map([...raw].map(([k, v]) => [k, { shape: v.shape, data: v.data.slice() }]));
    edit(copy);
    const file = join(scratch, `damaged-${Math.random().toString(16).slice(2)}.safetensors`);
    await writeFile(file, encodeSafetensors(copy, loaded.metadata));
    return file;
  };
  await t.throwsAsync(loadWeights(await damaged((s) => { s.get('stage1.0.rbr_reparam.weight')!.data[3]! += 1e-4; })), {
    instanceOf: FormatError, message: /stage1\.0\.rbr_reparam\.weight\[3\].*not on its int8 grid/,
  });
  await t.throwsAsync(loadWeights(await damaged((s) => { s.get('stage2.0.rbr_reparam.weight_scale')!.data[0] = -1; })), {
    instanceOf: FormatError, message: /stage2\.0\.rbr_reparam\.weight_scale\[0\] must be positive/,
  });
  await t.throwsAsync(loadWeights(await damaged((s) => { s.get('stage2.0.rbr_reparam.input_scale')!.data[0] = Number.NaN; })), {
    instanceOf: FormatError, message: /input_scale must be positive and finite but is NaN/,
  });
  await t.throwsAsync(loadWeights(await damaged((s) => { s.delete('stage3.0.rbr_reparam.input_scale'); })), {
    instanceOf: WeightsMismatchError, message: /stage3\.0 has only part of its int8 parameters/,
  });
  await t.throwsAsync(loadWeights(await damaged((s) => { s.set('stage3.0.rbr_reparam.weight_scale', { shape: [2], data: Float32Array.of(1, 1) }); })), {
    instanceOf: WeightsMismatchError, message: /weight_scale \[32\].*\[2\]/,
  });
});

test('export with QDQ int8 layers runs in onnxruntime and agrees with our int8 program', async (t) => {
  const { model, quantization } = await quantizedFile('onnx.safetensors');
  const session = await InferenceSession.create(encodeOnnx(model, { quantization }));
  const x = randomImages([6, 3, 32, 32], makeRng(9));
  const theirs = (await session.run({ input: new Tensor('float32', x.data, x.shape) })).logits!.data as Float32Array;
  const network = int8Network(model, quantization);
  const ours = await network.predict(x);
  network.dispose();
  await session.release();
  checkClose(t, 'onnxruntime QDQ vs ours int8', theirs, ours.data, INT8_ONNX);
  checkTop1Agreement(t, 'onnxruntime QDQ vs ours int8', theirs, ours.data, [6, plainSpec.numClasses], INT8_ONNX);
  t.throws(() => encodeOnnx(model, { quantization, opset: 12 }), { instanceOf: ArgumentValueError, message: /opset 13/ });
});

test('the server runs int8 weights with precision int8 and answers as the int8 network', async (t) => {
  const { path, model, quantization } = await quantizedFile('serve.safetensors');
  const server = createServer({ weights: path, precision: 'int8', backend: 'cpu', resize: 36, crop: 32, prepareBatches: [1], logLevel: 'silent' });
  t.teardown(() => server.close());
  t.like(await server.modelLoaded, { backend: 'cpu', precision: 'int8' });
  const x = randomImages([2, 3, 32, 32], makeRng(12));
  const response = await server.inject({
    method: 'POST', url: '/v2/models/repvgg/infer', headers: { 'content-type': 'application/json' },
    payload: JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: x.shape, data: Array.from(x.data) }] }),
  });
  t.is(response.statusCode, 200, response.body);
  const network = int8Network(model, quantization);
  const expected = (await network.predict(x)).data;
  network.dispose();
  t.deepEqual(Float32Array.from(response.json().outputs[0].data as number[]), expected);
});

// ---------------------------------------------------------------------------------------------------------------
// The command line

function expectOk(t: ExecutionContext, r: CliResult): CliResult {
  t.is(r.code, 0, describe(r));
  return r;
}

function expectError(t: ExecutionContext, r: CliResult, code: 1 | 2, pattern: RegExp): void {
  t.is(r.code, code, describe(r));
  const lines = r.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('quantize: '));
  t.is(lines.length, 1, `one stderr line expected:\n${r.stderr}`);
  t.notRegex(r.stderr, /unexpected error|\n\s+at /);
  t.regex(lines[0] ?? '', pattern);
}

test('repvgg quantize, then infer/eval --precision int8 and export-onnx --int8, from safetensors, .pth and images', async (t) => {
  const spec = officialSpec('A0', { numClasses: 5 });
  const train = join(scratch, 'a0-train.safetensors');
  await saveWeights(train, spec, 'train', randomStateDict(spec, 'train', 4));
  const rng = makeRng(8);
  const calib = join(scratch, 'calib.npy');
  const images: HostTensor = randomImages([12, 3, 32, 32], rng);
  await writeNpy(calib, images.data, images.shape, 'calib');
  const out = join(scratch, 'a0-int8.safetensors');
  const quantized = expectOk(t, await cli(['quantize', '--weights', train, '--calib', calib, '--calib-count', '8', '--out', out]));
  t.regex(quantized.stdout, /\| stage1\.0 +\| int8 +\| +\d+\.\d \| +\d+\.\d \|/);
  t.regex(quantized.stdout, /logits SQNR \d+\.\d dB/);
  t.regex(quantized.stdout, new RegExp(`quantized RepVGG-A0: 21 of 22 layers int8 \\(${defaultWeightBits()}-bit weights\\), calibrated on 8 images`));
  // Not a terminal: progress as whole lines, at most one per tenth of the layers, ending with all of them.
  const progress = quantized.stderr.split('\n').filter((line) => line.startsWith('quantize: calibrated'));
  t.false(quantized.stderr.includes('\r'), 'no carriage returns in a log');
  t.true(progress.length >= 2 && progress.length <= 11, progress.join(' | '));
  t.is(progress.at(-1), 'quantize: calibrated 22/22 layers');
  const loaded = await loadWeights(out);
  t.is(loaded.metadata.quantization_weight_bits, String(defaultWeightBits()), "this CPU's default");
  t.is(loaded.metadata.quantization, 'int8');
  t.is(loaded.metadata.calibration_images, '8');
  t.regex(loaded.metadata.quantization_method ?? '', /bias correction/);
  t.is(JSON.parse(loaded.metadata.quantization_report ?? '{}').layers.length, 22);

  // infer --precision int8 runs exactly what the library runs with that file.
  const logitsPath = join(scratch, 'int8-logits.npy');
  const inferred = expectOk(t, await cli(['infer', '--weights', out, '--input', calib, '--output', logitsPath, '--precision', 'int8', '--backend', 'cpu']));
  t.regex(inferred.stdout, /cpu int8/);
  const network = RepVGGNetwork.fromStateDict(loaded.spec, loaded.state, { backend: 'cpu', precision: 'int8', quantization: loaded.quantization! });
  t.deepEqual((await readNpy(logitsPath, 'logits')).data, (await network.predict(images)).data);
  network.dispose();

  // --weight-bits 8 writes 8-bit weights; where the CPU lacks VNNI, infer runs them as 7-bit ones and says so.
  const out8 = join(scratch, 'a0-int8-8bit.safetensors');
  expectOk(t, await cli(['quantize', '--weights', train, '--calib', calib, '--calib-count', '8', '--weight-bits', '8', '--out', out8]));
  const loaded8 = await loadWeights(out8);
  t.is(loaded8.metadata.quantization_weight_bits, '8');
  const stage1 = loaded8.state.get('stage1.0.rbr_reparam.weight')!.data as Float32Array;
  t.true(maxIntegerWeight(stage1, loaded8.quantization!.get('stage1.0')!.weightScales) > 63, 'stage1.0 uses the 8-bit range');
  const inferred8 = expectOk(t, await cli(['infer', '--weights', out8, '--input', calib, '--output', join(scratch, 'int8-8bit.npy'), '--precision', 'int8', '--backend', 'cpu']));
  if (cpuCapabilities().int8Vnni) t.notRegex(inferred8.stderr, /REPVGG_INT8_WEIGHT_BITS/);
  else t.regex(inferred8.stderr, /\[REPVGG_INT8_WEIGHT_BITS\] Warning: this CPU \(\w+\) has no VNNI: .* 21 layers \(stage1\.0,/);
  const badBits = await cli(['quantize', '--weights', train, '--calib', calib, '--weight-bits', '6', '--out', join(scratch, 'never.safetensors')]);
  t.is(badBits.code, 2, describe(badBits));
  t.regex(badBits.stderr, /--weight-bits.*'6'/);

  // eval --precision int8 and fp32 of the same file; labels are arbitrary, only the run is checked.
  const labels = join(scratch, 'labels.npy');
  await writeNpy(labels, Int32Array.from({ length: 12 }, (_, i) => i % 5), [12], 'labels');
  t.regex(expectOk(t, await cli(['eval', '--weights', out, '--test-npy', `${calib},${labels}`, '--precision', 'int8', '--backend', 'cpu'])).stdout, /deploy form, int8\): accuracy/);

  // export-onnx --int8: onnxruntime runs the QDQ model.
  const onnxPath = join(scratch, 'a0-int8.onnx');
  t.regex(expectOk(t, await cli(['export-onnx', '--weights', out, '--int8', '--out', onnxPath])).stdout, /21 int8 \(QDQ\) layers/);
  const session = await InferenceSession.create(await readFile(onnxPath));
  const theirs = (await session.run({ input: new Tensor('float32', images.data, images.shape) })).logits!.data as Float32Array;
  await session.release();
  checkClose(t, 'CLI QDQ export vs infer --precision int8', theirs, (await readNpy(logitsPath, 'logits')).data as Float32Array, INT8_ONNX);

  // A torch.save checkpoint of the official code (10 classes) and an image folder of PNGs.
  const pth = join(scratch, 'a0_official_train.pth');
  await writeFile(pth, gunzipSync(await readFile(fixturePath('pth/a0_official_train.pth.gz'))));
  const folder = join(scratch, 'pngs');
  await rm(folder, { recursive: true, force: true });
  await mkdir(folder);
  for (let i = 0; i < 4; i++) await writeFile(join(folder, `${i}.png`), await randomPng(40 + i, 36, rng));
  const fromPth = join(scratch, 'pth-int8.safetensors');
  const pthRun = expectOk(t, await cli(['quantize', '--weights', pth, '--calib-dir', folder, '--crop', '32', '--keep', 'stage4.0', '--out', fromPth]));
  t.regex(pthRun.stdout, /\| stage4\.0 +\| fp32 /);
  t.regex(pthRun.stdout, /20 of 22 layers int8 \([78]-bit weights\), calibrated on 4 images/);
  t.regex(pthRun.stderr, /^quantize: decoded 4\/4 calibration images$/m);
  t.false(pthRun.stderr.includes('\r'), 'whole progress lines in a log');
  expectOk(t, await cli(['infer', '--weights', fromPth, '--images', folder, '--precision', 'int8', '--backend', 'cpu', '--resize', '36', '--crop', '32']));
});

test('repvgg quantize and --precision int8: bad input is one typed error line and writes nothing', async (t) => {
  const spec = officialSpec('A0', { numClasses: 5 });
  const train = join(scratch, 'bad-train.safetensors');
  await writeSafetensors(train, randomStateDict(spec, 'train', 6));
  const calib = join(scratch, 'bad-calib.npy');
  const images = randomImages([2, 3, 32, 32], makeRng(2));
  await writeNpy(calib, images.data, images.shape, 'calib');
  const out = join(scratch, 'never.safetensors');
  expectError(t, await cli(['quantize', '--weights', train, '--arch', 'A0', '--out', out]), 2, /exactly one of --calib x\.npy, --calib-dir DIR or --calib-dataset/);
  expectError(t, await cli(['quantize', '--weights', train, '--arch', 'A0', '--calib', calib, '--calib-dir', scratch, '--out', out]), 2, /exactly one of/);
  expectError(t, await cli(['quantize', '--weights', train, '--arch', 'A0', '--calib', calib, '--keep', 'stage7.1', '--out', out]), 1, /'stage7\.1'/);
  const gray = join(scratch, 'gray.npy');
  await writeNpy(gray, new Float32Array(2 * 32 * 32).fill(0.5), [2, 1, 32, 32], 'gray');
  expectError(t, await cli(['quantize', '--weights', train, '--arch', 'A0', '--calib', gray, '--out', out]), 1, /--calib of shape \[N, 3, H, W\].*\[2, 1, 32, 32\]/);
  expectError(t, await cli(['quantize', '--weights', train, '--arch', 'A0', '--calib', calib, '--calib-count', '0', '--out', out]), 2, /--calib-count/);
  expectError(t, await cli(['infer', '--weights', train, '--arch', 'A0', '--input', calib, '--output', out, '--precision', 'int8', '--backend', 'cpu']), 1, /training-time weights/);
  expectError(t, await cli(['export-onnx', '--weights', train, '--arch', 'A0', '--int8', '--out', out]), 1, /carries no int8 scales/);
  const int8 = join(scratch, 'bad-int8.safetensors');
  expectOk(t, await cli(['quantize', '--weights', train, '--arch', 'A0', '--calib', calib, '--out', int8]));
  expectError(t, await cli(['quantize', '--weights', int8, '--calib', calib, '--out', out]), 1, /already quantized/);
  await t.throwsAsync(readFile(out), { code: 'ENOENT' }, 'no output written by any failure');
});
