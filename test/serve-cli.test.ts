// `repvgg serve` as a child process on a tiny custom RepVGG (32x32 crops): the ready line, health and inference
// over HTTP against predict(), the SIGTERM/SIGINT drain (readiness 503, queued work answered, exit 0), the second
// signal, and the exit codes of bad flags (2) and of a model that fails to load (1).
// Not for: the endpoints' protocol details (serve.test.ts) or the batcher's semantics (batcher.test.ts).

import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { cudaStatus } from '../lib/backend/cuda.js';
import { RepVGGNetwork } from '../lib/engine.js';
import { saveWeights } from '../lib/io/weights.js';
import { customSpec } from '../lib/models/repvgg.js';
import { reparameterize } from '../lib/reparam/reparam.js';
import type { HostTensor } from '../lib/tensor.js';
import { CLI_PATH, cli, describeResult, withCpuBackend, type CliResult } from './helpers/cli-runner.js';
import { metricValue } from './helpers/metrics.js';
import { makeRng, randomArray, randomTrainState } from './helpers/reference.js';
import { MODEL_FP32, checkClose } from './helpers/tolerances.js';
import { randomImages, randomPng as randomPngOf } from './helpers/random-images.js';

/** Longest wait for any one event (ready line, response, exit): a broken server fails the test instead of hanging it. */
const WAIT_MS = 90_000;
/** Pause between two looks at a condition being waited for. */
const POLL_MS = 25;

const spec = customSpec({
  inChannels: 3, numClasses: 10, stemChannels: 8, stemStride: 1,
  stageChannels: [8, 16, 16, 32], stageDepths: [1, 1, 1, 1], stageStrides: [1, 2, 2, 2],
});
const state = randomTrainState(spec, makeRng(11));
const labels = Array.from({ length: 10 }, (_, i) => `label ${i}`);
const rng = makeRng(Date.now() % 1_000_000);
const reference = RepVGGNetwork.fromDeployed(reparameterize(spec, state), { backend: 'cpu' });

let scratch = '';
let weightsPath = '';
let labelsPath = '';

test.before(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'repvgg-serve-cli-'));
  weightsPath = join(scratch, 'tiny.safetensors');
  labelsPath = join(scratch, 'labels.txt');
  await saveWeights(weightsPath, spec, 'train', state);
  await writeFile(labelsPath, labels.join('\n') + '\n');
});
test.after.always(async () => {
  reference.dispose();
  await rm(scratch, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls until probe() returns a value (not undefined); throws after WAIT_MS. */
async function waitUntil<T>(what: string, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`Timed out after ${WAIT_MS} ms waiting for ${what}`);
    await sleep(POLL_MS);
  }
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface Served {
  pid: number;
  url: string;
  port: number;
  kill: (signal: NodeJS.Signals) => void;
  stdout: () => string;
  stderr: () => string;
  /** Resolves when the process exited; rejects after WAIT_MS. */
  exit: () => Promise<Exit>;
}

/** Starts `repvgg serve` on port 0 of 127.0.0.1 with the tiny model and waits for its ready line. */
async function serve(t: ExecutionContext, extra: readonly string[]): Promise<Served> {
  const child = spawn(process.execPath, [CLI_PATH, ...withCpuBackend([
    'serve', '--weights', weightsPath, '--host', '127.0.0.1', '--port', '0', '--resize', '36', '--crop', '32',
    '--max-batch', '4', '--log-level', 'silent', ...extra,
  ])], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  let exited: Exit | undefined;
  child.once('exit', (code, signal) => (exited = { code, signal }));
  t.teardown(() => {
    if (exited === undefined) child.kill('SIGKILL');
  });
  const url = await waitUntil('the ready line', () => {
    if (exited !== undefined) throw new Error(`repvgg serve exited early (${exited.code ?? exited.signal}): ${stderr}`);
    return /ready on (http:\/\/127\.0\.0\.1:\d+) /.exec(stdout)?.[1];
  });
  return {
    pid: child.pid!,
    url,
    port: Number(new URL(url).port),
    kill: (signal) => child.kill(signal),
    stdout: () => stdout,
    stderr: () => stderr,
    exit: () => waitUntil('the process to exit', () => exited),
  };
}

const randomInput = (shape: [number, number, number, number]): HostTensor => randomImages(shape, rng);

const randomPng = (width: number, height: number): Promise<Buffer> => randomPngOf(width, height, rng);

const request = (url: string, init: RequestInit = {}): Promise<Response> => fetch(url, { ...init, signal: AbortSignal.timeout(WAIT_MS) });

/** POSTs a JSON FP32 infer request; resolves with the status and the returned logits. */
async function inferJson(served: Served, model: string, input: HostTensor): Promise<{ status: number; logits: number[] }> {
  const body = JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: input.shape, data: Array.from(input.data) }] });
  const response = await request(`${served.url}/v2/models/${model}/infer`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
  const json = (await response.json()) as { outputs?: { data: number[] }[] };
  return { status: response.status, logits: json.outputs?.[0]?.data ?? [] };
}

/**
 * Opens a raw connection and sends the first line of GET /v2/health/ready without finishing its headers: the
 * connection has a request in progress, so a drain keeps it open. A full round trip on another connection afterwards
 * guarantees the server has read those bytes before the test goes on.
 */
async function partialReadyRequest(served: Served): Promise<{ socket: Socket; finish: () => Promise<string> }> {
  const socket = connect(served.port, '127.0.0.1');
  let received = '';
  socket.setEncoding('utf8').on('data', (chunk: string) => (received += chunk));
  let closed = false;
  socket.once('close', () => (closed = true));
  socket.on('error', () => undefined); // a reset shows as an empty response below
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.write('GET /v2/health/ready HTTP/1.1\r\nhost: 127.0.0.1\r\n');
  const live = await request(`${served.url}/v2/health/live`);
  if (live.status !== 200) throw new Error(`Expected /v2/health/live 200 but received ${live.status}`);
  const finish = async (): Promise<string> => {
    socket.end('\r\n');
    await waitUntil('the response to the finished request', () => (closed ? true : undefined));
    return received;
  };
  return { socket, finish };
}

/** Resolves true once a new connection to the port is refused. */
async function connectionRefused(port: number): Promise<boolean | undefined> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(undefined);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ECONNREFUSED' ? true : undefined));
  });
}

test.serial('serve prints the ready line, answers health and FP32 inference as predict() does, survives bad images, exits 0 on SIGINT', async (t) => {
  const served = await serve(t, ['--labels', labelsPath, '--name', 'tiny']);
  t.regex(served.stdout(), /^repvgg serve: model 'tiny' \(custom, (cpu fp32|cuda fp32)\) ready on http:\/\/127\.0\.0\.1:\d+ \(batch sizes 1, 2, 4 prepared\)\n$/);
  if (/cpu fp32/.test(served.stdout())) {
    // --compute-nice (default 10): the compute thread and its OpenMP team yield to the JavaScript thread.
    const niceOf = async (tid: string) => Number((await readFile(`/proc/${served.pid}/task/${tid}/stat`, 'utf8')).split(') ')[1]!.split(' ')[16]);
    const threads = await Promise.all((await readdir(`/proc/${served.pid}/task`)).map(async (tid) => ({ tid: Number(tid), nice: await niceOf(tid) })));
    t.is(threads.find((thread) => thread.tid === served.pid)?.nice, 0, 'the JavaScript thread keeps its priority');
    t.true(threads.some((thread) => thread.nice === 10), `a compute thread at nice 10: ${JSON.stringify(threads)}`);
  }
  t.is((await request(`${served.url}/v2/health/live`)).status, 200);
  t.is((await request(`${served.url}/v2/health/ready`)).status, 200);

  const input = randomInput([3, 3, 32, 32]);
  const answer = await inferJson(served, 'tiny', input);
  t.is(answer.status, 200);
  checkClose(t, 'served logits', answer.logits, (await reference.predict(input)).data, MODEL_FP32);

  // A request whose image cannot be decoded is that request's 400, not the server's end.
  const garbage = new Uint8Array(randomArray(256, rng, 1).buffer as ArrayBuffer); // (1024) random bytes
  const broken = await request(`${served.url}/v1/classify`, { method: 'POST', body: garbage, headers: { 'content-type': 'image/png' } });
  t.is(broken.status, 400);
  t.regex(((await broken.json()) as { error: string }).error, /request body/);
  const classified = await request(`${served.url}/v1/classify?top=3`, { method: 'POST', body: new Uint8Array(await randomPng(40, 37)), headers: { 'content-type': 'image/png' } });
  t.is(classified.status, 200);
  const top = ((await classified.json()) as { top: { index: number; label: string }[] }).top;
  t.is(top.length, 3);
  t.deepEqual(top.map((row) => row.label), top.map((row) => labels[row.index]), '--labels FILE names the classes');

  served.kill('SIGINT');
  const exit = await served.exit();
  t.deepEqual(exit, { code: 0, signal: null }, served.stderr());
  t.regex(served.stderr(), /draining/);
});

test.serial('SIGTERM drains: readiness 503 at once, new connections refused, the queued request answered, exit 0', async (t) => {
  // A partial batch (1 of --max-batch 4) waits up to --max-delay-ms for company: the request is queued at SIGTERM.
  const served = await serve(t, ['--max-delay-ms', '3000']);
  const input = randomInput([1, 3, 32, 32]);
  const queued = inferJson(served, 'repvgg', input);
  await waitUntil('the request to be queued', async () => {
    const metrics = await (await request(`${served.url}/metrics`)).text();
    return /^repvgg_queue_images 1$/m.test(metrics) ? true : undefined;
  });
  const probe = await partialReadyRequest(served);

  served.kill('SIGTERM');
  await waitUntil('the draining line', () => (/draining/.test(served.stderr()) ? true : undefined));
  const response = await probe.finish();
  t.regex(response, /^HTTP\/1\.1 503 /, 'readiness is false as soon as the drain began');
  t.true(await waitUntil('new connections to be refused', () => connectionRefused(served.port)));

  const answer = await queued;
  t.is(answer.status, 200, 'a request accepted before the signal is answered');
  checkClose(t, 'drained logits', answer.logits, (await reference.predict(input)).data, MODEL_FP32);
  t.deepEqual(await served.exit(), { code: 0, signal: null }, served.stderr());
});

test.serial('a second SIGTERM during the drain exits at once with 143', async (t) => {
  const served = await serve(t, ['--drain-ms', '600000']);
  // A request in progress keeps the drain going until the second signal.
  const probe = await partialReadyRequest(served);
  t.teardown(() => probe.socket.destroy());
  served.kill('SIGTERM');
  await waitUntil('the draining line', () => (/draining/.test(served.stderr()) ? true : undefined));
  served.kill('SIGTERM');
  t.deepEqual(await served.exit(), { code: 143, signal: null }, served.stderr());
  t.regex(served.stderr(), /SIGTERM again/);
});

/** Asserts exit `code` and exactly one stderr line 'repvgg: ...' matching `pattern`. */
function expectFailure(t: ExecutionContext, r: CliResult, code: 1 | 2, pattern: RegExp): void {
  t.is(r.code, code, describeResult(r));
  const lines = r.stderr.split('\n').filter((line) => line !== '');
  t.is(lines.length, 1, `expected one stderr line:\n${r.stderr}`);
  t.regex(lines[0] ?? '', /^repvgg: /);
  t.notRegex(lines[0] ?? '', /unexpected error|    at /, 'a typed error, not a crash');
  t.regex(lines[0] ?? '', pattern);
}

/** How long the overload soak below keeps the server over capacity (a short version of bench/serve-overload.ts). */
const SOAK_SECONDS = 15;
/** Load before the first RSS reading: the heap and the allocator's pools grow for the first ~20 s, then level off. */
const SOAK_WARMUP_SECONDS = 8;
/** Concurrent clients of the soak, each sending its next request as soon as the last is answered. */
const SOAK_CLIENTS = 32;
/** Largest RSS growth over the soak accepted: leaking each request's 12 KB body would grow it by hundreds of MB. */
const SOAK_MAX_RSS_GROWTH = 1.25;

test.serial('under sustained overload every request gets 200 or 503 with Retry-After, the server stays live and its RSS bounded', async (t) => {
  const served = await serve(t, ['--max-queue', '8']);
  const rss = async () => metricValue(await (await request(`${served.url}/metrics`)).text(), 'process_resident_memory_bytes');
  const input = randomInput([1, 3, 32, 32]);
  const expected = (await reference.predict(input)).data;
  const body = JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: input.shape, data: Array.from(input.data) }] });
  const statuses = new Map<number, number>();
  let missingRetryAfter = 0;
  let wrongAnswers = 0;
  const client = async (end: number) => {
    while (Date.now() < end) {
      const response = await request(`${served.url}/v2/models/repvgg/infer`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
      statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
      if (response.status === 503 && !(Number(response.headers.get('retry-after')) >= 1)) missingRetryAfter++;
      const json = (await response.json()) as { outputs?: { data: number[] }[] };
      if (response.status === 200) {
        const logits = json.outputs?.[0]?.data ?? [];
        if (!logits.every((v, i) => Math.abs(v - expected[i]!) <= 1e-4 * (1 + Math.abs(expected[i]!)))) wrongAnswers++;
      }
    }
  };
  await Promise.all(Array.from({ length: SOAK_CLIENTS }, () => client(Date.now() + SOAK_WARMUP_SECONDS * 1000))); // heap and pools grow first
  const rssBefore = await rss();
  await Promise.all(Array.from({ length: SOAK_CLIENTS }, () => client(Date.now() + SOAK_SECONDS * 1000)));
  const rssAfter = await rss();
  t.log(`statuses ${JSON.stringify(Object.fromEntries(statuses))}; RSS ${(rssBefore / 2 ** 20).toFixed(1)} -> ${(rssAfter / 2 ** 20).toFixed(1)} MiB`);
  t.deepEqual([...statuses.keys()].sort(), [200, 503], 'only answers and rejections');
  t.true(statuses.get(503)! > 0 && statuses.get(200)! > 0);
  t.is(missingRetryAfter, 0);
  t.is(wrongAnswers, 0, 'accepted requests answered exactly');
  t.true(rssAfter <= SOAK_MAX_RSS_GROWTH * rssBefore, `RSS ${rssBefore} -> ${rssAfter}`);
  t.is((await request(`${served.url}/v2/health/live`)).status, 200);
  served.kill('SIGTERM');
  t.is((await served.exit()).code, 0);
});

test('bad serve flags exit 2 naming the flag', async (t) => {
  const cases: [string[], RegExp][] = [
    [[], /--weights/],
    [['--weights', weightsPath, '--port', '65536'], /--port.*65536/],
    [['--weights', weightsPath, '--max-batch', '0'], /--max-batch/],
    [['--weights', weightsPath, '--max-batch', '8', '--max-queue', '4'], /--max-queue/],
    [['--weights', weightsPath, '--max-delay-ms', '-1'], /--max-delay-ms/],
    [['--weights', weightsPath, '--backend', 'tpu'], /--backend.*tpu/],
    [['--weights', weightsPath, '--precision', 'int3'], /--precision/],
    [['--weights', weightsPath, '--preprocess', 'cifar'], /--preprocess/],
    [['--weights', weightsPath, '--log-level', 'loud'], /--log-level/],
    [['--weights', weightsPath, '--name', 'a/b'], /--name/],
    [['--weights', weightsPath, '--resize', '5000'], /--resize/],
    [['--weights', weightsPath, '--arch', 'Z9'], /--arch/],
    [['--weights', weightsPath, '--bogus'], /--bogus/],
    [['--weights', weightsPath, '--device', 'gpu0'], /--device.*gpu0/],
    [['--weights', weightsPath, '--device', '0', '--backend', 'cpu'], /--backend cuda or auto with --device 0/],
    [['--weights', weightsPath, '--compute-nice', '20'], /--compute-nice.*20/],
  ];
  // Never the default port 8000: a case that wrongly parses must not bind it.
  const results = await Promise.all(cases.map(([args]) => cli(['serve', ...(args.includes('--port') ? args : [...args, '--port', '0'])])));
  cases.forEach(([, pattern], i) => expectFailure(t, results[i]!, 2, pattern));
});

test('a model that fails to load exits 1 with one line naming the file', async (t) => {
  const garbagePath = join(scratch, 'garbage.safetensors');
  await writeFile(garbagePath, Buffer.from(randomArray(64, rng, 1).buffer));
  const [missing, garbage, wrongLabels, noGpu, beyondList] = await Promise.all([
    cli(['serve', '--weights', join(scratch, 'missing.safetensors'), '--port', '0']),
    cli(['serve', '--weights', garbagePath, '--port', '0']),
    cli(['serve', '--weights', weightsPath, '--port', '0', '--labels', 'imagenet', '--crop', '32', '--resize', '36']),
    cli(['serve', '--weights', weightsPath, '--port', '0', '--device', '0'], undefined, { CUDA_VISIBLE_DEVICES: '' }),
    cli(['serve', '--weights', weightsPath, '--port', '0', '--device', '2'], undefined, { CUDA_VISIBLE_DEVICES: '3,5' }),
  ]);
  expectFailure(t, missing!, 1, /--weights .*missing\.safetensors.*not found/);
  expectFailure(t, garbage!, 1, /garbage\.safetensors/);
  expectFailure(t, wrongLabels!, 1, /10 class names.*1000/);
  // --device means a GPU: with none visible, no silent fallback to the CPU.
  expectFailure(t, noGpu!, 2, /Expected a GPU for --device 0 but CUDA_VISIBLE_DEVICES='' hides every GPU/);
  expectFailure(t, beyondList!, 2, /Expected an index below 2 \(CUDA_VISIBLE_DEVICES='3,5'\) for --device but received 2/);
  if (!cudaStatus().available) {
    expectFailure(t, await cli(['serve', '--weights', weightsPath, '--port', '0', '--device', '0']), 1, /CUDA/);
  }
});
