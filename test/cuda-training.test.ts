// Training on CUDA (lib/autograd/cuda-backend.ts over native/addon/cuda_training.cc). On a GPU: every op of the
// TrainBackend interface, forward and backward, against the CPU backend on the same random data (grouped and
// strided convolutions, batch norm, the element-wise ops, pooling, linear, SE's channel scale, the loss), and the
// fp16 (mixed precision) convolutions within their bound; the optimizer updates bit-identical to the CPU's; the
// PyTorch training fixtures reproduced on the GPU as on the CPU; several steps of an SE network (Nesterov, the
// custom L2, EMA) against the CPU, in fp32 and in mixed precision with a loss scale; `repvgg train --backend cuda`
// end to end, fp32 and fp16, with weights that evaluate the same on the CPU. Everywhere: without CUDA the backend
// and the CLI fail with the reason before doing anything; --precision fp16 needs --backend cuda.
// Not for: inference on CUDA (cuda.test.ts) or CPU training (train.test.ts).

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import test from 'ava';
import type { ExecutionContext } from 'ava';

import type { TrainBackend } from '../lib/autograd/backend.js';
import { cpuBackend } from '../lib/autograd/cpu-backend.js';
import * as F from '../lib/autograd/functions.js';
import { Tape } from '../lib/autograd/tape.js';
import { cudaBackend, type DeviceTensor } from '../lib/autograd/cuda-backend.js';
import { cudaStatus } from '../lib/backend/cuda.js';
import { ArgumentValueError, BackendError } from '../lib/errors.js';
import { writeNpy } from '../lib/io/npy.js';
import { customSpec } from '../lib/models/repvgg.js';
import type { HostTensor, StateDict } from '../lib/tensor.js';
import { readCheckpoint, latestCheckpoint } from '../lib/train/checkpoint.js';
import { WeightEma } from '../lib/train/ema.js';
import { DynamicLossScale } from '../lib/train/loss-scale.js';
import { TrainableRepVGG } from '../lib/train/model.js';
import { SGD, addCustomL2 } from '../lib/train/optimizer.js';
import { cli, describeResult } from './helpers/cli-runner.js';
import { fixtureStateDict } from './helpers/fixture-weights.js';
import { makeRng, maxRelativeError, randomArray, randomTrainState } from './helpers/reference.js';
import { BF16, CUDA_MIXED_STEPS, CUDA_MIXED_STEPS_ANY, CUDA_TRAIN_FP16_OP, CUDA_TRAIN_OP, CUDA_TRAIN_STEPS, TRAIN_STEPS, checkClose } from './helpers/tolerances.js';
import { TRAIN_FIXTURES, changeError, checkFixtureSteps, readTrainFixture, trainStep } from './helpers/train-fixture.js';

const execFileAsync = promisify(execFile);
const status = cudaStatus();
const gpu = status.available;
const shortReason = (status.reason ?? '').split(/[(:;]/)[0]?.trim().slice(0, 80) ?? '';
const gpuTest = gpu ? test.serial : test.skip;
const needsGpu = (title: string): string => (gpu ? title : `${title} [needs a CUDA GPU: ${shortReason}]`);

type Gpu = TrainBackend<DeviceTensor, DeviceTensor>;

const tensor = (shape: number[], seed: number, scale = 1, offset = 0): HostTensor => ({
  shape, data: randomArray(shape.reduce((p, d) => p * d, 1), makeRng(seed), scale).map((v) => v + offset),
});

/** The same host tensor on both backends. */
async function both(cuda: Gpu, t: HostTensor): Promise<[HostTensor, DeviceTensor]> {
  return [await cpuBackend.upload(t), await cuda.upload(t)];
}

/** Checks a CPU value against the CUDA one, both brought to plain NCHW. */
async function same(t: ExecutionContext, name: string, cuda: Gpu, cpu: HostTensor, gpuValue: DeviceTensor): Promise<void> {
  checkClose(t, name, (await cuda.download(gpuValue)).data, (await cpuBackend.download(cpu)).data, CUDA_TRAIN_OP);
}

/** Checks a CPU gradient of cpuLike against the CUDA gradient of gpuLike, both brought to plain NCHW. */
async function sameGradient(
  t: ExecutionContext, name: string, cuda: Gpu, cpu: Float32Array, gpuGrad: DeviceTensor, cpuLike: HostTensor, gpuLike: DeviceTensor,
): Promise<void> {
  checkClose(t, name, await cuda.downloadGradient(gpuGrad, gpuLike), await cpuBackend.downloadGradient(cpu, cpuLike), CUDA_TRAIN_OP);
}

/**
 * Asserts every tensor's change from `start` on the GPU is within `bound.each` of the CPU's and, with `bound.median`,
 * that the median tensor's is within that; logs the five worst and the median first (the measured errors the
 * tolerances are set from), and returns the worst error.
 */
async function checkChangesMatch(
  t: ExecutionContext, gpuModel: TrainableRepVGG<DeviceTensor, DeviceTensor>, cpuModel: TrainableRepVGG, start: StateDict,
  bound: { each: number; median?: number },
): Promise<number> {
  const cpuState = cpuModel.stateDict();
  const errors: [string, number][] = [];
  for (const [key, ours] of await gpuModel.hostStateDict()) errors.push([key, changeError(ours.data, cpuState.get(key)!.data, start.get(key)!.data)]);
  errors.sort((a, b) => b[1] - a[1]);
  const median = errors[Math.floor(errors.length / 2)]?.[1] ?? 0;
  t.log(`worst tensor changes vs the CPU: ${errors.slice(0, 5).map(([key, e]) => `${key} ${e.toExponential(2)}`).join(', ')}; median of ${errors.length} ${median.toExponential(2)}`);
  for (const [key, error] of errors) t.true(error <= bound.each, `${key}: change differs from the CPU's by ${error.toExponential(2)}`);
  if (bound.median !== undefined) t.true(median <= bound.median, `the median tensor's change differs from the CPU's by ${median.toExponential(2)}`);
  return errors[0]?.[1] ?? 0;
}

// ---------------------------------------------------------------------------------------------------------------
// Everywhere

(gpu ? test.skip : test)('without CUDA, the CUDA training backend is a BackendError carrying the reason', (t) => {
  const error = t.throws(() => cudaBackend(), { instanceOf: BackendError });
  t.is(error?.code, 'ERR_BACKEND_UNAVAILABLE');
  t.regex(error?.message ?? '', /CUDA/);
});

(gpu ? test.skip : test)('without CUDA, repvgg train --backend auto trains on the CPU', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'repvgg-auto-train-'));
  try {
    const x = join(dir, 'x.npy');
    const y = join(dir, 'y.npy');
    await writeNpy(x, tensor([8, 1, 16, 16], 130, 1).data, [8, 1, 16, 16]);
    await writeNpy(y, Int32Array.from({ length: 8 }, (_, i) => i % 2), [8]);
    const out = join(dir, 'auto.safetensors');
    const r = await cli(['train', '--train-npy', `${x},${y}`, '--arch', 'mini', '--batch-size', '4', '--epochs', '1', '--backend', 'auto', '--out', out]);
    t.is(r.code, 0, describeResult(r));
    t.notRegex(r.stderr, /on the GPU/);
    t.true(existsSync(out));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

(gpu ? test.skip : test)('without CUDA, repvgg train --backend cuda exits 1 with the reason before reading data or writing anything', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'repvgg-cuda-train-'));
  try {
    const out = join(dir, 'run');
    const r = await cli(['train', '--train-npy', `${join(dir, 'missing-x.npy')},${join(dir, 'missing-y.npy')}`, '--backend', 'cuda', '--out', out]);
    t.is(r.code, 1, describeResult(r));
    t.regex(r.stderr, /CUDA backend is unavailable/);
    t.notRegex(r.stderr, /missing-x/, 'CUDA is checked before the data is read');
    t.false(existsSync(out));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('repvgg train --precision fp16 or bf16 needs --backend cuda (exit 2 naming both)', async (t) => {
  for (const precision of ['fp16', 'bf16']) {
    const r = await cli(['train', '--dataset', 'fashion-mnist', '--precision', precision, '--backend', 'cpu', '--out', join(tmpdir(), 'never-written')]);
    t.is(r.code, 2, describeResult(r));
    t.regex(r.stderr, new RegExp(`--backend cuda with --precision ${precision}`));
  }
});

// ---------------------------------------------------------------------------------------------------------------
// On a GPU: op by op against the CPU backend

gpuTest(needsGpu('conv2d forward and backward (3x3 and 1x1, stride 1 and 2, groups 1, 2 and 4) match the CPU backend'), async (t) => {
  const cuda = cudaBackend();
  for (const [k, stride, groups, pad] of [[3, 1, 1, 1], [3, 2, 2, 1], [1, 2, 4, 0], [1, 1, 1, 0]] as const) {
    const label = `k${k} s${stride} g${groups}`;
    const [xc, xg] = await both(cuda, tensor([3, 8, 9, 11], 1 + k + stride + groups));
    const [wc, wg] = await both(cuda, tensor([16, 8 / groups, k, k], 20 + groups, 0.3));
    const o = { stride, pad, groups };
    const yc = await cpuBackend.conv2d(xc, wc, o);
    const yg = await cuda.conv2d(xg, wg, o);
    await same(t, `${label} y`, cuda, yc, yg);
    const dy = tensor([...yc.shape], 40 + k);
    const gc = await cpuBackend.conv2dBackward(xc, wc, yc, await cpuBackend.uploadGradient(dy, yc), { ...o, needInputGrad: true });
    const gg = await cuda.conv2dBackward(xg, wg, yg, await cuda.uploadGradient(dy, yg), { ...o, needInputGrad: true });
    await sameGradient(t, `${label} dx`, cuda, gc.dx!, gg.dx!, xc, xg);
    await sameGradient(t, `${label} dweight`, cuda, gc.dweight, gg.dweight, wc, wg);
    const noDx = await cuda.conv2dBackward(xg, wg, yg, await cuda.uploadGradient(dy, yg), { ...o, needInputGrad: false });
    t.is(noDx.dx, undefined);
    await sameGradient(t, `${label} dweight without dx`, cuda, gc.dweight, noDx.dweight, wc, wg);
  }
});

gpuTest(needsGpu('mixed precision: fp16 convolutions (tensor cores) forward and backward stay within CUDA_TRAIN_FP16_OP of the CPU'), async (t) => {
  const cuda = cudaBackend({ precision: 'fp16' });
  t.is(cuda.precision, 'fp16');
  for (const [k, stride, groups, pad] of [[3, 1, 1, 1], [3, 2, 2, 1], [1, 1, 1, 0]] as const) {
    const label = `fp16 k${k} s${stride} g${groups}`;
    const [xc, xg] = await both(cuda, tensor([4, 16, 10, 10], 200 + k + stride + groups));
    const [wc, wg] = await both(cuda, tensor([32, 16 / groups, k, k], 210 + groups, 0.3));
    const o = { stride, pad, groups };
    const yc = await cpuBackend.conv2d(xc, wc, o);
    const yg = await cuda.conv2d(xg, wg, o);
    checkClose(t, `${label} y`, (await cuda.download(yg)).data, (await cpuBackend.download(yc)).data, CUDA_TRAIN_FP16_OP);
    const dy = tensor([...yc.shape], 220 + k);
    const gc = await cpuBackend.conv2dBackward(xc, wc, yc, await cpuBackend.uploadGradient(dy, yc), { ...o, needInputGrad: true });
    const gg = await cuda.conv2dBackward(xg, wg, yg, await cuda.uploadGradient(dy, yg), { ...o, needInputGrad: true });
    checkClose(t, `${label} dx`, await cuda.downloadGradient(gg.dx!, xg), await cpuBackend.downloadGradient(gc.dx!, xc), CUDA_TRAIN_FP16_OP);
    checkClose(t, `${label} dweight`, await cuda.downloadGradient(gg.dweight, wg), await cpuBackend.downloadGradient(gc.dweight, wc), CUDA_TRAIN_FP16_OP);
    // Not vacuous: half rounding is visible.
    t.true(maxRelativeError((await cuda.download(yg)).data, (await cpuBackend.download(yc)).data) > 1e-6, `${label}: the convolution did run in half`);
  }
});

const ampere = gpu && Number(status.details['computeCapability']?.split('.')[0]) >= 8;

(ampere ? test.serial : test.skip)(needsGpu('mixed precision bf16 (compute capability 8.0+): convolutions forward and backward within BF16 of the CPU'), async (t) => {
  const cuda = cudaBackend({ precision: 'bf16' });
  const [xc, xg] = await both(cuda, tensor([4, 16, 10, 10], 230));
  const [wc, wg] = await both(cuda, tensor([32, 8, 3, 3], 231, 0.3));
  const o = { stride: 2, pad: 1, groups: 2 };
  const yc = await cpuBackend.conv2d(xc, wc, o);
  const yg = await cuda.conv2d(xg, wg, o);
  checkClose(t, 'bf16 y', (await cuda.download(yg)).data, (await cpuBackend.download(yc)).data, BF16);
  const dy = tensor([...yc.shape], 232);
  const gc = await cpuBackend.conv2dBackward(xc, wc, yc, await cpuBackend.uploadGradient(dy, yc), { ...o, needInputGrad: true });
  const gg = await cuda.conv2dBackward(xg, wg, yg, await cuda.uploadGradient(dy, yg), { ...o, needInputGrad: true });
  checkClose(t, 'bf16 dx', await cuda.downloadGradient(gg.dx!, xg), await cpuBackend.downloadGradient(gc.dx!, xc), BF16);
  checkClose(t, 'bf16 dweight', await cuda.downloadGradient(gg.dweight, wg), await cpuBackend.downloadGradient(gc.dweight, wc), BF16);
});

(gpu && !ampere ? test : test.skip)(needsGpu('bf16 before compute capability 8.0 is an ArgumentValueError naming the GPU and fp16'), async (t) => {
  const cuda = cudaBackend({ precision: 'bf16' });
  const x = await cuda.upload(tensor([1, 4, 6, 6], 240));
  const w = await cuda.upload(tensor([4, 4, 3, 3], 241));
  await t.throwsAsync(() => cuda.conv2d(x, w, { stride: 1, pad: 1, groups: 1 }), { instanceOf: ArgumentValueError, message: /compute capability 8\.0.*use fp16/ });
});

gpuTest(needsGpu('batch norm (training mode, forward and backward, running statistics) matches the CPU backend; the running statistics bit for bit'), async (t) => {
  const cuda = cudaBackend();
  // The second shape's channels are each reduced by 3 blocks whose spans start inside an image plane
  // (native/cuda/train_kernels.cu: one block per 4096 values, at most ~1024 blocks in all).
  for (const shape of [[4, 6, 5, 7], [16, 3, 31, 33]]) {
    const channels = shape[1]!;
    const label = `bn ${shape.join('x')}`;
    const [xc, xg] = await both(cuda, tensor(shape, 50 + shape[0]!, 2, 0.5));
    const [gammac, gammag] = await both(cuda, tensor([channels], 51, 0.3, 1));
    const [betac, betag] = await both(cuda, tensor([channels], 52, 0.3));
    const c = await cpuBackend.batchNormTrain(xc, gammac, betac, 1e-5);
    const g = await cuda.batchNormTrain(xg, gammag, betag, 1e-5);
    await same(t, `${label} y`, cuda, c.y, g.y);
    await same(t, `${label} mean`, cuda, c.mean, g.mean);
    await same(t, `${label} variance`, cuda, c.variance, g.variance);
    const dy = tensor(shape, 53);
    const gc = await cpuBackend.batchNormBackward(xc, c.y, await cpuBackend.uploadGradient(dy, c.y), gammac, c.mean, c.variance, 1e-5);
    const gg = await cuda.batchNormBackward(xg, g.y, await cuda.uploadGradient(dy, g.y), gammag, g.mean, g.variance, 1e-5);
    await sameGradient(t, `${label} dx`, cuda, gc.dx, gg.dx, xc, xg);
    await sameGradient(t, `${label} dgamma`, cuda, gc.dgamma, gg.dgamma, gammac, gammag);
    await sameGradient(t, `${label} dbeta`, cuda, gc.dbeta, gg.dbeta, betac, betag);
  }
  // The running statistics update is double arithmetic with one rounding per store on both: given the same batch
  // statistics (the CPU's, uploaded), the results are identical.
  const c = await cpuBackend.batchNormTrain(
    await cpuBackend.upload(tensor([4, 6, 5, 7], 50, 2, 0.5)), await cpuBackend.upload(tensor([6], 51, 0.3, 1)), await cpuBackend.upload(tensor([6], 52, 0.3)), 1e-5,
  );
  const [rmc, rmg] = await both(cuda, tensor([6], 54, 0.2));
  const [rvc, rvg] = await both(cuda, tensor([6], 55, 0.2, 1));
  await cpuBackend.updateRunningStats(rmc, rvc, c.mean, c.variance, 4 * 5 * 7, 0.1);
  await cuda.updateRunningStats(rmg, rvg, await cuda.upload(c.mean), await cuda.upload(c.variance), 4 * 5 * 7, 0.1);
  t.deepEqual(Array.from((await cuda.download(rmg)).data), Array.from(rmc.data), 'running mean');
  t.deepEqual(Array.from((await cuda.download(rvg)).data), Array.from(rvc.data), 'running variance');
});

gpuTest(needsGpu('ops do not wait for the GPU: inputs disposed right after the call, their memory reused at once, still give the values they were called with'), async (t) => {
  const cuda = cudaBackend();
  const o = { stride: 1, pad: 1, groups: 1 };
  const expected: HostTensor[] = [];
  const results: DeviceTensor[] = [];
  for (let i = 0; i < 20; i++) {
    const x = tensor([2, 8, 12, 12], 300 + i);
    const w = tensor([8, 8, 3, 3], 320 + i, 0.3);
    const xg = await cuda.upload(x);
    const wg = await cuda.upload(w);
    const yg = await cuda.conv2d(xg, wg, o);
    const zg = await cuda.relu(yg);
    // Freed (stream-ordered) once the ops above are enqueued; the next uploads may get their memory.
    cuda.releaseValue(xg);
    cuda.releaseValue(wg);
    cuda.releaseValue(yg);
    results.push(zg);
    expected.push(await cpuBackend.relu(await cpuBackend.conv2d(await cpuBackend.upload(x), await cpuBackend.upload(w), o)));
  }
  for (let i = 0; i < results.length; i++) await same(t, `conv + relu ${i}`, cuda, expected[i]!, results[i]!);
});

gpuTest(needsGpu('an op that fails when enqueued is reported, naming it, by the next awaited call; the ops after it are skipped, then work resumes'), async (t) => {
  // REPVGG_CUDA_FAIL_OP makes one op's enqueue throw (the context reads it once, so it runs in a child process).
  const backendUrl = new URL('../lib/autograd/cuda-backend.js', import.meta.url).href;
  const script = `
    const { cudaBackend } = await import(${JSON.stringify(backendUrl)});
    const cuda = cudaBackend();
    const a = await cuda.upload({ shape: [4], data: Float32Array.of(-1, 2, -3, 4) });
    const kept = await cuda.upload({ shape: [4], data: Float32Array.of(7, 7, 7, 7) });
    const r = await cuda.relu(a);           // fails when enqueued (REPVGG_CUDA_FAIL_OP=relu)
    await cuda.scaleGradient(kept, 2);      // skipped: kept stays 7
    const out = {};
    try { await cuda.download(r); out.first = 'resolved'; } catch (e) { out.first = e.constructor.name + ': ' + e.message; }
    out.kept = Array.from((await cuda.download(kept)).data);
    await cuda.scaleGradient(kept, 2);      // runs: the failure was reported
    out.after = Array.from((await cuda.download(kept)).data);
    const s = await cuda.add(a, a, false);
    out.sum = Array.from((await cuda.download(s)).data);
    console.log(JSON.stringify(out));
  `;
  const { stdout } = await execFileAsync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, REPVGG_CUDA_FAIL_OP: 'relu' } });
  const out = JSON.parse(stdout.trim().split('\n').pop()!) as { first: string; kept: number[]; after: number[]; sum: number[] };
  t.regex(out.first, /^BackendError: .*relu: .*REPVGG_CUDA_FAIL_OP=relu/);
  t.deepEqual(out.kept, [7, 7, 7, 7], 'the op after the failed one did not run');
  t.deepEqual(out.after, [14, 14, 14, 14], 'ops run again once the failure was reported');
  t.deepEqual(out.sum, [-2, 4, -6, 8]);
});

gpuTest(needsGpu('relu, sigmoid, add(+relu), global average pooling, linear and channel scale forward and backward match the CPU backend'), async (t) => {
  const cuda = cudaBackend();
  const shape = [3, 5, 4, 6];
  const [ac, ag] = await both(cuda, tensor(shape, 60));
  const [bc, bg] = await both(cuda, tensor(shape, 61));
  const dy = tensor(shape, 62);
  for (const relu of [false, true]) {
    const yc = await cpuBackend.add(ac, bc, relu);
    const yg = await cuda.add(ag, bg, relu);
    await same(t, `add relu=${relu}`, cuda, yc, yg);
  }
  const rc = await cpuBackend.relu(ac);
  const rg = await cuda.relu(ag);
  await same(t, 'relu', cuda, rc, rg);
  await sameGradient(t, 'relu backward', cuda, await cpuBackend.reluBackward(rc, await cpuBackend.uploadGradient(dy, rc)), await cuda.reluBackward(rg, await cuda.uploadGradient(dy, rg)), ac, ag);
  const sc = await cpuBackend.sigmoid(ac);
  const sg = await cuda.sigmoid(ag);
  await same(t, 'sigmoid', cuda, sc, sg);
  await sameGradient(t, 'sigmoid backward', cuda, await cpuBackend.sigmoidBackward(sc, await cpuBackend.uploadGradient(dy, sc)), await cuda.sigmoidBackward(sg, await cuda.uploadGradient(dy, sg)), ac, ag);
  const pc = await cpuBackend.globalAvgPool(ac);
  const pg = await cuda.globalAvgPool(ag);
  await same(t, 'global average pool', cuda, pc, pg);
  const dp = tensor([3, 5], 63);
  await sameGradient(t, 'global average pool backward', cuda, await cpuBackend.globalAvgPoolBackward(ac, pc, dp.data), await cuda.globalAvgPoolBackward(ag, pg, await cuda.uploadGradient(dp, pg)), ac, ag);
  const [wc, wg] = await both(cuda, tensor([7, 5], 64, 0.5));
  const [biasc, biasg] = await both(cuda, tensor([7], 65, 0.1));
  const lc = await cpuBackend.linear(pc, wc, biasc);
  const lg = await cuda.linear(pg, wg, biasg);
  await same(t, 'linear', cuda, lc, lg);
  const dl = tensor([3, 7], 66);
  const glc = await cpuBackend.linearBackward(pc, wc, lc, dl.data, true);
  const glg = await cuda.linearBackward(pg, wg, lg, await cuda.uploadGradient(dl, lg), true);
  await sameGradient(t, 'linear dx', cuda, glc.dx!, glg.dx!, pc, pg);
  await sameGradient(t, 'linear dweight', cuda, glc.dweight, glg.dweight, wc, wg);
  await sameGradient(t, 'linear dbias', cuda, glc.dbias, glg.dbias, biasc, biasg);
  const [gatec, gateg] = await both(cuda, tensor([3, 5], 67, 0.5, 0.5));
  const cc = await cpuBackend.channelScale(ac, gatec);
  const cg = await cuda.channelScale(ag, gateg);
  await same(t, 'channel scale', cuda, cc, cg);
  const gcc = await cpuBackend.channelScaleBackward(ac, gatec, cc, await cpuBackend.uploadGradient(dy, cc));
  const gcg = await cuda.channelScaleBackward(ag, gateg, cg, await cuda.uploadGradient(dy, cg));
  await sameGradient(t, 'channel scale dx', cuda, gcc.dx, gcg.dx, ac, ag);
  await sameGradient(t, 'channel scale dscale', cuda, gcc.dscale, gcg.dscale, gatec, gateg);
});

gpuTest(needsGpu('softmax cross-entropy with label smoothing: the loss and its gradient match the CPU backend'), async (t) => {
  const cuda = cudaBackend();
  const [lc, lg] = await both(cuda, tensor([9, 10], 70, 3));
  const labels = Int32Array.from({ length: 9 }, (_, i) => (i * 7) % 10);
  for (const smoothing of [0, 0.1]) {
    const c = await cpuBackend.softmaxCrossEntropy(lc, labels, smoothing);
    const g = await cuda.softmaxCrossEntropy(lg, labels, smoothing);
    t.true(Math.abs(c.loss - g.loss) <= CUDA_TRAIN_OP * Math.abs(c.loss), `loss ${g.loss} vs ${c.loss}`);
    await sameGradient(t, `dlogits smoothing ${smoothing}`, cuda, c.dlogits, g.dlogits, lc, lg);
  }
  await t.throwsAsync(() => cuda.softmaxCrossEntropy(lg, Int32Array.from({ length: 9 }, () => 10), 0), { instanceOf: ArgumentValueError, message: /labels\[0\] = 10/ });
});

gpuTest(needsGpu('SGD (momentum, Nesterov, weight decay), EMA and the custom L2 gradients are bit-identical to the CPU backend'), async (t) => {
  const cuda = cudaBackend();
  for (const nesterov of [false, true]) {
    const [wc, wg] = await both(cuda, tensor([5000], 80));
    const bufc = cpuBackend.zeros([5000]);
    const bufg = cuda.zeros([5000]);
    for (let step = 0; step < 3; step++) {
      const g = tensor([5000], 82 + step);
      await cpuBackend.sgdStep([{ weight: wc, grad: g.data, momentumBuffer: bufc, weightDecay: 1e-4, first: step === 0 }], 0.05, 0.9, nesterov);
      await cuda.sgdStep([{ weight: wg, grad: await cuda.uploadGradient(g, wg), momentumBuffer: bufg, weightDecay: 1e-4, first: step === 0 }], 0.05, 0.9, nesterov);
    }
    t.deepEqual(Array.from((await cuda.download(wg)).data), Array.from(wc.data), `weights, nesterov ${nesterov}`);
    t.deepEqual(Array.from((await cuda.download(bufg)).data), Array.from(bufc.data), `momentum, nesterov ${nesterov}`);
  }
  const [sc, sg] = await both(cuda, tensor([3000], 90));
  const [cc, cg] = await both(cuda, tensor([3000], 91));
  await cpuBackend.emaUpdate([sc], [cc], 0.9997);
  await cuda.emaUpdate([sg], [cg], 0.9997);
  t.deepEqual(Array.from((await cuda.download(sg)).data), Array.from(sc.data), 'EMA');

  const spec = customSpec({ numClasses: 3, stemChannels: 8, stemStride: 1, stageChannels: [8, 16, 16, 32], stageDepths: [2, 1, 2, 1], stageStrides: [1, 2, 1, 2], groups: 2 });
  const state = randomTrainState(spec, makeRng(92));
  const onCpu = TrainableRepVGG.fromStateDict(spec, state);
  const onGpu = await TrainableRepVGG.onBackend(cuda, spec, state);
  const lossCpu = await addCustomL2(spec, onCpu.params, onCpu.buffers, 1e-4);
  const lossGpu = await addCustomL2(spec, onGpu.params, onGpu.buffers, 1e-4, cuda);
  t.true(Math.abs(lossCpu - lossGpu) <= 1e-12 * Math.abs(lossCpu), `custom L2 value ${lossGpu} vs ${lossCpu}`);
  for (const [key, p] of onCpu.params) {
    if (p.grad === undefined) continue;
    const ours = await cuda.downloadGradient(onGpu.params.get(key)!.grad!, onGpu.params.get(key)!.value);
    t.deepEqual(Array.from(ours), Array.from(p.grad), `${key}: custom L2 gradient`);
  }
});

// ---------------------------------------------------------------------------------------------------------------
// On a GPU: whole training steps

for (const name of TRAIN_FIXTURES) {
  gpuTest(needsGpu(`${name}: three SGD steps of a tiny network on CUDA reproduce PyTorch as the CPU does`), async (t) => {
    const fx = await readTrainFixture(name);
    const model = await TrainableRepVGG.onBackend(cudaBackend(), fx.spec, fixtureStateDict(fx.spec));
    t.log(await checkFixtureSteps(t, name, fx, model, TRAIN_STEPS));
  });
}

/**
 * The same random grouped SE network (seeded) twice, on the CPU and on `cuda`, each with its SGD: the two sides of
 * the step-by-step comparisons below.
 */
async function cpuAndGpuSeNetworks(cuda: ReturnType<typeof cudaBackend>, seed: number, options: { momentum: number; nesterov: boolean; weightDecay: number; customL2: boolean }) {
  const spec = customSpec({ numClasses: 4, stemChannels: 8, stemStride: 1, stageChannels: [8, 16, 16, 24], stageDepths: [2, 1, 2, 1], stageStrides: [1, 2, 1, 2], groups: 2, seReduction: 4 });
  const state = randomTrainState(spec, makeRng(seed));
  const cpuModel = TrainableRepVGG.fromStateDict(spec, state);
  const gpuModel = await TrainableRepVGG.onBackend(cuda, spec, state);
  return { state, cpuModel, gpuModel, cpuSgd: new SGD(cpuModel.params, options), gpuSgd: new SGD(gpuModel.params, options, cuda) };
}

gpuTest(needsGpu('five steps of an SE network (Nesterov, custom L2, EMA, label smoothing) on CUDA match the CPU'), async (t) => {
  const cuda = cudaBackend();
  const { state, cpuModel, gpuModel, cpuSgd, gpuSgd } = await cpuAndGpuSeNetworks(cuda, 100, { momentum: 0.9, nesterov: true, weightDecay: 1e-4, customL2: true });
  const cpuEma = new WeightEma(cpuModel.stateDict(), 0.9);
  const gpuEma = await WeightEma.onBackend(cuda, gpuModel.values(), 0.9);
  const recipe = { lr: 0.05, labelSmoothing: 0.1, customL2: true, weightDecay: 1e-4 };
  for (let step = 0; step < 5; step++) {
    const images = tensor([6, 3, 16, 16], 110 + step, 1);
    const labels = Int32Array.from({ length: 6 }, (_, i) => (i + step) % 4);
    const c = await trainStep(cpuModel, cpuSgd, images, labels, recipe);
    const g = await trainStep(gpuModel, gpuSgd, images, labels, recipe);
    t.true(Math.abs(c.ce - g.ce) <= CUDA_TRAIN_STEPS * Math.abs(c.ce), `step ${step}: loss ${g.ce} vs ${c.ce}`);
    await cpuEma.update(cpuModel.values());
    await gpuEma.update(gpuModel.values());
  }
  await checkChangesMatch(t, gpuModel, cpuModel, state, { each: CUDA_TRAIN_STEPS });
  const emaCpu = await cpuEma.hostState();
  const emaGpu = await gpuEma.hostState();
  for (const [key, ours] of emaGpu) checkClose(t, `${key}: EMA`, ours.data, emaCpu.get(key)!.data, CUDA_TRAIN_STEPS);
});

gpuTest(needsGpu('five mixed-precision steps (fp16 convolutions, loss scale 2^10) of an SE network match the CPU in fp32: the median tensor within CUDA_MIXED_STEPS, every one within CUDA_MIXED_STEPS_ANY'), async (t) => {
  const cuda = cudaBackend({ precision: 'fp16' });
  const { state, cpuModel, gpuModel, cpuSgd, gpuSgd } = await cpuAndGpuSeNetworks(cuda, 300, { momentum: 0.9, nesterov: true, weightDecay: 1e-4, customL2: false });
  const lossScale = new DynamicLossScale({ initialScale: 2 ** 10 });
  for (let step = 0; step < 5; step++) {
    const images = tensor([6, 3, 16, 16], 310 + step, 1);
    const labels = Int32Array.from({ length: 6 }, (_, i) => (i + step) % 4);
    await trainStep(cpuModel, cpuSgd, images, labels, { lr: 0.05, labelSmoothing: 0.1, customL2: false, weightDecay: 1e-4 });
    const tape = new Tape(cuda);
    gpuSgd.zeroGrad();
    const logits = await gpuModel.forward(tape, images);
    const { loss } = await F.softmaxCrossEntropy(tape, logits, labels, 0.1);
    await tape.backward(loss, lossScale.seed());
    t.true(await lossScale.unscale(cuda, gpuModel.params), `step ${step}: no overflow at scale ${lossScale.scale}`);
    await gpuSgd.step(0.05);
    tape.recycle();
  }
  await checkChangesMatch(t, gpuModel, cpuModel, state, { each: CUDA_MIXED_STEPS_ANY, median: CUDA_MIXED_STEPS });
});

gpuTest(needsGpu('repvgg train --backend cuda learns; its weights evaluate the same on the CPU and its checkpoint holds every momentum buffer'), async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'repvgg-cuda-train-'));
  try {
    const x = join(dir, 'x.npy');
    const y = join(dir, 'y.npy');
    const images = tensor([48, 1, 16, 16], 120, 1);
    const labels = Int32Array.from({ length: 48 }, (_, i) => i % 3);
    for (let i = 0; i < 48; i++) for (let p = 0; p < 256; p++) images.data[i * 256 + p]! += 2 * ((labels[i] as number) - 1); // separable by brightness
    await writeNpy(x, images.data, images.shape);
    await writeNpy(y, labels, [48]);
    const run = join(dir, 'run');
    const trained = await cli(['train', '--train-npy', `${x},${y}`, '--test-npy', `${x},${y}`, '--arch', 'mini', '--batch-size', '8', '--epochs', '3',
      '--lr', '0.05', '--backend', 'cuda', '--out', run]);
    t.is(trained.code, 0, describeResult(trained));
    t.regex(trained.stderr, /training steps on the GPU/);
    const summary = JSON.parse(await readFile(join(run, 'summary.json'), 'utf8')) as Record<string, number>;
    t.true(summary.test_accuracy! >= 0.9, `learns the separable set on the GPU: ${summary.test_accuracy}`);
    const evaluated = await cli(['eval', '--weights', join(run, 'train.safetensors'), '--test-npy', `${x},${y}`, '--backend', 'cpu']);
    t.is(evaluated.code, 0, describeResult(evaluated));
    const accuracy = Number(/accuracy ([\d.]+)%/.exec(evaluated.stdout)?.[1]) / 100;
    t.true(Math.abs(accuracy - summary.test_accuracy!) <= 1 / 48, `CPU evaluation ${accuracy} vs the run's ${summary.test_accuracy}`);
    const mixed = await cli(['train', '--train-npy', `${x},${y}`, '--test-npy', `${x},${y}`, '--arch', 'mini', '--batch-size', '8', '--epochs', '3',
      '--lr', '0.05', '--backend', 'cuda', '--precision', 'fp16', '--out', join(dir, 'mixed.safetensors')]);
    t.is(mixed.code, 0, describeResult(mixed));
    t.regex(mixed.stderr, /mixed precision/);
    t.regex(mixed.stdout, /\| training-time \| (9\d|100)\.\d\d%/, 'mixed precision learns the separable set too');
    const auto = await cli(['train', '--train-npy', `${x},${y}`, '--arch', 'mini', '--batch-size', '8', '--epochs', '1',
      '--lr', '0.05', '--backend', 'auto', '--out', join(dir, 'auto.safetensors')]);
    t.is(auto.code, 0, describeResult(auto));
    t.regex(auto.stderr, /training steps on the GPU/, "--backend auto trains on CUDA where it runs");
    const checkpoint = await readCheckpoint((await latestCheckpoint(run))!);
    const weights = checkpoint.weights;
    t.true(checkpoint.momentum.size > 0);
    for (const [key, buffer] of checkpoint.momentum) t.is(buffer.length, weights.get(key)!.data.length, `${key}: momentum buffer size`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
