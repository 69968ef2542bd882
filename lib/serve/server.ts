// The HTTP inference server (KServe v2 / Open Inference Protocol plus /v1/classify and /metrics) over fastify: one
// model, one dynamic Batcher, its own metrics registry; start-up loads and re-parameterizes the weights in the background.
// Not for: the `repvgg serve` command line, signal handling, TLS (the caller owns the process and listen()).

import fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import multipart from '@fastify/multipart';

import { setComputeNice } from '../backends.js';
import { RepVGGNetwork, type BackendName, type Precision } from '../engine.js';
import { checkNice } from '../nice.js';
import {
  ArgumentValueError,
  CancelledError,
  ClosedError,
  DeadlineError,
  QueueFullError,
  RepvggError,
  describeValue,
} from '../errors.js';
import { decodeWorkerPool, preprocessBatch, preprocessWithNormalization, type EvalPreprocess } from '../data/images.js';
import { detectForm, loadWeights, recordedClassNames, recordedNormalization } from '../io/weights.js';
import { topClasses } from '../cli/classify.js';
import { totalStride, type RepVGGSpec } from '../models/repvgg.js';
import { reparameterize } from '../reparam/reparam.js';
import type { ModelQuantization } from '../quant/params.js';
import type { HostTensor, StateDict } from '../tensor.js';
import { BODY_POOL_GRANULE, BodyPool, readBody } from './body.js';
import { Batcher, MAX_BATCH_ELEMENTS } from './batcher.js';
import { createServerMetrics, type RequestOutcome, type ServerMetrics } from './metrics.js';
import { HEADER_LENGTH_HEADER, OUTPUT_NAME, encodeInferResponse, parseInferRequest, splitBody, type ModelLimits } from './protocol.js';
import { SharedSamplePool } from './sample-pool.js';

export interface ServerOptions {
  /** A weights file (safetensors or .pth, either form) or weights already in memory. */
  weights: string | { spec: RepVGGSpec; state: StateDict; metadata?: Record<string, string>; quantization?: ModelQuantization };
  /** Architecture for a weights file that records none (see loadWeights). */
  arch?: string;
  /** The model's name in /v2/models/{name} (default 'repvgg'). */
  modelName?: string;
  backend?: BackendName;
  precision?: Precision;
  /** Most images per batch (default 32, the contract of `repvgg serve --max-batch`). */
  maxBatch?: number;
  /** How long a partial batch waits for more requests (default 0: a batch starts as soon as the engine is free). */
  maxDelayMs?: number;
  /** Most images waiting (default 256). */
  maxQueue?: number;
  /** Longest time a request may wait for its batch, decoding included (default 10000 ms). */
  timeoutMs?: number;
  /** Largest request body in bytes (default 32 MiB); larger bodies get 413. */
  bodyLimit?: number;
  /** Largest decoded image, in pixels (default 40 megapixels); larger images get 400. */
  maxPixels?: number;
  /** Evaluation transform of encoded images: resize (default 256) and center crop (default 224). */
  resize?: number;
  crop?: number;
  /** Class names (default: those the weights recorded, else none). */
  labels?: readonly string[];
  /** Batch sizes prepared at start-up at crop x crop (default powers of two up to maxBatch). */
  prepareBatches?: readonly number[];
  /** fastify (pino) log level (default 'warn'). */
  logLevel?: string;
  /** One log line per request at info (default false). */
  logRequests?: boolean;
}

/** What a server loaded: the network's architecture and where and how it runs. */
export interface LoadedModel {
  readonly arch: string;
  readonly backend: 'cpu' | 'cuda';
  readonly precision: Precision;
}

/**
 * A fastify instance serving one model; `modelLoaded` settles when start-up finished (rejects when it failed) with
 * what was loaded.
 */
export type RepvggServer = FastifyInstance & { readonly modelLoaded: Promise<LoadedModel> };

const DEFAULT_BODY_LIMIT = 32 * 1024 * 1024;
const DEFAULT_MAX_PIXELS = 40_000_000;
/** Seconds a client is told to wait when the server is starting or draining. */
const UNAVAILABLE_RETRY_SECONDS = 1;
/** HTTP status recorded for a request whose client went away (nginx's convention; nobody receives it). */
const CLIENT_CLOSED = 499;
/**
 * Most batch sizes prepared at start-up (each builds a plan). The CPU engine keeps 8 plans (native/cpu/program.h);
 * one is left for FP32 requests of other image sizes, so prepared plans are never evicted.
 */
const MAX_PREPARED_BATCHES = 7;
/** The model's one version in /v2/models/NAME/versions/VERSION URLs (KServe v2 lets a client name it). */
const MODEL_VERSION = '1';
/** The v2 model URLs: without a version, and with one (which must be MODEL_VERSION). */
const MODEL_PREFIXES = ['/v2/models/:name', '/v2/models/:name/versions/:version'] as const;
/** Routes whose requests are counted in the request metrics (and shed when the queue is full). */
const INFERENCE_ROUTES = new Set([...MODEL_PREFIXES.map((prefix) => `${prefix}/infer`), '/v1/classify']);
type ModelParams = { name: string; version?: string };

/** The loaded model: everything a request needs. */
interface Model {
  readonly spec: RepVGGSpec;
  readonly network: RepVGGNetwork;
  readonly labels: readonly string[] | undefined;
  readonly preprocess: EvalPreprocess;
  readonly limits: ModelLimits;
  /** Whether a batch of this size at the crop size runs on prepared plans though not prepared itself (see preparedBatchSize). */
  readonly runsPrepared: (batch: number) => boolean;
  /** The arrays encoded images are decoded into, reused from request to request. */
  readonly samples: SharedSamplePool;
  /** The buffers request bodies are read into, reused likewise. */
  readonly bodies: BodyPool;
}

/** An HTTP error with its status (and Retry-After seconds for 503). */
class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly retryAfter?: number) {
    super(message);
  }
}

function positiveInt(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || (value as number) < 1) {
    throw new ArgumentValueError(`Expected a positive integer for ${name} but received ${describeValue(value)}`);
  }
  return value as number;
}

/** Status, outcome and Retry-After for an error raised while answering a request. */
function classify(error: unknown): { status: number; outcome: RequestOutcome; retryAfter?: number } {
  if (error instanceof HttpError) {
    const outcome: RequestOutcome = error.status === 503 ? 'rejected' : error.status < 500 ? 'bad_input' : 'error';
    return { status: error.status, outcome, ...(error.retryAfter !== undefined && { retryAfter: error.retryAfter }) };
  }
  if (error instanceof QueueFullError) return { status: 503, outcome: 'rejected', retryAfter: error.retryAfterSeconds };
  if (error instanceof ClosedError) return { status: 503, outcome: 'rejected', retryAfter: UNAVAILABLE_RETRY_SECONDS };
  if (error instanceof DeadlineError) return { status: 504, outcome: 'timed_out' };
  if (error instanceof CancelledError) return { status: CLIENT_CLOSED, outcome: 'cancelled' };
  if (error instanceof RepvggError) {
    // Inputs are validated before they reach the network, so a typed error here is about the request's data.
    return ['ERR_ARG_TYPE', 'ERR_ARG_VALUE', 'ERR_SHAPE', 'ERR_FORMAT'].includes(error.code)
      ? { status: 400, outcome: 'bad_input' }
      : { status: 500, outcome: 'error' };
  }
  const status = (error as { statusCode?: unknown } | null)?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) return { status, outcome: 'bad_input' };
  return { status: 500, outcome: 'error' };
}

/** Loads the weights, converts them to the deployed form and builds the network. */
async function loadModel(options: ServerOptions, maxBatch: number, prepareBatches: readonly number[]): Promise<Model> {
  const weights = typeof options.weights === 'string' ? await loadWeights(options.weights, options.arch, 'weights') : options.weights;
  const metadata = weights.metadata ?? {};
  const { spec, state } = weights;
  const networkOptions = {
    maxBatch,
    ...(options.backend !== undefined && { backend: options.backend }),
    ...(options.precision !== undefined && { precision: options.precision }),
    ...(weights.quantization !== undefined && { quantization: weights.quantization }),
  };
  const network = detectForm(state) === 'train'
    ? RepVGGNetwork.fromDeployed(reparameterize(spec, state), networkOptions)
    : RepVGGNetwork.fromStateDict(spec, state, networkOptions);
  try {
    const labels = options.labels ?? recordedClassNames({ spec, metadata });
    if (labels !== undefined && labels.length !== spec.numClasses) {
      throw new ArgumentValueError(`Expected ${spec.numClasses} class names for labels but received ${labels.length}`);
    }
    const normalization = recordedNormalization({ metadata }, 'weights');
    const preprocess = preprocessWithNormalization(normalization, options.resize ?? 256, options.crop ?? 224, 'resize/crop');
    for (const batch of prepareBatches) await network.prepare(batch, preprocess.crop, preprocess.crop);
    // On the CPU, batches that split by images share their plans: when one of them was prepared, all of them were.
    // Asked once here for every size up to maxBatch, not per batch on the event loop.
    const splitSizes = new Set(Array.from({ length: maxBatch }, (_, i) => i + 1).filter((batch) => network.batchThreadingFor(batch) === 'images'));
    const imagePlansPrepared = prepareBatches.some((batch) => splitSizes.has(batch));
    const runsPrepared = (batch: number): boolean => imagePlansPrepared && splitSizes.has(batch);
    if (spec.inChannels === 3) await decodeWorkerPool().start(); // image inputs are decoded there: no start-up on the first ones
    const limits: ModelLimits = {
      inChannels: spec.inChannels,
      minSide: totalStride(spec),
      maxBatch,
      maxImageValues: Math.floor(MAX_BATCH_ELEMENTS / maxBatch),
      numClasses: spec.numClasses,
    };
    // Enough free arrays for a batch computing and the next one decoding; beyond that, requests allocate as before.
    const samples = new SharedSamplePool(2 * maxBatch * 3 * preprocess.crop * preprocess.crop);
    // As many bodies as FP32 images of the crop size (plus their JSON headers) in two batches.
    const bodies = new BodyPool(2 * maxBatch * (Float32Array.BYTES_PER_ELEMENT * 3 * preprocess.crop * preprocess.crop + BODY_POOL_GRANULE));
    return { spec, network, labels, preprocess, limits, runsPrepared, samples, bodies };
  } catch (error) {
    network.dispose();
    throw error;
  }
}

/**
 * V8 flags the `repvgg` command runs node with (its launcher line, lib/cli/main.ts), for the server's sake; run a
 * process that calls createServer() with them too (`node --initial-old-space-size=128 app.js`). Every request body
 * is external memory to V8 (node's copy of each body chunk, then the body's own buffer), and V8 counts external
 * memory allocated since the last full GC against an old-generation limit that a server's small heap (~17 MB) keeps
 * near 40 MB: at 180 FP32 images/s it ran a full mark-compact every ~180 ms, ~2.4 s of CPU per 10 s between the
 * main thread and V8's helpers. With the floor of the old-generation limit at 128 MB, and bodies read into reused
 * buffers (BodyPool), 5-7 in a whole benchmark run instead of ~85, at the same RSS (measured on 2 cores, 64 clients).
 */
export const SERVING_NODE_FLAGS: readonly string[] = ['--initial-old-space-size=128'];

/**
 * The nice value `repvgg serve` gives the compute threads (setComputeNice): the event loop then takes a core from
 * the numerics whenever a request arrives. On this project's 2-core benchmark machine it lowered the event-loop lag
 * p99 under load; 0 keeps the compute threads at the process's own priority.
 */
export const DEFAULT_COMPUTE_NICE = 10;

/**
 * What `repvgg serve --compute-nice` does once the model is loaded: the CPU backend's compute threads (when the
 * model runs there) and the image decoding workers get nice value `nice`, below the event loop's. 0 changes nothing.
 * @throws ArgumentValueError for a nice outside 0..MAX_NICE.
 */
export function lowerServingThreads(nice: number, backend: BackendName): void {
  if (checkNice(nice) === 0) return;
  if (backend === 'cpu') setComputeNice(nice);
  decodeWorkerPool().setNice(nice);
}

/**
 * The batch sizes a server prepares unless told otherwise: 1, 2, 4, ... and maxBatch itself, at most
 * MAX_PREPARED_BATCHES of them (the largest: smaller batches pad up to the smallest that holds them).
 */
export function defaultPreparedBatches(max: number): number[] {
  const sizes: number[] = [];
  for (let size = 1; size < max; size *= 2) sizes.push(size);
  sizes.push(max);
  return sizes.slice(-MAX_PREPARED_BATCHES);
}

/**
 * The batch size the engine runs for `images` images of (C, H, W): the smallest size from `images` up that runs on
 * prepared plans, a prepared size or one that `runsPrepared` says shares them (on the CPU, every batch split by
 * images: then mostly `images` itself). A plan is compiled (and with convAlgorithm 'auto' measured) per batch size
 * otherwise, so running whatever size the batcher assembled would compile in the middle of requests; padding costs
 * at most the unused rows of one batch. Batches of other image sizes (FP32 tensors) and batches above every
 * prepared size run as they are.
 */
export function preparedBatchSize(images: number, imageShape: readonly [number, number, number], preparedSizes: readonly number[], side: number,
  runsPrepared: (size: number) => boolean = () => false): number {
  const [, h, w] = imageShape;
  if (h !== side || w !== side) return images;
  const largest = Math.max(...preparedSizes);
  for (let size = images; size <= largest; size++) if (preparedSizes.includes(size) || runsPrepared(size)) return size;
  return images;
}

/** An AbortSignal that fires when the client disconnects before the response was written. */
function disconnectSignal(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableEnded) controller.abort();
  });
  return controller.signal;
}

function headerValue(request: FastifyRequest, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * Creates the server. Weights load in the background: readiness (/v2/health/ready) turns true once the network is
 * built and the common batch sizes are prepared; `await server.modelLoaded` to wait for it. close() drains the
 * batcher (accepted requests are answered), then disposes the network.
 * @throws ArgumentValueError for bad options (errors of loading reject modelLoaded instead).
 * @example const server = createServer({ weights: 'a0-deploy.safetensors' }); await server.listen({ port: 8000 });
 */
export function createServer(options: ServerOptions): RepvggServer {
  const modelName = options.modelName ?? 'repvgg';
  const maxBatch = positiveInt(options.maxBatch, 'maxBatch', 32);
  const bodyLimit = positiveInt(options.bodyLimit, 'bodyLimit', DEFAULT_BODY_LIMIT);
  const maxPixels = positiveInt(options.maxPixels, 'maxPixels', DEFAULT_MAX_PIXELS);
  const prepareBatches = options.prepareBatches ?? defaultPreparedBatches(maxBatch);
  const preparedSizes = [...prepareBatches].sort((a, b) => a - b);
  if (!Array.isArray(prepareBatches) || prepareBatches.length > MAX_PREPARED_BATCHES ||
    !prepareBatches.every((b) => Number.isSafeInteger(b) && b >= 1 && b <= maxBatch)) {
    throw new ArgumentValueError(`Expected at most ${MAX_PREPARED_BATCHES} batch sizes from 1 to maxBatch ${maxBatch} for prepareBatches but received ${describeValue(prepareBatches)}`);
  }
  let model: Model | undefined;
  let state: 'loading' | 'ready' | 'failed' | 'draining' = 'loading';
  const batcher = new Batcher({
    run: (batch) => model!.network.predict(batch),
    runParts: (parts, rows) => model!.network.predictParts(parts, rows),
    paddedSize: (images, imageShape) => preparedBatchSize(images, imageShape, preparedSizes, model!.preprocess.crop, model!.runsPrepared),
    maxBatch,
    maxDelayMs: options.maxDelayMs ?? 0,
    maxQueue: options.maxQueue ?? 256,
    timeoutMs: options.timeoutMs ?? 10_000,
    onBatch: (event) => {
      metrics.batchSize.observe(event.size);
      metrics.computeSeconds.observe(event.computeMs / 1000);
      for (const ms of event.queueMs) metrics.queueSeconds.observe(ms / 1000);
    },
  });
  const metrics: ServerMetrics = createServerMetrics(maxBatch, () => batcher.queuedImages, () => batcher.inFlightImages);

  const app = fastify({
    logger: { level: options.logLevel ?? 'warn' },
    logController: new LogController({ disableRequestLogging: options.logRequests !== true }),
    bodyLimit,
  });
  const loading = loadModel(options, maxBatch, prepareBatches).then((loaded): LoadedModel => {
    model = loaded;
    if (state === 'loading') state = 'ready';
    return { arch: loaded.spec.arch, backend: loaded.network.backend, precision: loaded.network.precision };
  });
  loading.catch((error: unknown) => {
    state = state === 'draining' ? state : 'failed';
    app.log.error(`repvgg: loading the model failed: ${(error as Error).message}`);
  });
  app.decorate('modelLoaded', loading);

  // Bodies stay raw bytes: the handlers parse them (JSON with a binary tail, images) with their own errors.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (request, payload, done) => {
    readBody(request.headers, payload, bodyLimit, model?.bodies).then((body) => done(null, body), (error: Error) => done(error, undefined));
  });
  /**
   * Gives a request's body buffer back to the pool once `inUse` (what still reads the body: the request's batch or
   * its decoding) settles. Bodies not from the pool are left to the GC.
   */
  const releaseBody = (body: unknown, inUse: Promise<unknown>): void => {
    if (body instanceof Buffer) void inUse.then(() => model?.bodies.release(body));
  };
  void app.register(multipart, { limits: { fileSize: bodyLimit, files: maxBatch, fields: 0, parts: maxBatch } });

  const record = (outcome: RequestOutcome, seconds: number, images: number): void => {
    metrics.requests.inc({ outcome });
    metrics.requestSeconds.observe({ outcome }, seconds);
    if (outcome === 'success') metrics.images.inc(images);
  };
  /** @throws HttpError 404 for another model name or version. */
  const checkModelName = (params: ModelParams | undefined): void => {
    if (params === undefined) return;
    if (params.name !== modelName) throw new HttpError(404, `Expected model '${modelName}' but received '${params.name.slice(0, 100)}'`);
    if (params.version !== undefined && params.version !== MODEL_VERSION) {
      throw new HttpError(404, `Expected version '${MODEL_VERSION}' of model '${modelName}' but received '${params.version.slice(0, 100)}'`);
    }
  };
  const readyModel = (params: ModelParams | undefined): Model => {
    checkModelName(params);
    if (state !== 'ready' || model === undefined) {
      throw new HttpError(503, `The model is ${state === 'ready' ? 'loading' : state}`, UNAVAILABLE_RETRY_SECONDS);
    }
    return model;
  };

  app.setErrorHandler((error, request, reply) => {
    const { status, outcome, retryAfter } = classify(error);
    if (INFERENCE_ROUTES.has(request.routeOptions.url ?? '')) record(outcome, reply.elapsedTime / 1000, 0);
    if (status >= 500 && outcome === 'error') request.log.error(error);
    if (retryAfter !== undefined) void reply.header('retry-after', String(retryAfter));
    void reply.code(status).send({ error: error instanceof Error ? error.message : String(error) });
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ error: `Expected a known route but received ${request.method} ${request.url.slice(0, 200)}` });
  });

  // Load shedding at admission: with the queue full, an inference request is refused before its body (600 KB for
  // one 224x224 FP32 image) is read and parsed, so rejections stay fast and cheap under overload.
  app.addHook('onRequest', async (request) => {
    if (state !== 'ready' || !INFERENCE_ROUTES.has(request.routeOptions.url ?? '')) return;
    const full = batcher.fullError();
    if (full) throw full;
  });

  app.get('/v2/health/live', async () => ({ live: true }));
  app.get('/v2/health/ready', async (_request, reply) => {
    const ready = state === 'ready';
    if (!ready) void reply.code(503).header('retry-after', String(UNAVAILABLE_RETRY_SECONDS));
    return { ready };
  });
  app.get('/v2', async () => ({ name: 'repvgg', version: '1', extensions: ['binary_tensor_data', 'classification'] }));
  for (const prefix of MODEL_PREFIXES) {
    app.get<{ Params: ModelParams }>(prefix, async (request) => {
      const { spec } = readyModel(request.params);
      return {
        name: modelName,
        versions: [MODEL_VERSION],
        platform: 'repvgg',
        inputs: [
          { name: 'input', datatype: 'FP32', shape: [-1, spec.inChannels, -1, -1] },
          { name: 'image', datatype: 'BYTES', shape: [-1] },
        ],
        outputs: [{ name: OUTPUT_NAME, datatype: 'FP32', shape: [-1, spec.numClasses] }],
      };
    });
    app.get<{ Params: ModelParams }>(`${prefix}/ready`, async (request, reply) => {
      checkModelName(request.params);
      const ready = state === 'ready';
      if (!ready) void reply.code(503).header('retry-after', String(UNAVAILABLE_RETRY_SECONDS));
      return { name: modelName, ready };
    });
  }

  /**
   * Queues a request's encoded images, decoded by the batcher's prepare(): `logits` is the request's answer, `settled`
   * resolves once nothing reads the images' bytes or writes their decoded array any more.
   */
  const submitImages = (current: Model, images: readonly Uint8Array[], names: readonly string[], signal: AbortSignal, timeoutMs: number | undefined) => {
    const crop = current.preprocess.crop;
    if (current.spec.inChannels !== 3) throw new HttpError(400, `Expected FP32 input: the model takes ${current.spec.inChannels}-channel images, not RGB`);
    const into = current.samples.acquire(images.length * 3 * crop * crop); // (N, 3, crop, crop)
    let decoding: Promise<unknown> = Promise.resolve();
    const logits = batcher.submit({
      shape: [images.length, 3, crop, crop],
      // Decoded, resized and normalized on the decoding worker threads: on the event loop, the resampling of a
      // batch of JPEGs held it for tens of milliseconds.
      prepare: async () => {
        const decoded = preprocessBatch(images, { preprocess: current.preprocess, maxPixels, names, name: 'image', into });
        decoding = decoded;
        return (await decoded).data;
      },
      signal,
      ...(timeoutMs !== undefined && { timeoutMs }),
    });
    // The array is reused once nothing reads it (the request answered: its batch, if any, is done) and nothing writes
    // it (its decoding, if started, settled: a request rejected while decoding must not hand it out half written).
    const ignore = (): void => undefined;
    const settled = logits.then(ignore, ignore).then(() => decoding).then(ignore, ignore);
    void settled.then(() => current.samples.release(into));
    return { logits, settled };
  };

  const infer = async (request: FastifyRequest<{ Params: ModelParams }>, reply: FastifyReply) => {
    const body = request.body instanceof Buffer ? request.body : Buffer.alloc(0);
    // What still reads the body (a binary tensor is a view of it) when the handler ends: the decoding of its images
    // (a request answered before its decoding settled). Its batch, if any, has finished by then.
    let bodyInUse: Promise<unknown> = Promise.resolve();
    try {
      const current = readyModel(request.params);
      const contentType = (headerValue(request, 'content-type') ?? '').split(';')[0]!.trim().toLowerCase();
      if (contentType !== '' && contentType !== 'application/json' && contentType !== 'application/octet-stream') {
        throw new HttpError(415, `Expected content-type application/json or application/octet-stream but received '${contentType.slice(0, 100)}'`);
      }
      const { header, binary } = splitBody(body, headerValue(request, HEADER_LENGTH_HEADER));
      const parsed = parseInferRequest(header, binary, current.limits);
      const signal = disconnectSignal(reply);
      const timeout = parsed.timeoutMs !== undefined ? { timeoutMs: Math.min(parsed.timeoutMs, batcher.timeoutMs) } : {};
      let logits: HostTensor;
      if (parsed.input.kind === 'tensor') {
        logits = await batcher.submit({ shape: parsed.input.shape, data: parsed.input.data, signal, ...timeout });
      } else {
        const submitted = submitImages(current, parsed.input.images, parsed.input.images.map((_, i) => `${parsed.inputName}[${i}]`), signal, timeout.timeoutMs);
        bodyInUse = submitted.settled;
        logits = await submitted.logits;
      }
      const images = logits.shape[0]!;
      const encoded = encodeInferResponse(modelName, parsed, logits.data, images, current.labels);
      record('success', reply.elapsedTime / 1000, images);
      if (encoded.headerLength !== undefined) {
        void reply.header(HEADER_LENGTH_HEADER, String(encoded.headerLength)).type('application/octet-stream');
      } else {
        void reply.type('application/json');
      }
      return reply.send(encoded.body);
    } finally {
      releaseBody(body, bodyInUse);
    }
  };
  for (const prefix of MODEL_PREFIXES) app.post<{ Params: ModelParams }>(`${prefix}/infer`, infer);

  app.post<{ Querystring: { top?: string; timeout_ms?: string } }>('/v1/classify', async (request, reply) => {
    const body = request.body instanceof Buffer ? request.body : undefined; // a raw image (multipart: the parts)
    // What still reads the body when the handler ends: the decoding of its image.
    let bodyInUse: Promise<unknown> = Promise.resolve();
    try {
      const current = readyModel(undefined);
      const top = queryInt(request.query.top, 'top', Math.min(5, current.spec.numClasses), current.spec.numClasses);
      const timeoutMs = request.query.timeout_ms === undefined ? undefined : queryInt(request.query.timeout_ms, 'timeout_ms', 0, batcher.timeoutMs);
      const contentType = (headerValue(request, 'content-type') ?? '').split(';')[0]!.trim().toLowerCase();
      const signal = disconnectSignal(reply);
      const rowsOf = (data: Float32Array, count: number) => {
        const classes = current.spec.numClasses;
        return Array.from({ length: count }, (_, i) => topClasses(data.subarray(i * classes, (i + 1) * classes), top, current.labels));
      };
      if (request.isMultipart()) {
        const images: Buffer[] = [];
        const files: string[] = [];
        let total = 0;
        for await (const part of request.files()) {
          const bytes = await part.toBuffer();
          total += bytes.length;
          if (total > bodyLimit) throw new HttpError(413, `Expected at most ${bodyLimit} bytes of images but received more`);
          images.push(bytes);
          files.push(part.filename);
        }
        if (images.length === 0) throw new HttpError(400, 'Expected at least one file in the multipart body but received none');
        const logits = await submitImages(current, images, files, signal, timeoutMs).logits;
        record('success', reply.elapsedTime / 1000, images.length);
        return rowsOf(logits.data, images.length).map((rows, i) => ({ file: files[i], top: rows }));
      }
      if (!contentType.startsWith('image/')) {
        throw new HttpError(415, `Expected content-type image/* or multipart/form-data but received '${contentType.slice(0, 100)}'`);
      }
      const submitted = submitImages(current, [body ?? Buffer.alloc(0)], ['request body'], signal, timeoutMs);
      bodyInUse = submitted.settled;
      const logits = await submitted.logits;
      record('success', reply.elapsedTime / 1000, 1);
      return { top: rowsOf(logits.data, 1)[0] };
    } finally {
      releaseBody(body, bodyInUse);
    }
  });

  app.get('/metrics', async (_request, reply) => {
    void reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });

  // Draining: readiness turns false, queued partial batches start at once instead of waiting out maxDelayMs, and
  // each response closes its connection (an idle keep-alive connection would otherwise hold close() open until its
  // timeout).
  app.addHook('onSend', async (_request, reply, payload) => {
    if (state === 'draining') void reply.header('connection', 'close');
    return payload;
  });
  app.addHook('preClose', async () => {
    state = 'draining';
    void batcher.drain();
  });
  app.addHook('onClose', async () => {
    await loading.catch(() => undefined);
    await batcher.drain();
    await batcher.close();
    model?.network.dispose();
  });
  return app as unknown as RepvggServer;
}

/** A query-string integer in [min, max], or the fallback when absent. */
function queryInt(value: string | undefined, name: string, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  const parsed = /^\d{1,9}$/.test(value) ? Number(value) : NaN;
  if (!(parsed >= 1 && parsed <= max)) throw new HttpError(400, `Expected an integer from 1 to ${max} for ${name} but received '${value.slice(0, 40)}'`);
  return parsed;
}
