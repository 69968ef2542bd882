// How async native calls share the process: many concurrent predict() calls must not occupy the libuv thread pool
// (fs, dns, zlib and sharp run there), their results must equal predictSync, and native errors must still reject
// with typed errors. Not for: numerics of the network itself (test/models.test.ts) or single ops (test/ops.test.ts).

import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';

import { callNative, loadCpuAddon } from '../lib/backend/native.js';
import { RepVGGNetwork } from '../lib/engine.js';
import { ArgumentValueError } from '../lib/errors.js';
import { randomStateDict } from '../lib/models/init.js';
import { officialSpec } from '../lib/models/repvgg.js';
import type { HostTensor } from '../lib/tensor.js';

const CONCURRENT_PREDICTS = 64;
/** lib/backends.js as an import specifier for a script run in a child process. */
const BACKENDS_MODULE = JSON.stringify(new URL('../lib/backends.js', import.meta.url).href);
const IMAGES_MODULE = JSON.stringify(new URL('../lib/data/images.js', import.meta.url).href);

/** Runs an ES module script in a fresh node process (process-wide settings stay there) and parses its JSON output. */
function runInChild(script: string, env: NodeJS.ProcessEnv = process.env): unknown {
  return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env }));
}

function randomImages(batch: number, side: number): HostTensor {
  const data = new Float32Array(batch * 3 * side * side);
  for (let i = 0; i < data.length; i++) data[i] = 2 * Math.random() - 1;
  return { shape: [batch, 3, side, side], data };
}

test('64 pending predict() calls leave the thread pool free: a readFile started after them finishes first', async (t) => {
  const spec = officialSpec('A0', { numClasses: 10 });
  const network = RepVGGNetwork.fromStateDict(spec, randomStateDict(spec, 'train', 7), { backend: 'cpu' });
  const directory = await mkdtemp(join(tmpdir(), 'repvgg-threading-'));
  try {
    const path = join(directory, 'small.txt');
    const content = `pending predicts must not block fs ${Math.random()}`;
    await writeFile(path, content);
    const images = randomImages(2, 64); // (2, 3, 64, 64)
    const expected = network.predictSync(images); // (2, 10); also builds the plan, so the async calls only run it

    const completions: string[] = [];
    const predicts = Array.from({ length: CONCURRENT_PREDICTS }, (_, index) =>
      network.predict(images).then((logits) => {
        completions.push(`predict ${index}`);
        return logits;
      }));
    const read = readFile(path, 'utf8').then((text) => {
      completions.push('readFile');
      return text;
    });
    const [results, text] = await Promise.all([Promise.all(predicts), read]);

    t.is(text, content);
    // With libuv's 4 pool threads parked on the compute thread, the read queued behind at least 60 predicts.
    const predictsBeforeRead = completions.indexOf('readFile');
    t.true(predictsBeforeRead < CONCURRENT_PREDICTS / 2,
      `readFile finished after ${predictsBeforeRead} of ${CONCURRENT_PREDICTS} predicts`);
    for (const logits of results) {
      t.deepEqual(logits.shape, expected.shape);
      t.deepEqual(logits.data, expected.data);
    }
  } finally {
    network.dispose();
    await rm(directory, { recursive: true, force: true });
  }
});

test('a network disposed while predicts are pending still settles them with the same logits', async (t) => {
  const spec = officialSpec('A0', { numClasses: 10 });
  const network = RepVGGNetwork.fromStateDict(spec, randomStateDict(spec, 'train', 11), { backend: 'cpu' });
  const images = randomImages(1, 32); // (1, 3, 32, 32)
  const expected = network.predictSync(images); // (1, 10)
  const pending = Array.from({ length: 8 }, () => network.predict(images));
  network.dispose();
  for (const logits of await Promise.all(pending)) t.deepEqual(logits.data, expected.data);
});

test('an error thrown by native work on the compute thread rejects with the typed error and its message', async (t) => {
  const addon = loadCpuAddon();
  const [batch, channels, height, width] = [2, 3, 4, 5];
  const tensor = (length: number): Float32Array => Float32Array.from({ length }, () => Math.random() + 0.5);
  const count = batch * channels * height * width;
  const options = {
    batch, channels, height, width, eps: -1, relu: false, channelsLast: false,
    x: tensor(count), mean: tensor(channels), var: tensor(channels), gamma: tensor(channels), beta: tensor(channels),
    y: tensor(count),
  };
  // eps is checked by the work itself (native/cpu/norm.cc), so this error crosses from the compute thread.
  const error = await t.throwsAsync(callNative(() => addon.batchNorm(options)), { instanceOf: ArgumentValueError });
  t.regex(error?.message ?? '', /eps must be positive/);
  // The same call with a valid eps still resolves afterwards: the failed task left the compute thread serving.
  await callNative(() => addon.batchNorm({ ...options, eps: 1e-5 }));
  t.true(options.y.every(Number.isFinite));
});

test('setComputeNice lowers the compute thread and its OpenMP team, not the JavaScript thread; bad values are typed errors', (t) => {
  // Process-wide and one-way without privileges: run in a child process of its own.
  const script = `
    import { readdirSync, readFileSync } from 'node:fs';
    const { setComputeNice } = await import(${BACKENDS_MODULE});
    setComputeNice(7);
    const nice = (tid) => Number(readFileSync('/proc/self/task/' + tid + '/stat', 'utf8').split(') ')[1].split(' ')[16]);
    const threads = readdirSync('/proc/self/task').map((tid) => ({ tid: Number(tid), nice: nice(tid) }));
    const errors = [];
    for (const bad of [-1, 20, 1.5, '3']) {
      try { setComputeNice(bad); errors.push('no error for ' + bad); } catch (error) { errors.push(error.name + ': ' + error.message); }
    }
    console.log(JSON.stringify({ pid: process.pid, threads, errors }));`;
  const { pid, threads, errors } = runInChild(script) as { pid: number; threads: Array<{ tid: number; nice: number }>; errors: string[] };
  t.is(threads.find((thread) => thread.tid === pid)?.nice, 0, 'the JavaScript thread keeps its priority');
  const lowered = threads.filter((thread) => thread.nice === 7).length;
  t.true(lowered >= 1, 'the compute thread is at nice 7');
  t.true(lowered < threads.length, `only the compute threads (${lowered} of ${threads.length})`);
  t.is(errors.length, 4);
  for (const error of errors) t.regex(error, /^ArgumentValueError: Expected an integer from 0 to 19 for nice but received/);
});

test('DecodeWorkerPool.setNice lowers its worker threads (started before and after), not the JavaScript thread', (t) => {
  const script = `
    import { readdirSync, readFileSync } from 'node:fs';
    const { DecodeWorkerPool } = await import(${IMAGES_MODULE});
    const notImage = new TextEncoder().encode('not an image');
    const task = { input: notImage, name: 'probe', transform: { kind: 'center-crop', resize: 8, crop: 8 }, key: 0, mean: [0, 0, 0], std: [1, 1, 1] };
    const failed = (pool) => pool.run(task).then(() => 'decoded', (error) => error.name);
    const early = new DecodeWorkerPool(1);
    early.setNice(7); // before its worker starts
    const late = new DecodeWorkerPool(1);
    const outcomes = [await failed(early), await failed(late)];
    late.setNice(5); // after its worker started; the next task runs after the message
    outcomes.push(await failed(late));
    const nice = (tid) => Number(readFileSync('/proc/self/task/' + tid + '/stat', 'utf8').split(') ')[1].split(' ')[16]);
    const threads = readdirSync('/proc/self/task').map((tid) => ({ tid: Number(tid), nice: nice(tid) }));
    const errors = [];
    for (const bad of [-1, 20, 2.5]) {
      try { early.setNice(bad); errors.push('no error for ' + bad); } catch (error) { errors.push(error.name + ': ' + error.message); }
    }
    console.log(JSON.stringify({ pid: process.pid, threads, outcomes, errors }));
    process.exit(0);`;
  const { pid, threads, outcomes, errors } = runInChild(script) as { pid: number; threads: Array<{ tid: number; nice: number }>; outcomes: string[]; errors: string[] };
  t.deepEqual(outcomes, ['FormatError', 'FormatError', 'FormatError'], 'each worker ran its task');
  t.is(threads.find((thread) => thread.tid === pid)?.nice, 0, 'the JavaScript thread keeps its priority');
  t.true(threads.some((thread) => thread.nice === 7), 'the worker started after setNice(7) runs at nice 7');
  t.true(threads.some((thread) => thread.nice === 5), 'the worker started before setNice(5) runs at nice 5');
  t.is(errors.length, 3);
  for (const error of errors) t.regex(error, /^ArgumentValueError: Expected an integer from 0 to 19 for nice but received/);
});

test('the OpenMP spin count defaults to 10000 when the user set neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT', (t) => {
  const script = `
    const { listBackends } = await import(${BACKENDS_MODULE});
    if (!listBackends()[0].available) throw new Error('the CPU addon did not load');
    console.log(JSON.stringify({ spin: process.env.GOMP_SPINCOUNT ?? null, policy: process.env.OMP_WAIT_POLICY ?? null }));`;
  const run = (env: Record<string, string>) => {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([key]) => key !== 'GOMP_SPINCOUNT' && key !== 'OMP_WAIT_POLICY'));
    return runInChild(script, { ...clean, ...env });
  };
  t.deepEqual(run({}), { spin: '10000', policy: null });
  t.deepEqual(run({ GOMP_SPINCOUNT: '5' }), { spin: '5', policy: null }, 'the user\'s spin count is kept');
  t.deepEqual(run({ OMP_WAIT_POLICY: 'active' }), { spin: null, policy: 'active' }, 'a wait policy is left to libgomp');
});
