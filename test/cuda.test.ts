// The CUDA backend. Everywhere: what cudaStatus() and the addon report without a GPU, the cuDNN search order,
// clean errors, and how RepVGGNetwork picks or refuses the cuda backend. On a GPU: the model-level checks of the
// CPU suite (test/models.test.ts) run through RepVGGNetwork with backend 'cuda' — golden PyTorch fixtures,
// training-time vs deployed forms, grouped and SE networks against the CPU backend and the float64 reference, fp16,
// CUDA graphs on and off, maxBatch chunks, bad input and dispose() — plus the addon's own Program contract that
// bench/cuda.ts relies on (run() argument checks, benchmark()).
// Not for: the CPU backend's own tests (test/models.test.ts) or performance (bench/cuda.ts, bench/device/run.sh).
//
// GPU tests are registered with test.skip where CUDA is unavailable (their titles then say "needs a CUDA GPU"
// and why), and the first test below logs the full reason.

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { cudaAddonPath, cudaStatus, cudnnSearchDirs, loadCudaAddon } from '../lib/backend/cuda.js';
import type { CudaAddon, CudaPlanReport } from '../lib/backend/cuda.js';
import { RepVGGNetwork, deployedProgram } from '../lib/engine.js';
import type { NetworkOptions } from '../lib/engine.js';
import { ArgumentTypeError, ArgumentValueError, BackendError, DisposedError, ShapeError } from '../lib/errors.js';
import type { RepvggError } from '../lib/errors.js';
import { readNpy } from '../lib/io/npy.js';
import { customSpec, featureChannels, officialSpec } from '../lib/models/repvgg.js';
import type { RepVGGSpec } from '../lib/models/repvgg.js';
import { deployedStateDict, reparameterize } from '../lib/reparam/reparam.js';
import type { DeployedModel } from '../lib/reparam/types.js';
import type { HostTensor, StateDict } from '../lib/tensor.js';
import { fixturePath, fixtureSpec, fixtureStateDict, readFixtureJson } from './helpers/fixture-weights.js';
import { makeRng, maxRelativeError, modelDeployRef, modelTrainRef, randomArray, randomTrainState } from './helpers/reference.js';
import { FP16, MODEL_FP32, checkClose, checkTop1Agreement } from './helpers/tolerances.js';

const execFileAsync = promisify(execFile);
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
// Helpers

/** Options of a CUDA network (the backend is set by the helpers). */
type CudaOptions = Omit<NetworkOptions, 'backend'>;
/** Makes a network of fixed weights on the backend and options given. */
type MakeNetwork = (options: NetworkOptions) => RepVGGNetwork;

const fromDeployed = (model: DeployedModel): MakeNetwork => (options) => RepVGGNetwork.fromDeployed(model, options);
const fromState = (spec: RepVGGSpec, state: StateDict): MakeNetwork => (options) => RepVGGNetwork.fromStateDict(spec, state, options);

function randomInput(shape: readonly [number, number, number, number], seed: number): HostTensor {
  return { shape: [...shape], data: randomArray(shape.reduce((p, d) => p * d, 1), makeRng(seed), 1) };
}

/** Runs fn with a network and disposes it whatever happens. */
async function withNetwork<T>(make: () => RepVGGNetwork, fn: (net: RepVGGNetwork) => Promise<T> | T): Promise<T> {
  const net = make();
  try {
    return await fn(net);
  } finally {
    net.dispose();
  }
}

/** Logits of x on a fresh CUDA network (checked to run on CUDA, in the precision asked for), disposed afterwards. */
async function cudaLogits(t: ExecutionContext, make: MakeNetwork, x: HostTensor, options: CudaOptions = {}): Promise<Float32Array> {
  return withNetwork(() => make({ ...options, backend: 'cuda' }), async (net) => {
    t.is(net.backend, 'cuda');
    t.is(net.precision, options.precision ?? 'fp32');
    const logits = await net.predict(x);
    t.deepEqual(logits.shape, [x.shape[0], net.spec.numClasses]);
    return logits.data;
  });
}

/** Logits of x on a fresh CPU (oneDNN, fp32, direct convs: no plan measuring) network of the same weights. */
async function cpuLogits(make: MakeNetwork, x: HostTensor): Promise<Float32Array> {
  return withNetwork(() => make({ backend: 'cpu', convAlgorithm: 'direct' }), async (net) => (await net.predict(x)).data);
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

/** The addon's Program spec for a deployed model, assembled as RepVGGNetwork does it (steps from lib/engine.ts). */
function addonSpec(model: DeployedModel, overrides: object = {}): object {
  const program = deployedProgram(model);
  const { spec } = model;
  return {
    precision: 'fp32', convAlgorithm: 'auto', cudaGraph: false, inChannels: spec.inChannels, numBuffers: program.numBuffers, steps: program.steps,
    head: { src: program.headSrc, features: featureChannels(spec), classes: spec.numClasses, weight: model.linearWeight, bias: model.linearBias },
    ...overrides,
  };
}

function requireAddon(): CudaAddon {
  if (!load.addon) throw new Error(`test setup: no CUDA addon: ${load.reason}`);
  return load.addon;
}

/** Small enough for the float64 reference to run in well under a second, with identity branches, strides 1/2 and groups. */
const tinyOptions = {
  inChannels: 3, numClasses: 5, stemChannels: 8, stemStride: 1,
  stageChannels: [8, 16, 16, 32], stageDepths: [2, 1, 2, 1], stageStrides: [1, 2, 1, 2], groups: 2,
};
const tinySpec = customSpec(tinyOptions);
const tinySeSpec = customSpec({ ...tinyOptions, stemStride: 2, stageStrides: [1, 2, 1, 1], seReduction: 2 });
const a0Spec = officialSpec('A0', { numClasses: 10 });

// ---------------------------------------------------------------------------------------------------------------
// Everywhere: status, search list, clean errors, backend choice

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
  const info = requireAddon().info();
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

(load.addon && !gpu ? test : test.skip)("the addon's Program constructor, where CUDA is unavailable, is a clean ERR_BACKEND_UNAVAILABLE error", (t) => {
  const addon = requireAddon();
  const model = reparameterize(tinySpec, randomTrainState(tinySpec, makeRng(1)));
  const error = t.throws(() => new addon.Program(addonSpec(model)));
  t.regex(error?.message ?? '', /^ERR_BACKEND_UNAVAILABLE: the CUDA backend is unavailable: .{20,}/);
});

(load.addon ? test : test.skip)('the addon rejects a bad spec with typed errors before touching the GPU', (t) => {
  const addon = requireAddon();
  const model = reparameterize(tinySpec, randomTrainState(tinySpec, makeRng(2)));
  const base = deployedProgram(model);
  const good = addonSpec(model) as { head: object };
  const bad = (overrides: object): string => t.throws(() => new addon.Program(addonSpec(model, overrides)))?.message ?? '';
  t.regex(bad({ precision: 'bf16' }), /^ERR_ARG_VALUE: .*fp32 or fp16/);
  t.regex(bad({ convAlgorithm: 'winograd' }), /^ERR_ARG_VALUE: .*cudnnFind/);
  t.regex(bad({ steps: [{ ...(base.steps[0] as object), dst: 0 }, ...base.steps.slice(1)] }), /^ERR_ARG_VALUE: conv cannot run in place/);
  t.regex(bad({ head: { ...good.head, bias: new Float32Array(2) } }), /^ERR_SHAPE: classifier/);
  t.regex(bad({ steps: 'none' }), /^ERR_ARG_TYPE: /);
});

test('cudnnSearchDirs: $REPVGG_CUDNN_PATH first, then the system loader, then existing Python wheel folders (no subprocess)', async (t) => {
  const home = await mkdtemp(join(tmpdir(), 'repvgg-cudnn-'));
  try {
    const wheelUnder = (prefix: string, python: string): string => join(prefix, 'lib', python, 'site-packages', 'nvidia', 'cudnn', 'lib');
    const userWheel = join(home, '.local', 'lib', 'python3.11', 'site-packages', 'nvidia', 'cudnn', 'lib');
    const venvWheel = wheelUnder(join(home, 'venv'), 'python3.12');
    const pyenvWheel = wheelUnder(join(home, '.pyenv', 'versions', '3.12.4'), 'python3.12');
    // A python3 on PATH that is a link into its installation (as /opt/python/bin/python3 -> ../../python-3.13/bin/python3.13).
    const opt = join(home, 'opt', 'python-3.13');
    const optWheel = wheelUnder(opt, 'python3.13');
    // A virtual environment that is not activated but whose bin/ is on PATH (as /opt/torch/.venv/bin on a GPU
    // machine): its python3 links to the interpreter it was made from, its packages are its own.
    const pathVenv = join(home, 'torch', '.venv');
    const pathVenvWheel = wheelUnder(pathVenv, 'python3.12');
    for (const dir of [userWheel, venvWheel, pyenvWheel, optWheel, pathVenvWheel, join(opt, 'bin'), join(home, 'bin'), join(pathVenv, 'bin')]) {
      await mkdir(dir, { recursive: true });
    }
    await writeFile(join(opt, 'bin', 'python3.13'), '');
    await symlink(join(opt, 'bin', 'python3.13'), join(home, 'bin', 'python3'));
    await symlink(join(opt, 'bin', 'python3.13'), join(pathVenv, 'bin', 'python3'));
    await mkdir(join(home, '.local', 'lib', 'python3.10', 'site-packages'), { recursive: true }); // no cuDNN there
    const env = { HOME: home, REPVGG_CUDNN_PATH: '/opt/cudnn/lib/libcudnn.so.9', VIRTUAL_ENV: join(home, 'venv'), PATH: `/nonexistent:${join(home, 'bin')}:${join(pathVenv, 'bin')}` };
    const dirs = cudnnSearchDirs({ env });
    t.is(dirs[0], '/opt/cudnn/lib/libcudnn.so.9', 'the explicit path comes first, even if it does not exist');
    t.is(dirs[1], '@system');
    for (const wheel of [userWheel, venvWheel, pyenvWheel, optWheel, pathVenvWheel]) t.true(dirs.includes(wheel), `${wheel} in\n${dirs.join('\n')}`);
    t.false(dirs.some((d) => d.includes('python3.10')), 'folders without nvidia/cudnn/lib are not listed');
    t.is(new Set(dirs).size, dirs.length, 'no duplicates');
    t.deepEqual(cudnnSearchDirs({ env: { HOME: home } }).slice(0, 1), ['@system'], 'without the variable, the system loader is first');
  } finally {
    await rm(home, { recursive: true, force: true });
  }
});

(load.addon ? test : test.skip)('the cuDNN loader tries the explicit entry first, then every cuDNN found newest first, and lists them all', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'repvgg-cudnn-rank-'));
  try {
    // Files that are not libraries: dlopen refuses each, so the report lists every candidate in the order tried.
    const explicitDir = join(root, 'mine', 'lib');
    const system8 = join(root, 'usr', 'lib'); // a system install: libcudnn.so.8 -> libcudnn.so.8.9.7
    const wheel91 = join(root, 'site-packages', 'nvidia', 'cudnn', 'lib'); // version from the wheel's metadata folder
    const tarball96 = join(root, 'cudnn-9.6', 'lib'); // version from ../include/cudnn_version.h
    for (const dir of [explicitDir, system8, wheel91, tarball96, join(root, 'cudnn-9.6', 'include'),
      join(root, 'site-packages', 'nvidia_cudnn_cu12-9.1.0.70.dist-info')]) await mkdir(dir, { recursive: true });
    await writeFile(join(explicitDir, 'libcudnn.so.8'), 'not a library');
    await writeFile(join(system8, 'libcudnn.so.8.9.7'), 'not a library');
    await symlink('libcudnn.so.8.9.7', join(system8, 'libcudnn.so.8'));
    await writeFile(join(wheel91, 'libcudnn.so.9'), 'not a library');
    await writeFile(join(tarball96, 'libcudnn.so.9'), 'not a library');
    await writeFile(join(root, 'cudnn-9.6', 'include', 'cudnn_version.h'),
      '#ifndef CUDNN_VERSION_H_\n#define CUDNN_MAJOR 9\n#define CUDNN_MINOR 6\n#define CUDNN_PATCHLEVEL 0\n#endif\n');
    const loaderReport = async (search: string[]) => {
      const script = `const addon = require(${JSON.stringify(cudaAddonPath())}); addon.init({ cudnnSearchDirs: ${JSON.stringify(search)} });
        const info = addon.info(); console.log(JSON.stringify({ candidates: info.cudnnCandidates, loaded: info.cudnnLoaded, path: info.cudnnPath }));`;
      const { stdout } = await execFileAsync(process.execPath, ['-e', script], { env: { ...process.env, LD_LIBRARY_PATH: '' } });
      return JSON.parse(stdout) as { candidates: string[]; loaded: boolean; path?: string };
    };
    // Where the system has a real cuDNN (a GPU machine), it is among the candidates and loads after the fakes fail.
    const system = await loaderReport(['@system']);
    const report = await loaderReport([explicitDir, '@system', system8, wheel91, tarball96, `${tarball96}/`]);
    t.is(report.loaded, system.loaded, 'loads exactly when the system has a cuDNN of its own');
    if (report.loaded) t.false(report.path?.startsWith(root), `loaded ${report.path}, not one of the fake files`);
    const mine = report.candidates.filter((c) => c.startsWith(root) || c.startsWith('libcudnn.so'));
    const expected = [
      `${join(explicitDir, 'libcudnn.so.8')} (version unknown until loaded, given)`,
      `${join(tarball96, 'libcudnn.so.9')} (9.6.0, Python wheel or listed folder)`,
      `${join(wheel91, 'libcudnn.so.9')} (9.1.0, Python wheel or listed folder)`,
      'libcudnn.so.9 (version unknown until loaded, system loader path)',
      `${join(system8, 'libcudnn.so.8')} (8.9.7, Python wheel or listed folder)`,
      'libcudnn.so.8 (version unknown until loaded, system loader path)',
    ];
    t.deepEqual(mine, expected, report.candidates.join('\n'));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('probeCuda() probes once, on a worker thread, and cudaStatus() then returns that probe', async (t) => {
  // A fresh process: this file's own cudaStatus() call above already probed synchronously.
  const module = JSON.stringify(new URL('../lib/backend/cuda.js', import.meta.url).href);
  const script = `const m = await import(${module});
    const [a, b] = await Promise.all([m.probeCuda(), m.probeCuda()]);
    console.log(JSON.stringify({ same: a === b, remembered: m.cudaStatus() === a, status: a }));`;
  const { stdout } = await execFileAsync(process.execPath, ['--input-type=module', '-e', script]);
  const report = JSON.parse(stdout) as { same: boolean; remembered: boolean; status: typeof status };
  t.true(report.same, 'concurrent calls share one probe');
  t.true(report.remembered, 'cudaStatus() returns the remembered probe');
  t.deepEqual(report.status, status, 'the worker-thread probe reports what the synchronous one does');
});

test("RepVGGNetwork backend 'auto' runs on CUDA exactly when cudaStatus() says it is available, and its logits match float64", async (t) => {
  const state = randomTrainState(tinySpec, makeRng(3));
  const x = randomInput([2, 3, 12, 12], 4);
  for (const options of [{}, { backend: 'auto' }] as const) {
    const logits = await withNetwork(() => RepVGGNetwork.fromStateDict(tinySpec, state, options), async (net) => {
      t.is(net.backend, gpu ? 'cuda' : 'cpu', JSON.stringify(options));
      return net.predict(x);
    });
    checkClose(t, `auto (${JSON.stringify(options)}) vs float64`, logits.data, modelTrainRef(tinySpec, state, x).logits, MODEL_FP32);
  }
});

(gpu ? test.skip : test)("without CUDA, backend 'cuda' is a BackendError (ERR_BACKEND_UNAVAILABLE) carrying cudaStatus()'s reason", (t) => {
  const state = randomTrainState(tinySpec, makeRng(5));
  const model = reparameterize(tinySpec, state);
  const attempts: [string, () => RepVGGNetwork][] = [
    ['fromDeployed', () => RepVGGNetwork.fromDeployed(model, { backend: 'cuda' })],
    ['fromStateDict train form', () => RepVGGNetwork.fromStateDict(tinySpec, state, { backend: 'cuda' })],
    ['fromStateDict deploy form, fp16 + cudaGraph', () =>
      RepVGGNetwork.fromStateDict(tinySpec, deployedStateDict(model), { backend: 'cuda', precision: 'fp16', cudaGraph: true })],
  ];
  for (const [label, attempt] of attempts) {
    const error = t.throws(attempt, { instanceOf: BackendError }, label);
    t.is(error?.code, 'ERR_BACKEND_UNAVAILABLE', label);
    t.regex(error?.message ?? '', /CUDA backend is unavailable/, label);
    t.true((error?.message ?? '').includes(status.reason ?? '<no reason>'), `${label}: ${error?.message ?? ''}`);
  }
});

test('cudaGraph and fp16 on the cpu backend are ArgumentValueErrors naming the option', (t) => {
  const model = reparameterize(tinySpec, randomTrainState(tinySpec, makeRng(6)));
  const graph = t.throws(() => RepVGGNetwork.fromDeployed(model, { backend: 'cpu', cudaGraph: true }), { instanceOf: ArgumentValueError });
  t.regex(graph?.message ?? '', /cudaGraph only with the cuda backend.*cpu/);
  const half = t.throws(() => RepVGGNetwork.fromDeployed(model, { backend: 'cpu', precision: 'fp16' }), { instanceOf: ArgumentValueError });
  t.is(half?.code, 'ERR_ARG_VALUE');
  t.regex(half?.message ?? '', /\bprecision\b.*\bcpu backend\b.*'fp16'/);
});

// ---------------------------------------------------------------------------------------------------------------
// On a GPU: RepVGGNetwork on CUDA against the CPU backend, the float64 reference and PyTorch

gpuTest(needsGpu('deployed grouped network, fp32: CUDA = CPU backend = float64 reference'), async (t) => {
  const model = reparameterize(tinySpec, randomTrainState(tinySpec, makeRng(11)));
  const x = randomInput([3, 3, 12, 12], 12);
  const ours = await cudaLogits(t, fromDeployed(model), x);
  checkClose(t, 'cuda vs float64', ours, modelDeployRef(model, x).logits, MODEL_FP32);
  checkClose(t, 'cuda vs cpu', ours, await cpuLogits(fromDeployed(model), x), MODEL_FP32);
});

gpuTest(needsGpu('training-time grouped network (conv, BN, add, identity branches), fp32: CUDA = CPU = float64 = its deployed form'), async (t) => {
  const state = randomTrainState(tinySpec, makeRng(13));
  const x = randomInput([2, 3, 12, 12], 14);
  const train = await withNetwork(() => RepVGGNetwork.fromStateDict(tinySpec, state, { backend: 'cuda' }), async (net) => {
    t.is(net.form, 'train');
    return (await net.predict(x)).data;
  });
  checkClose(t, 'cuda train vs float64', train, modelTrainRef(tinySpec, state, x).logits, MODEL_FP32);
  checkClose(t, 'cuda train vs cpu train', train, await cpuLogits(fromState(tinySpec, state), x), MODEL_FP32);
  const deploy = await cudaLogits(t, fromDeployed(reparameterize(tinySpec, state)), x);
  checkClose(t, 'cuda deploy vs cuda train', deploy, train, MODEL_FP32);
});

gpuTest(needsGpu('squeeze-excitation network, deployed and training-time, fp32: CUDA = CPU backend = float64 reference'), async (t) => {
  const state = randomTrainState(tinySeSpec, makeRng(15));
  const model = reparameterize(tinySeSpec, state);
  const x = randomInput([2, 3, 16, 16], 16);
  const deployed = await cudaLogits(t, fromDeployed(model), x);
  checkClose(t, 'cuda deploy SE vs float64', deployed, modelDeployRef(model, x).logits, MODEL_FP32);
  checkClose(t, 'cuda deploy SE vs cpu', deployed, await cpuLogits(fromDeployed(model), x), MODEL_FP32);
  const train = await cudaLogits(t, fromState(tinySeSpec, state), x);
  checkClose(t, 'cuda train SE vs float64', train, modelTrainRef(tinySeSpec, state, x).logits, MODEL_FP32);
  checkClose(t, 'cuda train SE vs cpu', train, await cpuLogits(fromState(tinySeSpec, state), x), MODEL_FP32);
});

for (const arch of ['A0', 'B1g4'] as const) {
  gpuTest(needsGpu(`official ${arch}, train and deploy forms, fp32 at 64x64: CUDA = CPU backend = float64 reference`), async (t) => {
    const spec = officialSpec(arch, { numClasses: 10 });
    const state = randomTrainState(spec, makeRng(21));
    const model = reparameterize(spec, state);
    const x = randomInput([2, 3, 64, 64], 22);
    const deploy = await cudaLogits(t, fromDeployed(model), x);
    checkClose(t, `${arch} cuda deploy vs float64`, deploy, modelDeployRef(model, x).logits, MODEL_FP32);
    checkClose(t, `${arch} cuda deploy vs cpu`, deploy, await cpuLogits(fromDeployed(model), x), MODEL_FP32);
    const train = await cudaLogits(t, fromState(spec, state), x);
    checkClose(t, `${arch} cuda train vs float64`, train, modelTrainRef(spec, state, x).logits, MODEL_FP32);
  });
}

for (const name of ['a0', 'b1g4', 'tiny_se_g2']) {
  gpuTest(needsGpu(`fixture ${name}: CUDA train and deploy logits match PyTorch's (fp32), deploy also in fp16 with the same top-1`), async (t) => {
    const spec = fixtureSpec(readFixtureJson(name));
    const state = fixtureStateDict(spec);
    const x = await readFloat32Npy(`${name}.input.npy`);
    const torchTrain = await readFloat64Npy(`${name}.logits_train.npy`);
    const torchDeploy = await readFloat64Npy(`${name}.logits_deploy.npy`);
    const train = await cudaLogits(t, fromState(spec, state), x);
    checkClose(t, `${name} cuda train vs PyTorch`, train, torchTrain, MODEL_FP32);
    const deployState = deployedStateDict(reparameterize(spec, state));
    const deploy = await withNetwork(() => RepVGGNetwork.fromStateDict(spec, deployState, { backend: 'cuda' }), async (net) => {
      t.is(net.form, 'deploy');
      return (await net.predict(x)).data;
    });
    checkClose(t, `${name} cuda deploy vs PyTorch`, deploy, torchDeploy, MODEL_FP32);
    const half = await cudaLogits(t, fromState(spec, deployState), x, { precision: 'fp16' });
    const error = checkClose(t, `${name} cuda fp16 deploy vs PyTorch`, half, torchDeploy, FP16);
    const decisive = checkTop1Agreement(t, `${name} fp16 top-1`, half, torchDeploy, [x.shape[0] as number, spec.numClasses], FP16);
    t.log(`${name}: fp16 max relative error ${error.toExponential(2)}, ${decisive}/${x.shape[0]} decisive samples agree`);
  });
}

gpuTest(needsGpu('fp16 deployed A0: NHWC tensor cores, within FP16 of float64 with the same top-1 as float64 and as CUDA fp32'), async (t) => {
  const model = reparameterize(a0Spec, randomTrainState(a0Spec, makeRng(31)));
  const x = randomInput([4, 3, 64, 64], 32);
  const ref = modelDeployRef(model, x).logits;
  const half = await withNetwork(() => RepVGGNetwork.fromDeployed(model, { backend: 'cuda', precision: 'fp16' }), async (net) => {
    t.is(net.precision, 'fp16');
    const report = (await net.prepare(4, 64, 64)) as CudaPlanReport;
    t.is(report.layout, 'NHWC');
    t.is(report.precision, 'fp16');
    t.is(report.inputChannelsStored, 8, 'the 3-channel input is padded to 8 for tensor cores');
    t.true(report.convs.some((c) => c.mathType === 'TENSOR_OP'), report.convs.map((c) => c.implementation).join('; '));
    return (await net.predict(x)).data;
  });
  const fp32 = await cudaLogits(t, fromDeployed(model), x);
  checkClose(t, 'A0 cuda fp32 vs float64', fp32, ref, MODEL_FP32);
  const error = checkClose(t, 'A0 fp16 vs float64', half, ref, FP16);
  const decisiveRef = checkTop1Agreement(t, 'A0 fp16 vs float64 top-1', half, ref, [4, 10], FP16);
  const decisiveFp32 = checkTop1Agreement(t, 'A0 fp16 vs fp32 top-1', half, fp32, [4, 10], FP16);
  t.true(decisiveRef >= 1, 'at least one sample is decisive enough for the top-1 check to mean something');
  t.log(`A0 fp16: max relative error ${error.toExponential(2)}; top-1 checked on ${decisiveRef}/4 (vs float64), ${decisiveFp32}/4 (vs fp32)`);
});

gpuTest(needsGpu('fp16 training-time grouped and SE networks within FP16 of float64'), async (t) => {
  for (const [name, spec] of [['tiny', tinySpec], ['tiny SE', tinySeSpec]] as const) {
    const state = randomTrainState(spec, makeRng(33));
    const x = randomInput([2, 3, 16, 16], 34);
    const ours = await cudaLogits(t, fromState(spec, state), x, { precision: 'fp16' });
    checkClose(t, `${name} fp16 train vs float64`, ours, modelTrainRef(spec, state, x).logits, FP16);
  }
});

gpuTest(needsGpu('plan report (fp32): every deployed layer runs FMA (no TF32) math, the fastest of the algorithms timed as run; fused conv+bias+ReLU checked against the unfused path'), async (t) => {
  const model = reparameterize(a0Spec, randomTrainState(a0Spec, makeRng(41)));
  await withNetwork(() => RepVGGNetwork.fromDeployed(model, { backend: 'cuda' }), async (net) => {
    const report = (await net.prepare(2, 64, 64)) as CudaPlanReport;
    t.is(report.layout, 'NCHW');
    t.is(report.precision, 'fp32');
    t.is(report.convs.length, model.layers.length);
    for (const conv of report.convs) {
      t.is(conv.mathType, 'FMA', `step ${conv.step}: ${conv.implementation}`);
      // The candidates timed as the forward runs them, fastest first: the chosen one is listed first.
      const timed = /^timed as run: ([A-Z_]+)(\+fused)? ([\d.]+) ms/.exec(conv.note ?? '');
      if (timed) {
        t.is(timed[1], conv.algorithm, `step ${conv.step}: ${conv.note ?? ''}`);
        t.is(timed[2] !== undefined, conv.fused, `step ${conv.step}: ${conv.note ?? ''}`);
        const times = [...(conv.note ?? '').matchAll(/ ([\d.]+) ms/g)].map((m) => Number(m[1]));
        t.deepEqual(times, [...times].sort((a, b) => a - b), `step ${conv.step}: listed fastest first`);
      }
      // The prepare-time check ran (fused output vs conv, bias, ReLU on a patterned input) and agreed.
      if (conv.fused) t.true(conv.fusedMaxDiff !== undefined && conv.fusedMaxDiff >= 0 && conv.fusedMaxDiff < 1e-3, `step ${conv.step}: ${conv.fusedMaxDiff}`);
    }
    t.true(report.convs.some((c) => c.fused), 'the fused conv+bias+ReLU is in use');
    t.true(report.convs.some((c) => /^timed as run:/.test(c.note ?? '')), 'candidates were timed as run');
    t.true(report.activationBytes > 0 && report.weightBytes > 0);
    // Timing grew the workspace to the largest candidate's; what is kept is what the chosen algorithms need.
    t.is(report.workspaceBytes, Math.max(0, ...report.convs.map((c) => c.workspaceBytes)));
    t.log(report.convs.map((c) => `${c.step}: ${c.implementation}${c.note ? ` (${c.note})` : ''}`).join('\n'));
  });
});

gpuTest(needsGpu('cudaGraph on (the default) and off give the same logits, across replays, predictSync and batch sizes'), async (t) => {
  const model = reparameterize(a0Spec, randomTrainState(a0Spec, makeRng(51)));
  const x = randomInput([3, 3, 64, 64], 52);
  const one = randomInput([1, 3, 64, 64], 53);
  for (const precision of ['fp32', 'fp16'] as const) {
    const tolerance = precision === 'fp16' ? FP16 : MODEL_FP32;
    const [eager, eagerPlan] = await withNetwork(() => RepVGGNetwork.fromDeployed(model, { backend: 'cuda', precision, cudaGraph: false }), async (net) => {
      const report = (await net.prepare(3, 64, 64)) as CudaPlanReport;
      t.false(report.cudaGraph, `${precision}: cudaGraph off means no graph`);
      return [(await net.predict(x)).data, report.convs.map((c) => c.implementation).join('; ')] as const;
    });
    await withNetwork(() => RepVGGNetwork.fromDeployed(model, { backend: 'cuda', precision }), async (net) => {
      const report = (await net.prepare(3, 64, 64)) as CudaPlanReport;
      t.true(report.cudaGraph, `${precision}: a graph by default, but not used: ${report.cudaGraphError ?? ''}`);
      const first = (await net.predict(x)).data;
      // cuDNN measures its algorithms per network: with the same choices the graph must reproduce eager to rounding.
      const samePlan = report.convs.map((c) => c.implementation).join('; ') === eagerPlan;
      checkClose(t, `${precision} graph vs eager (${samePlan ? 'same' : 'different'} algorithms)`, first, eager, samePlan ? 1e-6 : tolerance);
      t.true(maxRelativeError((await net.predict(x)).data, first) <= 1e-6, `${precision}: a second replay`);
      t.true(maxRelativeError(net.predictSync(x).data, first) <= 1e-6, `${precision}: predictSync replay`);
      // Another batch size builds (and captures) another plan; the first one must still replay correctly.
      checkClose(t, `${precision} batch 1`, (await net.predict(one)).data, modelDeployRef(model, one).logits, tolerance);
      t.true(maxRelativeError((await net.predict(x)).data, first) <= 1e-6, `${precision}: the first plan after the second`);
    });
  }
});

gpuTest(needsGpu('maxBatch splits a batch into chunks (with and without cudaGraph) without changing the logits'), async (t) => {
  const model = reparameterize(a0Spec, randomTrainState(a0Spec, makeRng(61)));
  const x = randomInput([7, 3, 32, 32], 62);
  const ref = modelDeployRef(model, x).logits;
  const whole = await cudaLogits(t, fromDeployed(model), x);
  checkClose(t, 'whole batch', whole, ref, MODEL_FP32);
  for (const cudaGraph of [false, true]) {
    const progress: [number, number][] = [];
    const chunked = await withNetwork(() => RepVGGNetwork.fromDeployed(model, { backend: 'cuda', maxBatch: 3, cudaGraph }), async (net) => {
      t.is(net.maxBatch, 3);
      return (await net.predict(x, { onProgress: (done, total) => progress.push([done, total]) })).data;
    });
    t.deepEqual(progress, [[1, 3], [2, 3], [3, 3]]);
    checkClose(t, `chunks of 3 (cudaGraph ${cudaGraph})`, chunked, ref, MODEL_FP32);
  }
});

gpuTest(needsGpu('a batch gives the logits of its images one by one; predictSync equals predict'), async (t) => {
  const model = reparameterize(tinySpec, randomTrainState(tinySpec, makeRng(63)));
  const x = randomInput([4, 3, 12, 12], 64);
  await withNetwork(() => RepVGGNetwork.fromDeployed(model, { backend: 'cuda' }), async (net) => {
    const all = (await net.predict(x)).data;
    const image = 3 * 12 * 12;
    for (let i = 0; i < 4; i++) {
      const alone = await net.predict({ shape: [1, 3, 12, 12], data: x.data.slice(i * image, (i + 1) * image) });
      checkClose(t, `image ${i}`, alone.data, all.subarray(i * 5, (i + 1) * 5), MODEL_FP32);
    }
    t.deepEqual(net.predictSync(x).data, all);
  });
});

/** Expects predictSync to throw and predict to reject x with the error class, code and message patterns given. */
async function rejectsInput(t: ExecutionContext, net: RepVGGNetwork, x: HostTensor,
  [instanceOf, code]: [new (...args: never[]) => RepvggError, string], mentions: readonly RegExp[], label: string): Promise<void> {
  const sync = t.throws(() => net.predictSync(x), { instanceOf }, `${label} (predictSync)`);
  const async = await t.throwsAsync(() => net.predict(x), { instanceOf }, `${label} (predict)`);
  for (const error of [sync, async]) {
    t.is(error?.code, code, label);
    for (const m of mentions) t.regex(error?.message ?? '', m, `${label}: message mentions ${m}`);
  }
}

const SHAPE: [typeof ShapeError, string] = [ShapeError, 'ERR_SHAPE'];
const ARG_TYPE: [typeof ArgumentTypeError, string] = [ArgumentTypeError, 'ERR_ARG_TYPE'];
const ARG_VALUE: [typeof ArgumentValueError, string] = [ArgumentValueError, 'ERR_ARG_VALUE'];

gpuTest(needsGpu('bad input to a CUDA network: shape, dtype, size, NaN/Inf and bad options are typed errors'), async (t) => {
  const state = randomTrainState(a0Spec, makeRng(71));
  await withNetwork(() => RepVGGNetwork.fromStateDict(a0Spec, state, { backend: 'cuda' }), async (net) => {
    await rejectsInput(t, net, randomInput([1, 4, 32, 32], 72), SHAPE, [/3 channels/, /\[1, 4, 32, 32\]/], '4 channels');
    await rejectsInput(t, net, { shape: [3, 32, 32], data: randomArray(3 * 32 * 32, makeRng(73), 1) }, SHAPE, [/rank-4/], 'rank 3');
    const float64 = { shape: [1, 3, 32, 32], data: new Float64Array(3 * 32 * 32).fill(0.5) as unknown as Float32Array };
    await rejectsInput(t, net, float64, ARG_TYPE, [/Float64Array\(3072\)/], 'Float64Array');
    await rejectsInput(t, net, randomInput([1, 3, 16, 40], 74), SHAPE, [/32x32/, /16x40/], '16x40');
    const nan = randomInput([2, 3, 32, 32], 75);
    nan.data[1234] = Number.NaN;
    await rejectsInput(t, net, nan, ARG_VALUE, [/received NaN at flat index 1234\b/], 'NaN');
    const inf = randomInput([1, 3, 32, 32], 76);
    inf.data[0] = Number.POSITIVE_INFINITY;
    await rejectsInput(t, net, inf, ARG_VALUE, [/received Infinity at flat index 0\b/], 'Infinity');
    await t.throwsAsync(() => net.prepare(1, 31, 64), { instanceOf: ShapeError, message: /31x64/ });
    // The network still works after refusing all that.
    const ok = await net.predict(randomInput([1, 3, 32, 32], 77));
    t.deepEqual(ok.shape, [1, 10]);
    t.true(ok.data.every(Number.isFinite));
  });
  const bad = (options: NetworkOptions, mentions: RegExp): void => {
    const error = t.throws(() => RepVGGNetwork.fromStateDict(a0Spec, state, options), { instanceOf: ArgumentValueError });
    t.regex(error?.message ?? '', mentions);
  };
  bad({ backend: 'cuda', precision: 'bf16' }, /'fp32' or 'fp16' for precision on the cuda backend but received .*'bf16'/);
  bad({ backend: 'cuda', convAlgorithm: 'winograd' }, /'auto' for convAlgorithm on the cuda backend/);
});

gpuTest(needsGpu('use after dispose throws DisposedError; dispose twice is fine'), async (t) => {
  const model = reparameterize(tinySpec, randomTrainState(tinySpec, makeRng(81)));
  const net = RepVGGNetwork.fromDeployed(model, { backend: 'cuda', cudaGraph: true });
  const x = randomInput([1, 3, 12, 12], 82);
  t.deepEqual(net.predictSync(x).shape, [1, 5]);
  net.dispose();
  t.notThrows(() => net.dispose());
  t.throws(() => net.predictSync(x), { instanceOf: DisposedError, code: 'ERR_DISPOSED' });
  await t.throwsAsync(() => net.predict(x), { instanceOf: DisposedError, code: 'ERR_DISPOSED' });
  await t.throwsAsync(() => net.prepare(1, 12, 12), { instanceOf: DisposedError, code: 'ERR_DISPOSED' });
});

// ---------------------------------------------------------------------------------------------------------------
// On a GPU: the addon's own Program contract (what bench/cuda.ts uses directly: RepVGGNetwork has no benchmark())

gpuTest(needsGpu("the addon's Program: run() checks its buffers, benchmark() gives one device time per iteration, dispose() is final"), async (t) => {
  const addon = requireAddon();
  const model = reparameterize(a0Spec, randomTrainState(a0Spec, makeRng(91)));
  const p = new addon.Program(addonSpec(model));
  try {
    const output = new Float32Array(10);
    t.throws(() => p.run({ input: new Float32Array(10), output, batch: 1, height: 64, width: 64 }), { message: /^ERR_SHAPE: input holds 10/ });
    await t.throwsAsync(p.run({ input: new Float32Array(0), output, batch: 0, height: 64, width: 64 }), { message: /^ERR_SHAPE: input must have a positive batch/ });
    const x = randomInput([2, 3, 64, 64], 92);
    const result = await p.benchmark({ input: x.data, batch: 2, height: 64, width: 64, warmup: 2, iterations: 5 });
    t.is(result.ms.length, 5);
    t.false(result.cudaGraph);
    t.true(result.ms.every((ms) => ms > 0 && Number.isFinite(ms)), result.ms.join(', '));
    const logits = new Float32Array(2 * 10);
    await p.run({ input: x.data, output: logits, batch: 2, height: 64, width: 64 });
    checkClose(t, 'addon Program vs float64', logits, modelDeployRef(model, x).logits, MODEL_FP32);
  } finally {
    p.dispose();
  }
  p.dispose();
  t.throws(() => p.run({ input: new Float32Array(3 * 64 * 64), output: new Float32Array(10), batch: 1, height: 64, width: 64 }), { message: /^ERR_DISPOSED/ });
});
