// `repvgg serve`: reads the flags, starts lib/serve/server.ts on 127.0.0.1 (unless --host), prints one line once the
// model is ready, and owns the process lifecycle: SIGTERM/SIGINT drain (up to --drain-ms), a second signal exits at once.
// Not for: the HTTP endpoints, batching or metrics themselves (lib/serve/).

import { constants as osConstants } from 'node:os';
import type { BackendName, Precision } from '../engine.js';
import { RepvggError, UsageError } from '../errors.js';
import { imagenetClassNames, imagenetPreprocess, readLabelsFile } from '../data/images.js';
import { MAX_BATCHER_COUNT, MAX_BATCHER_MS } from '../serve/batcher.js';
import { DEFAULT_COMPUTE_NICE, createServer, defaultPreparedBatches, lowerServingThreads, type LoadedModel, type RepvggServer, type ServerOptions } from '../serve/server.js';
import { MAX_NICE } from '../nice.js';
import { archFlag } from './commands.js';
import { choiceFlag, intFlag, optionalFlag, requireFlag, type Flags } from './flags.js';

export const SERVE_FLAGS = {
  weights: { type: 'string' }, arch: { type: 'string' }, name: { type: 'string' }, host: { type: 'string' }, port: { type: 'string' },
  backend: { type: 'string' }, precision: { type: 'string' }, 'max-batch': { type: 'string' }, 'max-delay-ms': { type: 'string' },
  'max-queue': { type: 'string' }, 'timeout-ms': { type: 'string' }, labels: { type: 'string' }, preprocess: { type: 'string' },
  resize: { type: 'string' }, crop: { type: 'string' }, 'body-limit': { type: 'string' }, 'drain-ms': { type: 'string' },
  'log-requests': { type: 'boolean' }, 'log-level': { type: 'string' }, device: { type: 'string' }, 'compute-nice': { type: 'string' },
} as const;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const MAX_PORT = 65_535;
/** Largest --body-limit (2 GiB - 1): a larger request body is not something one process should buffer. */
const MAX_BODY_LIMIT = 2 ** 31 - 1;
/** Longest model name (it appears in every /v2/models/NAME URL). */
const MAX_NAME_LENGTH = 200;
/** Highest --device index accepted (far beyond the GPUs of one machine). */
const MAX_DEVICE = 1023;

/** An integer flag in [min, max]. */
function boundedIntFlag(flags: Flags, name: string, fallback: number, min: number, max: number): number {
  const value = intFlag(flags, name, fallback, min);
  if (value > max) throw new UsageError(`Expected an integer from ${min} to ${max} for --${name} but received '${String(flags[name])}'`);
  return value;
}

function nameFlag(flags: Flags): string {
  const name = optionalFlag(flags, 'name') ?? 'repvgg';
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name) || name.length > MAX_NAME_LENGTH) {
    throw new UsageError(`Expected a model name of letters, digits, '.', '_' and '-' (at most ${MAX_NAME_LENGTH}) for --name but received '${name.slice(0, MAX_NAME_LENGTH)}'`);
  }
  return name;
}

/** --resize and --crop, checked now so that a bad pair is a usage error rather than a failed model load. */
function preprocessSizes(flags: Flags): { resize: number; crop: number } {
  choiceFlag(flags, 'preprocess', ['imagenet'], 'imagenet');
  const resize = intFlag(flags, 'resize', 256);
  const crop = intFlag(flags, 'crop', 224);
  try {
    imagenetPreprocess(resize, crop, '--resize/--crop');
  } catch (error) {
    throw error instanceof RepvggError ? new UsageError(error.message) : error;
  }
  return { resize, crop };
}

/**
 * --device N: the process sees only GPU N (CUDA_VISIBLE_DEVICES, set before CUDA is first loaded, so the network's
 * device 0 is that GPU; when the variable is already set, N indexes its list). A device means the GPU: the backend
 * becomes 'cuda', and --backend cpu with --device is a usage error. Returns the backend to use.
 */
function applyDeviceFlag(flags: Flags, backend: BackendName): BackendName {
  if (flags.device === undefined) return backend;
  const device = boundedIntFlag(flags, 'device', 0, 0, MAX_DEVICE);
  if (backend === 'cpu') throw new UsageError(`Expected --backend cuda or auto with --device ${device} (a GPU) but received --backend cpu`);
  const visible = process.env.CUDA_VISIBLE_DEVICES;
  const choices = visible === undefined ? undefined : visible.split(',').map((entry) => entry.trim()).filter((entry) => entry !== '');
  if (choices !== undefined && device >= choices.length) {
    const listed = `CUDA_VISIBLE_DEVICES='${visible!.slice(0, 200)}'`;
    throw new UsageError(choices.length === 0
      ? `Expected a GPU for --device ${device} but ${listed} hides every GPU`
      : `Expected an index below ${choices.length} (${listed}) for --device but received ${device}`);
  }
  process.env.CUDA_VISIBLE_DEVICES = choices === undefined ? String(device) : choices[device]!;
  return 'cuda';
}

async function labelsFlag(flags: Flags): Promise<string[] | undefined> {
  const flag = optionalFlag(flags, 'labels');
  if (flag === undefined) return undefined;
  return flag === 'imagenet' ? imagenetClassNames() : readLabelsFile(flag);
}

/** The server options the flags describe. @throws UsageError naming the flag. */
function serverOptions(flags: Flags): ServerOptions & { modelName: string; prepareBatches: readonly number[] } {
  const arch = archFlag(flags, false);
  const maxBatch = boundedIntFlag(flags, 'max-batch', 32, 1, MAX_BATCHER_COUNT);
  return {
    weights: requireFlag(flags, 'weights'),
    ...(arch !== undefined && { arch }),
    modelName: nameFlag(flags),
    backend: choiceFlag<BackendName>(flags, 'backend', ['cpu', 'cuda', 'auto'], 'auto'),
    precision: choiceFlag<Precision>(flags, 'precision', ['fp32', 'bf16', 'int8', 'fp16'], 'fp32'),
    maxBatch,
    prepareBatches: defaultPreparedBatches(maxBatch),
    maxDelayMs: boundedIntFlag(flags, 'max-delay-ms', 0, 0, MAX_BATCHER_MS),
    maxQueue: boundedIntFlag(flags, 'max-queue', Math.max(256, maxBatch), maxBatch, MAX_BATCHER_COUNT),
    timeoutMs: boundedIntFlag(flags, 'timeout-ms', 10_000, 1, MAX_BATCHER_MS),
    bodyLimit: boundedIntFlag(flags, 'body-limit', 32 * 1024 * 1024, 1, MAX_BODY_LIMIT),
    ...preprocessSizes(flags),
    logLevel: choiceFlag(flags, 'log-level', LOG_LEVELS, 'warn'),
    logRequests: flags['log-requests'] === true,
  };
}

function urlOf(server: RepvggServer): string {
  const address = server.server.address();
  if (address === null || typeof address === 'string') return String(address);
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
}

/**
 * Stops the server on SIGTERM or SIGINT: readiness answers 503 at once and new connections are refused, accepted
 * requests are answered (the server closes each connection after its response), then `stopped` resolves. When --drain-ms passes first
 * the process exits 1; a second signal exits at once with 128 + the signal's number (SIGINT 130, SIGTERM 143).
 */
function stopOnSignal(server: RepvggServer, drainMs: number): { stopped: Promise<void>; isDraining: () => boolean } {
  let draining = false;
  const stopped = new Promise<void>((resolve, reject) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      if (draining) {
        process.stderr.write(`repvgg serve: ${signal} again: exiting without finishing the drain\n`);
        process.exit(128 + osConstants.signals[signal]);
      }
      draining = true;
      const deadline = setTimeout(() => {
        process.stderr.write(`repvgg: Expected the requests in progress to finish within --drain-ms ${drainMs} but some were still unanswered\n`);
        process.exit(1);
      }, drainMs);
      server.close().then(() => {
        clearTimeout(deadline);
        resolve();
      }, reject);
    };
    // Runs once fastify answers new requests with 503 and readiness is false: the line tells that the drain began.
    server.addHook('preClose', async () => {
      if (draining) process.stderr.write(`repvgg serve: draining (up to ${drainMs} ms; a second signal exits at once)\n`);
    });
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  return { stopped, isDraining: () => draining };
}

/** Runs the server until a signal's drain finishes. @throws UsageError (exit 2) for bad flags; other errors exit 1. */
export async function runServe(flags: Flags): Promise<void> {
  const options = serverOptions(flags);
  const host = optionalFlag(flags, 'host') ?? '127.0.0.1';
  const port = boundedIntFlag(flags, 'port', 8000, 0, MAX_PORT);
  const drainMs = boundedIntFlag(flags, 'drain-ms', 30_000, 0, MAX_BATCHER_MS);
  const computeNice = boundedIntFlag(flags, 'compute-nice', DEFAULT_COMPUTE_NICE, 0, MAX_NICE);
  const backend = applyDeviceFlag(flags, options.backend ?? 'auto');
  const labels = await labelsFlag(flags); // after every flag check: a usage error comes before a file error
  const server = createServer({ ...options, backend, ...(labels !== undefined && { labels }) });
  const { stopped, isDraining } = stopOnSignal(server, drainMs);
  stopped.catch(() => undefined); // awaited below; a failed close during loading must not be an unhandled rejection
  try {
    // Listening starts before the model is ready, so that /v2/health/live answers during loading.
    await server.listen({ host, port });
  } catch (error) {
    await server.close();
    const { code, message } = error as NodeJS.ErrnoException;
    throw new RepvggError('ERR_LISTEN', `Expected to listen on --host ${host} --port ${port} but received ${code ?? message}`);
  }
  let loaded: LoadedModel;
  try {
    loaded = await server.modelLoaded;
  } catch (error) {
    await server.close();
    throw new RepvggError((error as RepvggError).code ?? 'ERR_LOAD', `Expected a model to serve from --weights ${String(options.weights)} but loading failed: ${(error as Error).message}`);
  }
  // The event loop (HTTP, timers, the drain) runs before the numerics and the image preprocessing whenever they want
  // the same core.
  lowerServingThreads(computeNice, loaded.backend);
  if (!isDraining()) {
    process.stdout.write(
      `repvgg serve: model '${options.modelName}' (${loaded.arch}, ${loaded.backend} ${loaded.precision}) ready on ${urlOf(server)} (batch sizes ${options.prepareBatches.join(', ')} prepared)\n`,
    );
  }
  await stopped;
}
