// Serving benchmark: `createServer` (dynamic batching) against the server a Node user would write (fastify +
// onnxruntime-node, one session.run() per request) on the same RepVGG-A0 (random weights, 224x224, 1000 classes),
// loaded by autocannon on 127.0.0.1 at several concurrencies with binary FP32 tensors and JPEG images. Each server runs
// in its own child process (this file with --role) so that the load generator does not share its event loop.
// --load-nice N lowers the load generator below both servers, so that it takes only what they leave.
// Usage: USAGE below (`node dist/bench/serve.js --help`).
// Not for: raw engine throughput (bench/cpu.ts) or the server's correctness on edge cases (test/serve.test.ts).

import { fork, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { availableParallelism, cpus, loadavg, setPriority } from 'node:os';
import { PerformanceObserver, constants as perfConstants, monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

import fastify from 'fastify';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import sharp from 'sharp';

import { OptionError, choiceList, integerList, integerOption, parseBenchArgs, runBench } from '../lib/bench/args.js';
import { MAX_NICE } from '../lib/nice.js';
import { topClasses } from '../lib/cli/classify.js';
import { imagenetPreprocess, preprocessImage } from '../lib/data/images.js';
import { RepVGGNetwork } from '../lib/engine.js';
import { ONNX_INPUT_NAME, ONNX_OUTPUT_NAME, encodeOnnx } from '../lib/io/onnx.js';
import { randomStateDict, seededUniform } from '../lib/models/init.js';
import { officialSpec } from '../lib/models/repvgg.js';
import { reparameterize } from '../lib/reparam/reparam.js';
import { DEFAULT_COMPUTE_NICE, SERVING_NODE_FLAGS, createServer, lowerServingThreads } from '../lib/serve/server.js';
import { cpuSecondsBetween, median, threadCpuTimes } from './process.js';
import { metricValue } from '../test/helpers/metrics.js';
import { maxRelativeError } from '../test/helpers/reference.js';

const ARCH = 'A0';
const IMAGE_SIZE = 224;
const NUM_CLASSES = 1000;
const WEIGHT_SEED = 1;
const MODEL_NAME = 'repvgg-a0';
/** The servers' answers must match predict() on the same input to this relative error (max|a-b| / max|b|). */
const MAX_RELATIVE_ERROR = 1e-4;
/** Bounds on what the command line can ask for: every request goes to 127.0.0.1 and stops within this. */
const MAX_SECONDS = 120;
const MAX_CONCURRENCY = 256;
/** Size of the test JPEG before the server's Resize(256) + CenterCrop(224): a typical photo. */
const JPEG_WIDTH = 500;
const JPEG_HEIGHT = 375;
const OFFLINE_WARMUP_RUNS = 2;
const OFFLINE_MIN_RUNS = 5;
const CHILD_READY_TIMEOUT_MS = 300_000;
/** Longest wait for a server to finish the previous run's leftover requests, and how often to look. */
const SETTLE_TIMEOUT_MS = 120_000;
const SETTLE_POLL_MS = 100;
/** Nice value of this process's thread, which runs autocannon, once the server children have started (0: unchanged). */
const DEFAULT_LOAD_NICE = 0;

export type ServerKind = 'ours' | 'onnxruntime';
export type InputKind = 'fp32' | 'jpeg';

/** Minimal typing of autocannon 9's programmatic API (it ships no type declarations). */
interface AutocannonResult {
  duration: number;
  '2xx': number;
  non2xx: number;
  errors: number;
  timeouts: number;
  latency: { p50: number; p99: number };
}
type Autocannon = (options: {
  url: string;
  connections: number;
  duration: number;
  method: 'POST';
  headers: Record<string, string>;
  body: Buffer;
}) => Promise<AutocannonResult>;
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

/** Messages between the bench and a server child. */
type ToChild = { type: 'resetLag' } | { type: 'readLag' };
type FromChild = { type: 'listening'; port: number } | ({ type: 'lag' } & ChildStats);

/** What a server child measured of itself since the last reset. */
interface ChildStats {
  p99Ms: number;
  maxMs: number;
  fullGcs: number;
  /**
   * CPU seconds of its threads at the compute nice (ours with --compute-nice above 0: the network's compute team, and
   * the image decoding workers) and of all its other threads (event loop, V8's helpers, libuv); undefined without
   * /proc. The baseline's threads all count as other.
   */
  computeNiceCpuSeconds?: number | undefined;
  otherCpuSeconds?: number | undefined;
}

interface LoadResult {
  server: ServerKind;
  input: InputKind;
  concurrency: number;
  seconds: number;
  imagesPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  failed: number;
  /** Mean images per computed batch during the run (ours only, from /metrics). */
  meanBatch?: number;
  /** Fraction of the run the network was computing, and images per second of compute time (ours only, /metrics). */
  engineBusy?: number;
  computeImagesPerSecond?: number;
  /** Cores' worth of CPU the server's threads used during the run: at the compute nice, and the rest (ChildStats). */
  computeNiceCores?: number;
  otherServerCores?: number;
  /** predict() images/s on the same batch size, one batch after another (ours, FP32 only), and the cores it used. */
  offlineImagesPerSecond?: number;
  offlineCores?: number;
  eventLoopLagP99Ms: number;
  /** Full (mark-compact) garbage collections in the server process during the run. */
  fullGcs: number;
  loadAverage1m: number;
}

export function progress(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

function modelWeights() {
  const spec = officialSpec(ARCH, { numClasses: NUM_CLASSES });
  return { spec, state: randomStateDict(spec, 'train', WEIGHT_SEED) };
}

export function randomImages(batch: number, seed: number): Float32Array {
  const uniform = seededUniform(seed);
  const data = new Float32Array(batch * 3 * IMAGE_SIZE * IMAGE_SIZE); // (batch, 3, 224, 224)
  for (let i = 0; i < data.length; i++) data[i] = 4 * uniform() - 2; // roughly the range of normalized pixels
  return data;
}


// ---- the server children -------------------------------------------------------------------------------------------

/**
 * Runs one server in this (child) process on 127.0.0.1, reports its port, and answers queries for its event-loop lag
 * and the number of full garbage collections since the last reset.
 */
async function runChild(kind: ServerKind, maxBatch: number, computeNice: number): Promise<void> {
  if (kind === 'ours') lowerServingThreads(computeNice, 'cpu'); // as `repvgg serve --compute-nice` does
  const lag = monitorEventLoopDelay({ resolution: 1 });
  const app = kind === 'ours'
    ? createServer({ weights: modelWeights(), modelName: MODEL_NAME, maxBatch, logLevel: 'silent' }) // the server's default queue and deadline
    : await onnxruntimeServer();
  if ('modelLoaded' in app) await app.modelLoaded;
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('Expected a TCP address from listen()');
  lag.enable();
  let fullGcs = 0;
  new PerformanceObserver((list) => {
    // A gc entry's detail.kind says which collection it was (node >= 16; not in this @types/node's PerformanceEntry).
    for (const entry of list.getEntries() as Array<PerformanceEntry & { detail?: { kind?: number } }>) {
      if (entry.detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) fullGcs++;
    }
  }).observe({ entryTypes: ['gc'] });
  // Ours: its compute team (and image decoding workers) run at computeNice, every other thread at 0.
  const threadsNice = kind === 'ours' && computeNice > 0 ? computeNice : Number.NaN;
  let cpuAtReset = threadCpuTimes();
  process.on('message', (message: ToChild) => {
    if (message.type === 'resetLag') {
      lag.reset();
      fullGcs = 0;
      cpuAtReset = threadCpuTimes();
    } else {
      const cpuNow = threadCpuTimes();
      const cpu = cpuAtReset === undefined || cpuNow === undefined ? undefined : cpuSecondsBetween(cpuAtReset, cpuNow, threadsNice);
      process.send!({
        type: 'lag', p99Ms: lag.percentile(99) / 1e6, maxMs: lag.max / 1e6, fullGcs,
        computeNiceCpuSeconds: Number.isNaN(threadsNice) ? undefined : cpu?.atNice, otherCpuSeconds: cpu?.others,
      } satisfies FromChild);
    }
  });
  process.on('disconnect', () => void app.close().then(() => process.exit(0)));
  process.send!({ type: 'listening', port: address.port } satisfies FromChild);
}

/**
 * The baseline: what a Node user writes with onnxruntime-node. POST /infer takes a raw float32 [1, 3, 224, 224] body and
 * answers the raw float32 logits; POST /classify takes one JPEG, preprocesses it exactly like our server (so only the
 * serving differs) and answers the top 5 as JSON. One session.run() per request, no batching.
 */
async function onnxruntimeServer() {
  const { spec, state } = modelWeights();
  const session = await InferenceSession.create(encodeOnnx(reparameterize(spec, state)), {
    intraOpNumThreads: availableParallelism(),
    graphOptimizationLevel: 'all',
  });
  const preprocess = imagenetPreprocess(256, IMAGE_SIZE);
  const app = fastify({ logger: false, bodyLimit: 32 * 1024 * 1024 });
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
  const logitsOf = async (chw: Float32Array): Promise<Float32Array> => {
    const outputs = await session.run({ [ONNX_INPUT_NAME]: new Tensor('float32', chw, [1, 3, IMAGE_SIZE, IMAGE_SIZE]) });
    return outputs[ONNX_OUTPUT_NAME]!.data as Float32Array; // (1, 1000)
  };
  app.post('/infer', async (request, reply) => {
    const body = request.body as Buffer;
    const chw = new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
    const logits = await logitsOf(chw);
    return reply.type('application/octet-stream').send(Buffer.from(logits.buffer, logits.byteOffset, logits.byteLength));
  });
  app.post('/classify', async (request) => {
    const chw = await preprocessImage(request.body as Buffer, { preprocess });
    return { top: topClasses(await logitsOf(chw), 5, undefined) };
  });
  app.addHook('onClose', async () => session.release());
  return app;
}

// ---- the bench ------------------------------------------------------------------------------------------------------

export interface Child {
  kind: ServerKind;
  process: ChildProcess;
  base: string;
  lag(): Promise<ChildStats>;
  resetLag(): void;
}

export async function startChild(kind: ServerKind, maxBatch: number, computeNice: number): Promise<Child> {
  // Ours runs with the V8 flags `repvgg serve` runs with; the baseline with node's defaults, as its user would.
  const execArgv = kind === 'ours' ? [...process.execArgv, ...SERVING_NODE_FLAGS] : process.execArgv;
  const child = fork(fileURLToPath(import.meta.url), ['--role', kind, '--max-batch', String(maxBatch), '--compute-nice', String(computeNice)], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const next = (): Promise<FromChild> => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`The ${kind} server did not answer within ${CHILD_READY_TIMEOUT_MS} ms`)), CHILD_READY_TIMEOUT_MS);
    const onExit = (code: number | null) => reject(new Error(`The ${kind} server exited with ${code}`));
    child.once('exit', onExit);
    child.once('message', (message: FromChild) => {
      clearTimeout(timer);
      child.off('exit', onExit);
      resolve(message);
    });
  });
  const listening = await next();
  if (listening.type !== 'listening') throw new Error(`Expected the ${kind} server to report its port but received ${listening.type}`);
  return {
    kind,
    process: child,
    base: `http://127.0.0.1:${listening.port}`,
    resetLag: () => child.send({ type: 'resetLag' } satisfies ToChild),
    lag: async () => {
      const pending = next();
      child.send({ type: 'readLag' } satisfies ToChild);
      const message = await pending;
      if (message.type !== 'lag') throw new Error(`Expected a lag report from the ${kind} server but received ${message.type}`);
      return message;
    },
  };
}

/** Disconnects a server child (it closes and exits) and waits for it to be gone, so that it costs no CPU afterwards. */
export function stopChild(child: Child): Promise<void> {
  if (child.process.exitCode !== null) return Promise.resolve();
  const exited = new Promise<void>((resolve) => child.process.once('exit', () => resolve()));
  child.process.disconnect();
  return exited;
}

/** A KServe v2 binary-extension request for one FP32 image, asking for binary logits. */
export function kserveBinaryRequest(chw: Float32Array): { body: Buffer; headers: Record<string, string> } {
  const header = Buffer.from(JSON.stringify({
    inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, IMAGE_SIZE, IMAGE_SIZE], parameters: { binary_data_size: chw.byteLength } }],
    outputs: [{ name: 'logits', parameters: { binary_data: true } }],
  }));
  return {
    body: Buffer.concat([header, Buffer.from(chw.buffer, chw.byteOffset, chw.byteLength)]),
    headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(header.length) },
  };
}

export interface RequestSpec {
  path: string;
  body: Buffer;
  headers: Record<string, string>;
}

export function requestFor(server: ServerKind, input: InputKind, chw: Float32Array, jpeg: Buffer): RequestSpec {
  if (input === 'jpeg') {
    return { path: server === 'ours' ? '/v1/classify' : '/classify', body: jpeg, headers: { 'content-type': 'image/jpeg' } };
  }
  if (server === 'ours') return { path: `/v2/models/${MODEL_NAME}/infer`, ...kserveBinaryRequest(chw) };
  return { path: '/infer', body: Buffer.from(chw.buffer, chw.byteOffset, chw.byteLength), headers: { 'content-type': 'application/octet-stream' } };
}

async function post(base: string, request: RequestSpec): Promise<Response> {
  const response = await fetch(`${base}${request.path}`, { method: 'POST', headers: request.headers, body: Uint8Array.from(request.body) });
  if (response.status !== 200) throw new Error(`Expected 200 from POST ${request.path} but received ${response.status}: ${(await response.text()).slice(0, 300)}`);
  return response;
}

/** The logits of a binary response: ours (JSON header, then the tensor) or the baseline's (the tensor alone). */
async function responseLogits(server: ServerKind, response: Response): Promise<Float32Array> {
  const bytes = Buffer.from(await response.arrayBuffer());
  const headerLength = server === 'ours' ? Number(response.headers.get('inference-header-content-length')) : 0;
  const tensor = bytes.subarray(headerLength);
  return new Float32Array(tensor.buffer.slice(tensor.byteOffset, tensor.byteOffset + tensor.byteLength));
}

/** Both servers answer one FP32 request and one JPEG exactly as predict() does, or the bench stops. */
async function checkCorrectness(children: Child[], reference: RepVGGNetwork, chw: Float32Array, jpeg: Buffer): Promise<Record<string, number>> {
  const expected = (await reference.predict({ shape: [1, 3, IMAGE_SIZE, IMAGE_SIZE], data: chw })).data;
  const jpegChw = await preprocessImage(jpeg, { preprocess: imagenetPreprocess(256, IMAGE_SIZE) });
  const expectedTop = topClasses((await reference.predict({ shape: [1, 3, IMAGE_SIZE, IMAGE_SIZE], data: jpegChw })).data, 5, undefined);
  const errors: Record<string, number> = {};
  for (const child of children) {
    const logits = await responseLogits(child.kind, await post(child.base, requestFor(child.kind, 'fp32', chw, jpeg)));
    const error = maxRelativeError(logits, expected);
    errors[`${child.kind} fp32`] = error;
    if (!(error <= MAX_RELATIVE_ERROR)) throw new Error(`Expected ${child.kind} FP32 logits within ${MAX_RELATIVE_ERROR} of predict() but the relative error is ${error}`);
    const { top } = await (await post(child.base, requestFor(child.kind, 'jpeg', chw, jpeg))).json() as { top: Array<{ index: number; probability: number }> };
    const probabilityError = Math.max(...top.map((entry, i) => Math.abs(entry.probability - expectedTop[i]!.probability)));
    errors[`${child.kind} jpeg top-5 probability`] = probabilityError;
    if (top.map((entry) => entry.index).join() !== expectedTop.map((entry) => entry.index).join() || !(probabilityError <= MAX_RELATIVE_ERROR)) {
      throw new Error(`Expected ${child.kind}'s JPEG top 5 to be predict()'s but received ${JSON.stringify(top)}`);
    }
  }
  return errors;
}

/** Sum and count of our repvgg_batch_size histogram, and the network's total time (repvgg_compute_duration_seconds). */
async function batchHistogram(base: string): Promise<{ sum: number; count: number; computeSeconds: number }> {
  const text = await (await fetch(`${base}/metrics`)).text();
  return {
    sum: metricValue(text, 'repvgg_batch_size_sum'),
    count: metricValue(text, 'repvgg_batch_size_count'),
    computeSeconds: metricValue(text, 'repvgg_compute_duration_seconds_sum'),
  };
}

/**
 * predict() throughput at one batch size, batch after batch (median img/s of the runs): what the server's batches
 * would cost offline; and the cores' worth of CPU this process used meanwhile (the servers have exited by then).
 */
async function offlineImagesPerSecond(network: RepVGGNetwork, batch: number, seconds: number): Promise<{ imagesPerSecond: number; cores: number }> {
  const images = { shape: [batch, 3, IMAGE_SIZE, IMAGE_SIZE], data: randomImages(batch, 1000 + batch) };
  await network.prepare(batch, IMAGE_SIZE, IMAGE_SIZE);
  for (let i = 0; i < OFFLINE_WARMUP_RUNS; i++) await network.predict(images);
  const rates: number[] = [];
  const cpuBefore = process.cpuUsage();
  const loopStart = performance.now();
  const end = loopStart + seconds * 1000;
  while (rates.length < OFFLINE_MIN_RUNS || performance.now() < end) {
    const start = performance.now();
    await network.predict(images);
    rates.push(batch / ((performance.now() - start) / 1000));
  }
  const cpu = process.cpuUsage(cpuBefore); // microseconds
  return { imagesPerSecond: median(rates), cores: (cpu.user + cpu.system) / 1000 / (performance.now() - loopStart) };
}

/**
 * Waits until a server has finished the work a previous run left behind (autocannon stops sending but requests already
 * queued still run): our queue and in-flight gauges read 0, then one request of the next run is answered.
 */
async function settle(child: Child, request: RequestSpec): Promise<void> {
  const deadline = performance.now() + SETTLE_TIMEOUT_MS;
  while (child.kind === 'ours') {
    const text = await (await fetch(`${child.base}/metrics`)).text();
    const busy = /^repvgg_(queue|in_flight)_images [1-9]/m.test(text);
    if (!busy) break;
    if (performance.now() > deadline) throw new Error(`The ${child.kind} server was still busy after ${SETTLE_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, SETTLE_POLL_MS));
  }
  await (await post(child.base, request)).arrayBuffer();
}

/** autocannon's run of one request at one concurrency for a bounded time, only to 127.0.0.1. */
export function hammer(child: Child, request: RequestSpec, concurrency: number, seconds: number): Promise<AutocannonResult> {
  return autocannon({
    url: `${child.base}${request.path}`,
    connections: concurrency,
    duration: seconds,
    method: 'POST',
    headers: request.headers,
    body: request.body,
  });
}

/**
 * One measured run. A warm-up run at the same concurrency comes first and is not counted: our engine builds (and with
 * convAlgorithm 'auto' measures) a plan the first time it sees a batch size, and the server prepares only powers of two.
 */
async function load(child: Child, input: InputKind, concurrency: number, seconds: number, warmupSeconds: number, request: RequestSpec): Promise<LoadResult> {
  if (warmupSeconds > 0) {
    await settle(child, request);
    await hammer(child, request, concurrency, warmupSeconds);
  }
  await settle(child, request);
  const before = child.kind === 'ours' ? await batchHistogram(child.base) : undefined;
  child.resetLag();
  const result = await hammer(child, request, concurrency, seconds);
  const { p99Ms, fullGcs, computeNiceCpuSeconds, otherCpuSeconds } = await child.lag();
  const loadResult: LoadResult = {
    server: child.kind,
    input,
    concurrency,
    seconds: result.duration,
    imagesPerSecond: result['2xx'] / result.duration,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    failed: result.non2xx + result.errors + result.timeouts,
    eventLoopLagP99Ms: p99Ms,
    fullGcs,
    loadAverage1m: loadavg()[0]!,
  };
  // The run's wall time as the child saw it is within a few ms of autocannon's (the reset and the read bracket it).
  if (computeNiceCpuSeconds !== undefined) loadResult.computeNiceCores = computeNiceCpuSeconds / result.duration;
  if (otherCpuSeconds !== undefined) loadResult.otherServerCores = otherCpuSeconds / result.duration;
  if (before !== undefined) {
    const after = await batchHistogram(child.base);
    loadResult.meanBatch = (after.sum - before.sum) / (after.count - before.count);
    loadResult.engineBusy = (after.computeSeconds - before.computeSeconds) / result.duration;
    loadResult.computeImagesPerSecond = (after.sum - before.sum) / (after.computeSeconds - before.computeSeconds);
  }
  return loadResult;
}

function markdown(results: LoadResult[]): string {
  const format = (value: number | undefined, digits: number) => (value === undefined || !Number.isFinite(value) ? '–' : value.toFixed(digits));
  const lines = [
    '| server | input | concurrency | img/s | p50 ms | p99 ms | failed | mean batch | engine busy | img/s of compute time | offline predict() img/s at that batch | served/offline | server CPU cores: compute threads / rest | offline CPU cores | served/offline per CPU-second of compute | event-loop lag p99 ms | full GCs | load avg 1m |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of results) {
    const ratio = r.offlineImagesPerSecond === undefined ? undefined : r.imagesPerSecond / r.offlineImagesPerSecond;
    // Images per CPU-second of the compute threads while serving over images per CPU-second offline: what batching and
    // serving cost the network itself, apart from the cores the event loop and the load generator took from it.
    const perCpuRatio = r.offlineImagesPerSecond === undefined || r.offlineCores === undefined || r.computeNiceCores === undefined
      ? undefined
      : (r.imagesPerSecond / r.computeNiceCores) / (r.offlineImagesPerSecond / r.offlineCores);
    const cores = `${format(r.computeNiceCores, 2)} / ${format(r.otherServerCores, 2)}`;
    lines.push(`| ${r.server === 'ours' ? 'repvgg createServer' : 'fastify + onnxruntime-node'} | ${r.input === 'fp32' ? 'FP32 binary' : 'JPEG'} | ${r.concurrency} | ${format(r.imagesPerSecond, 1)} | ${format(r.p50Ms, 1)} | ${format(r.p99Ms, 1)} | ${r.failed} | ${format(r.meanBatch, 2)} | ${format(r.engineBusy, 2)} | ${format(r.computeImagesPerSecond, 1)} | ${format(r.offlineImagesPerSecond, 1)} | ${format(ratio, 2)} | ${cores} | ${format(r.offlineCores, 2)} | ${format(perCpuRatio, 2)} | ${format(r.eventLoopLagP99Ms, 1)} | ${r.fullGcs} | ${format(r.loadAverage1m, 2)} |`);
  }
  return lines.join('\n');
}

const USAGE = `Usage: node dist/bench/serve.js [--seconds 10] [--warmup 3] [--concurrency 1,8,64] [--max-batch 32] [--compute-nice ${DEFAULT_COMPUTE_NICE}]
         [--load-nice ${DEFAULT_LOAD_NICE}] [--inputs fp32,jpeg] [--json FILE]
  --seconds       timed seconds per row (default 10, at most ${MAX_SECONDS})
  --warmup        seconds of load before each row's timing (default 3; 0 for none)
  --concurrency   client connections, one row each (default 1,8,64; at most ${MAX_CONCURRENCY})
  --max-batch     the servers' largest batch (default 32)
  --compute-nice  nice of our server's compute threads (default ${DEFAULT_COMPUTE_NICE}; 0 to leave them)
  --load-nice     nice of the load generator (default ${DEFAULT_LOAD_NICE})
  --inputs        fp32 (binary tensors) and/or jpeg (default fp32,jpeg)
  --json          also write every number as JSON to this file`;

async function main(): Promise<void> {
  const values = parseBenchArgs(USAGE, {
    role: { type: 'string' }, // a server child: ours or onnxruntime (startChild)
    seconds: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '1,8,64' },
    'max-batch': { type: 'string', default: '32' },
    'compute-nice': { type: 'string', default: String(DEFAULT_COMPUTE_NICE) },
    'load-nice': { type: 'string', default: String(DEFAULT_LOAD_NICE) },
    inputs: { type: 'string', default: 'fp32,jpeg' },
    json: { type: 'string' },
  });
  const maxBatch = integerOption(values['max-batch'], '--max-batch', { min: 1, max: 256 });
  const computeNice = integerOption(values['compute-nice'], '--compute-nice', { min: 0, max: MAX_NICE });
  if (values.role !== undefined) {
    if (values.role !== 'ours' && values.role !== 'onnxruntime') throw new OptionError(`Expected ours or onnxruntime for --role but received '${values.role}'`);
    return runChild(values.role, maxBatch, computeNice);
  }
  const loadNice = integerOption(values['load-nice'], '--load-nice', { min: 0, max: MAX_NICE });
  const seconds = integerOption(values.seconds, '--seconds', { min: 1, max: MAX_SECONDS });
  const warmupSeconds = integerOption(values.warmup, '--warmup', { min: 0, max: MAX_SECONDS });
  const concurrencies = integerList(values.concurrency, '--concurrency', { min: 1, max: MAX_CONCURRENCY });
  const inputs: InputKind[] = choiceList(values.inputs, '--inputs', ['fp32', 'jpeg']);

  const chw = randomImages(1, 2);
  const uniform = seededUniform(3);
  const pixels = Buffer.alloc(JPEG_WIDTH * JPEG_HEIGHT * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = Math.floor(uniform() * 256);
  const jpeg = await sharp(pixels, { raw: { width: JPEG_WIDTH, height: JPEG_HEIGHT, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
  const { spec, state } = modelWeights();
  const reference = RepVGGNetwork.fromDeployed(reparameterize(spec, state), { maxBatch });

  const startLoad = loadavg()[0]!;
  progress(`starting both servers (RepVGG-${ARCH}, ${IMAGE_SIZE}x${IMAGE_SIZE}, max batch ${maxBatch}); load average ${startLoad.toFixed(2)}`);
  const children = [await startChild('ours', maxBatch, computeNice), await startChild('onnxruntime', maxBatch, computeNice)];
  const results: LoadResult[] = [];
  // --load-nice: the load generator yields to the servers (both alike). On 2 cores its ~9% of a core otherwise comes
  // out of the engine's time, which a real server's remote clients would not take.
  if (loadNice > 0) setPriority(loadNice);
  let agreement: Record<string, number> = {};
  try {
    agreement = await checkCorrectness(children, reference, chw, jpeg);
    progress(`correctness: ${JSON.stringify(agreement)}`);
    for (const input of inputs) {
      for (const concurrency of concurrencies) {
        for (const child of children) {
          progress(`${child.kind} ${input} concurrency ${concurrency} for ${warmupSeconds} + ${seconds} s`);
          results.push(await load(child, input, concurrency, seconds, warmupSeconds, requestFor(child.kind, input, chw, jpeg)));
        }
      }
    }
  } finally {
    await Promise.all(children.map(stopChild));
  }
  for (const result of results) {
    if (result.server !== 'ours' || result.input !== 'fp32' || result.meanBatch === undefined || !Number.isFinite(result.meanBatch)) continue;
    const batch = Math.min(maxBatch, Math.max(1, Math.round(result.meanBatch)));
    progress(`offline predict() at batch ${batch}`);
    const offline = await offlineImagesPerSecond(reference, batch, Math.min(seconds, 5));
    result.offlineImagesPerSecond = offline.imagesPerSecond;
    result.offlineCores = offline.cores;
  }
  reference.dispose();

  const endLoad = loadavg()[0]!;
  const machine = `${cpus()[0]?.model ?? 'unknown CPU'}, ${availableParallelism()} cores; load average (1m) ${startLoad.toFixed(2)} at start, ${endLoad.toFixed(2)} at end; load generator at nice ${loadNice}`;
  process.stdout.write(`## Serving RepVGG-${ARCH} (${IMAGE_SIZE}x${IMAGE_SIZE}, ${NUM_CLASSES} classes, random weights), ${seconds} s per row after ${warmupSeconds} s of warm-up\n\n`);
  process.stdout.write(`${machine}. Correctness before timing (max relative error vs predict()): ${Object.entries(agreement).map(([k, v]) => `${k} ${v.toExponential(1)}`).join(', ')}.\n\n`);
  process.stdout.write(`${markdown(results)}\n`);
  if (values.json !== undefined) {
    await writeFile(values.json, JSON.stringify({ arch: ARCH, imageSize: IMAGE_SIZE, numClasses: NUM_CLASSES, maxBatch, seconds, warmupSeconds, machine, agreement, results }, null, 2));
  }
}

// Run as a script (the bench, or a server child forked with --role); bench/serve-overload.ts imports the helpers.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await runBench(USAGE, main);
}
