// lib/serve/server.ts + protocol.ts + metrics.ts: KServe v2 endpoints and response shapes, JSON/binary FP32 and BYTES
// image inference against predict(), classification strings, batching, 503/504, disconnects and a malformed corpus.
// Not for: the batcher's own semantics (batcher.test.ts) or image decoding numerics (images.test.ts).

import { connect } from 'node:net';

import test from 'ava';
import type { ExecutionContext } from 'ava';

import { decodeWorkerPool, imagenetPreprocess, preprocessImage } from '../lib/data/images.js';
import { RepVGGNetwork } from '../lib/engine.js';
import { customSpec } from '../lib/models/repvgg.js';
import { reparameterize } from '../lib/reparam/reparam.js';
import { Batcher } from '../lib/serve/batcher.js';
import { createServer, defaultPreparedBatches, preparedBatchSize, type RepvggServer, type ServerOptions } from '../lib/serve/server.js';
import type { HostTensor } from '../lib/tensor.js';
import { metricValue } from './helpers/metrics.js';
import { makeRng, randomArray, randomTrainState } from './helpers/reference.js';
import { MODEL_FP32, checkClose } from './helpers/tolerances.js';
import { randomImages, randomPng as randomPngOf } from './helpers/random-images.js';

const spec = customSpec({
  inChannels: 3, numClasses: 10, stemChannels: 8, stemStride: 1,
  stageChannels: [8, 16, 16, 32], stageDepths: [1, 1, 1, 1], stageStrides: [1, 2, 2, 2],
});
const state = randomTrainState(spec, makeRng(7));
const labels = Array.from({ length: 10 }, (_, i) => `class ${i}`);
const preprocess = imagenetPreprocess(36, 32);
const rng = makeRng(Date.now() % 1_000_000);

/** The reference: the same weights, deployed, outside the server. */
const reference = RepVGGNetwork.fromDeployed(reparameterize(spec, state), { backend: 'cpu' });
test.after.always(() => reference.dispose());

async function startServer(t: ExecutionContext, options: Partial<ServerOptions> = {}): Promise<RepvggServer> {
  const server = createServer({
    backend: 'cpu',
    weights: { spec, state }, labels, resize: 36, crop: 32, prepareBatches: [1], logLevel: 'silent', maxBatch: 8, ...options,
  });
  t.teardown(() => server.close());
  await server.modelLoaded;
  return server;
}

const randomInput = (shape: [number, number, number, number]): HostTensor => randomImages(shape, rng);

const randomPng = (width: number, height: number): Promise<Buffer> => randomPngOf(width, height, rng);

function jsonInfer(input: HostTensor, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ id: 'r1', inputs: [{ name: 'input', datatype: 'FP32', shape: input.shape, data: Array.from(input.data) }], ...extra });
}

/** A binary-extension body: JSON header (followed by `spaces` spaces) then the given binary part. */
function binaryBody(header: unknown, binary: Uint8Array, spaces = 0): { body: Buffer; length: number } {
  const json = Buffer.from(JSON.stringify(header) + ' '.repeat(spaces));
  return { body: Buffer.concat([json, binary]), length: json.length };
}

/** BYTES elements in binary form: 4-byte little-endian length + bytes each. */
function lengthPrefixed(elements: readonly Uint8Array[]): Buffer {
  return Buffer.concat(elements.flatMap((e) => {
    const length = Buffer.alloc(4);
    length.writeUInt32LE(e.length);
    return [length, Buffer.from(e)];
  }));
}

async function referenceLogits(images: readonly Buffer[]): Promise<Float32Array> {
  const size = 3 * 32 * 32;
  const batch = new Float32Array(images.length * size);
  for (const [i, image] of images.entries()) batch.set(await preprocessImage(image, { preprocess }), i * size);
  return (await reference.predict({ shape: [images.length, 3, 32, 32], data: batch })).data;
}

// Serial tests run before the concurrent ones: no image has been decoded in this process yet.
test.serial('the image decoding workers are started and warmed before the server reports ready', async (t) => {
  const pool = decodeWorkerPool();
  t.is(pool.running, 0, 'no worker before the server');
  await startServer(t);
  t.is(pool.running, pool.size, 'every decoding worker runs once the model is loaded (an RGB model takes images)');
});

test('health, server metadata and model metadata follow the KServe v2 shapes', async (t) => {
  const server = await startServer(t);
  const live = await server.inject({ method: 'GET', url: '/v2/health/live' });
  t.is(live.statusCode, 200);
  t.deepEqual(live.json(), { live: true });
  const ready = await server.inject({ method: 'GET', url: '/v2/health/ready' });
  t.is(ready.statusCode, 200);
  t.deepEqual(ready.json(), { ready: true });
  const meta = await server.inject({ method: 'GET', url: '/v2' });
  t.is(meta.statusCode, 200);
  t.is(typeof meta.json().name, 'string');
  t.is(typeof meta.json().version, 'string');
  t.deepEqual(meta.json().extensions, ['binary_tensor_data', 'classification']);
  const model = await server.inject({ method: 'GET', url: '/v2/models/repvgg' });
  t.is(model.statusCode, 200);
  t.like(model.json(), { name: 'repvgg', platform: 'repvgg' });
  t.deepEqual(model.json().inputs[0], { name: 'input', datatype: 'FP32', shape: [-1, 3, -1, -1] });
  t.deepEqual(model.json().outputs, [{ name: 'logits', datatype: 'FP32', shape: [-1, 10] }]);
  const modelReady = await server.inject({ method: 'GET', url: '/v2/models/repvgg/ready' });
  t.deepEqual([modelReady.statusCode, modelReady.json()], [200, { name: 'repvgg', ready: true }]);
  for (const url of ['/v2/models/other', '/v2/models/other/ready', '/v2/models/repvgg/versions/2', '/v2/models/repvgg/versions/2/ready', '/v2/models/other/versions/1']) {
    const missing = await server.inject({ method: 'GET', url });
    t.is(missing.statusCode, 404, url);
    t.is(typeof missing.json().error, 'string');
  }
  const versioned = await server.inject({ method: 'GET', url: '/v2/models/repvgg/versions/1' });
  t.deepEqual([versioned.statusCode, versioned.json()], [200, model.json()], 'the one version answers as the unversioned URL');
  t.deepEqual(model.json().versions, ['1']);
  const versionReady = await server.inject({ method: 'GET', url: '/v2/models/repvgg/versions/1/ready' });
  t.deepEqual([versionReady.statusCode, versionReady.json()], [200, { name: 'repvgg', ready: true }]);
});

test('a server whose weights fail to load is live but not ready and answers 503', async (t) => {
  const server = createServer({ backend: 'cpu', weights: '/nonexistent/weights.safetensors', logLevel: 'silent' });
  t.teardown(() => server.close());
  await t.throwsAsync(server.modelLoaded);
  t.is((await server.inject({ method: 'GET', url: '/v2/health/live' })).statusCode, 200);
  const ready = await server.inject({ method: 'GET', url: '/v2/health/ready' });
  t.is(ready.statusCode, 503);
  t.is(ready.headers['retry-after'], '1');
  const infer = await server.inject({ method: 'POST', url: '/v2/models/repvgg/infer', payload: jsonInfer(randomInput([1, 3, 32, 32])), headers: { 'content-type': 'application/json' } });
  t.is(infer.statusCode, 503);
  t.is(typeof infer.json().error, 'string');
});

test('JSON FP32 infer equals predict() on the same input', async (t) => {
  const server = await startServer(t);
  const input = randomInput([2, 3, 32, 40]);
  const response = await server.inject({ method: 'POST', url: '/v2/models/repvgg/infer', payload: jsonInfer(input), headers: { 'content-type': 'application/json' } });
  t.is(response.statusCode, 200, response.body);
  const body = response.json();
  t.is(body.model_name, 'repvgg');
  t.is(body.id, 'r1');
  t.is(body.outputs.length, 1);
  t.like(body.outputs[0], { name: 'logits', datatype: 'FP32', shape: [2, 10] });
  const expected = (await reference.predict(input)).data;
  checkClose(t, 'JSON infer', body.outputs[0].data as number[], expected, MODEL_FP32);
  const half = input.data.length / 2;
  const nested = { inputs: [{ name: 'input', datatype: 'FP32', shape: input.shape, data: [Array.from(input.data.subarray(0, half)), Array.from(input.data.subarray(half))] }] };
  const fromNested = await server.inject({ method: 'POST', url: '/v2/models/repvgg/infer', payload: JSON.stringify(nested), headers: { 'content-type': 'application/json' } });
  t.is(fromNested.statusCode, 200, fromNested.body);
  checkClose(t, 'JSON infer, nested data', fromNested.json().outputs[0].data as number[], expected, MODEL_FP32);
  const versioned = await server.inject({ method: 'POST', url: '/v2/models/repvgg/versions/1/infer', payload: jsonInfer(input), headers: { 'content-type': 'application/json' } });
  t.is(versioned.statusCode, 200, versioned.body);
  checkClose(t, 'JSON infer at /versions/1', versioned.json().outputs[0].data as number[], expected, MODEL_FP32);
  const otherVersion = await server.inject({ method: 'POST', url: '/v2/models/repvgg/versions/7/infer', payload: jsonInfer(input), headers: { 'content-type': 'application/json' } });
  t.is(otherVersion.statusCode, 404, otherVersion.body);
  t.regex(otherVersion.json().error, /Expected version '1' of model 'repvgg' but received '7'/);
});

test('binary FP32 infer (request and response) equals predict(), with the tensor 4-byte aligned in the body or not', async (t) => {
  const server = await startServer(t);
  const input = randomInput([3, 3, 32, 32]);
  const expected = (await reference.predict(input)).data;
  const header = {
    inputs: [{ name: 'input', datatype: 'FP32', shape: input.shape, parameters: { binary_data_size: input.data.byteLength } }],
    parameters: { binary_data_output: true },
  };
  const jsonLength = Buffer.byteLength(JSON.stringify(header));
  for (const misalignment of [0, 1, 2, 3]) {
    const { body, length } = binaryBody(header, new Uint8Array(input.data.buffer), (4 - (jsonLength % 4) + misalignment) % 4);
    t.is(length % 4, misalignment);
    const response = await server.inject({
      method: 'POST', url: '/v2/models/repvgg/infer', payload: body,
      headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(length) },
    });
    t.is(response.statusCode, 200, response.body);
    t.is(response.headers['content-type'], 'application/octet-stream');
    const headerLength = Number(response.headers['inference-header-content-length']);
    const raw = response.rawPayload;
    const json = JSON.parse(raw.subarray(0, headerLength).toString('utf8'));
    t.like(json.outputs[0], { name: 'logits', datatype: 'FP32', shape: [3, 10], parameters: { binary_data_size: 3 * 10 * 4 } });
    t.is(json.outputs[0].data, undefined);
    const tail = raw.subarray(headerLength);
    t.is(tail.length, 120);
    const logits = new Float32Array(tail.buffer.slice(tail.byteOffset, tail.byteOffset + tail.length));
    checkClose(t, `binary infer, tensor at offset ${length}`, logits, expected, MODEL_FP32);
  }
});

test('BYTES images (JSON base64 and binary) equal preprocessImage + predict(), and the classification parameter', async (t) => {
  const server = await startServer(t);
  const images = [await randomPng(45, 60), await randomPng(70, 33)];
  const expected = await referenceLogits(images);
  const asJson = await server.inject({
    method: 'POST', url: '/v2/models/repvgg/infer', headers: { 'content-type': 'application/json' },
    payload: JSON.stringify({ inputs: [{ name: 'image', datatype: 'BYTES', shape: [2], data: images.map((b) => b.toString('base64')) }] }),
  });
  t.is(asJson.statusCode, 200, asJson.body);
  t.like(asJson.json().outputs[0], { datatype: 'FP32', shape: [2, 10] });
  checkClose(t, 'BYTES JSON', asJson.json().outputs[0].data as number[], expected, MODEL_FP32);

  const header = {
    inputs: [{ name: 'image', datatype: 'BYTES', shape: [2, 1], parameters: { binary_data_size: lengthPrefixed(images).length } }],
    outputs: [{ name: 'logits', parameters: { classification: 3 } }],
  };
  const { body, length } = binaryBody(header, lengthPrefixed(images));
  const asBinary = await server.inject({
    method: 'POST', url: '/v2/models/repvgg/infer', payload: body,
    headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(length) },
  });
  t.is(asBinary.statusCode, 200, asBinary.body);
  const output = asBinary.json().outputs[0];
  t.like(output, { name: 'logits', datatype: 'BYTES', shape: [2, 3] });
  t.is(output.data.length, 6);
  for (let image = 0; image < 2; image++) {
    const row = expected.subarray(image * 10, image * 10 + 10);
    const order = Array.from(row.keys()).sort((a, b) => row[b]! - row[a]!);
    for (let k = 0; k < 3; k++) {
      const match = /^(-?[\d.e+-]+):(\d+):(.+)$/.exec(output.data[image * 3 + k] as string);
      t.truthy(match, String(output.data[image * 3 + k]));
      t.is(Number(match![2]), order[k]!);
      t.is(match![3], `class ${order[k]}`);
      checkClose(t, 'classification score', [Number(match![1])], [row[order[k]!]!], MODEL_FP32);
    }
  }
});

test('binary classification output is length-prefixed BYTES', async (t) => {
  const server = await startServer(t);
  const input = randomInput([1, 3, 32, 32]);
  const response = await server.inject({
    method: 'POST', url: '/v2/models/repvgg/infer', headers: { 'content-type': 'application/json' },
    payload: jsonInfer(input, { outputs: [{ name: 'logits', parameters: { classification: 2, binary_data: true } }] }),
  });
  t.is(response.statusCode, 200, response.body);
  const headerLength = Number(response.headers['inference-header-content-length']);
  const json = JSON.parse(response.rawPayload.subarray(0, headerLength).toString());
  const tail = response.rawPayload.subarray(headerLength);
  t.is(json.outputs[0].parameters.binary_data_size, tail.length);
  const first = tail.readUInt32LE(0);
  const text = tail.subarray(4, 4 + first).toString();
  const logits = (await reference.predict(input)).data;
  const best = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]!)[0]!;
  t.regex(text, new RegExp(`:${best}:class ${best}$`));
  const second = tail.readUInt32LE(4 + first);
  t.is(4 + first + 4 + second, tail.length);
});

test('/v1/classify answers a raw image and a multipart upload as in infer --json', async (t) => {
  const server = await startServer(t);
  const images = [await randomPng(40, 40), await randomPng(50, 36)];
  const expected = await referenceLogits(images);
  const single = await server.inject({ method: 'POST', url: '/v1/classify?top=3', payload: images[0]!, headers: { 'content-type': 'image/png' } });
  t.is(single.statusCode, 200, single.body);
  const top = single.json().top as Array<{ index: number; label: string; probability: number }>;
  t.is(top.length, 3);
  const row = expected.subarray(0, 10);
  const order = Array.from(row.keys()).sort((a, b) => row[b]! - row[a]!);
  t.deepEqual(top.map((c) => c.index), order.slice(0, 3));
  t.deepEqual(top.map((c) => c.label), order.slice(0, 3).map((i) => `class ${i}`));
  t.true(top.every((c) => c.probability > 0 && c.probability < 1));

  const boundary = 'repvggboundary';
  const body = Buffer.concat([
    ...images.flatMap((image, i) => [
      Buffer.from(`--${boundary}\r\ncontent-disposition: form-data; name="file${i}"; filename="img${i}.png"\r\ncontent-type: image/png\r\n\r\n`),
      image, Buffer.from('\r\n'),
    ]),
    Buffer.from(`--${boundary}--\r\n`),
  ]);
  const multi = await server.inject({ method: 'POST', url: '/v1/classify', payload: body, headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } });
  t.is(multi.statusCode, 200, multi.body);
  const results = multi.json() as Array<{ file: string; top: Array<{ index: number }> }>;
  t.deepEqual(results.map((r) => r.file), ['img0.png', 'img1.png']);
  t.is(results[1]!.top.length, 5);
  const row1 = expected.subarray(10, 20);
  t.is(results[1]!.top[0]!.index, Array.from(row1.keys()).sort((a, b) => row1[b]! - row1[a]!)[0]!);
});

test('concurrent requests share a batch (batch-size histogram in /metrics)', async (t) => {
  const server = await startServer(t, { maxBatch: 4, maxDelayMs: 60_000 });
  const inputs = Array.from({ length: 4 }, () => randomInput([1, 3, 32, 32]));
  const responses = await Promise.all(inputs.map((input) =>
    server.inject({ method: 'POST', url: '/v2/models/repvgg/infer', payload: jsonInfer(input), headers: { 'content-type': 'application/json' } })));
  for (const [i, response] of responses.entries()) {
    t.is(response.statusCode, 200, response.body);
    checkClose(t, `batched request ${i}`, response.json().outputs[0].data as number[], (await reference.predict(inputs[i]!)).data, MODEL_FP32);
  }
  const metrics = (await server.inject({ method: 'GET', url: '/metrics' })).body;
  t.is(metricValue(metrics, 'repvgg_batch_size_count'), 1, 'one batch');
  t.is(metricValue(metrics, 'repvgg_batch_size_sum'), 4, 'of four images');
  t.is(metricValue(metrics, 'repvgg_requests_total{outcome="success"}'), 4);
  t.is(metricValue(metrics, 'repvgg_images_total'), 4);
  t.true(metrics.includes('nodejs_eventloop_lag_seconds'), 'default metrics on the server registry');
  t.true(metrics.includes('repvgg_queue_duration_seconds_count 4'));
  t.true(metrics.includes('repvgg_compute_duration_seconds_count 1'));
});

// The server decodes images into arrays it reuses (lib/serve/sample-pool.ts): one handed out again too early would
// be overwritten by another request's image before its own batch ran.
test('concurrent image requests, some failing or expiring, each get their own image\'s result round after round', async (t) => {
  const server = await startServer(t, { maxBatch: 4, maxDelayMs: 5 });
  const infer = (image: Buffer, timeoutMicroseconds?: number) => server.inject({
    method: 'POST', url: '/v2/models/repvgg/infer', headers: { 'content-type': 'application/json' },
    payload: JSON.stringify({
      inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: [image.toString('base64')] }],
      ...(timeoutMicroseconds !== undefined && { parameters: { timeout: timeoutMicroseconds } }),
    }),
  });
  for (let round = 0; round < 3; round++) {
    const images = await Promise.all(Array.from({ length: 6 }, (_, i) => randomPng(30 + 7 * i + round, 50 - 3 * i)));
    const expected = await referenceLogits(images);
    const [responses, broken, expired] = await Promise.all([
      Promise.all(images.map((image) => infer(image))),
      infer(Buffer.from('not an image at all')),
      infer(images[0]!, 1), // 1 microsecond: expired before its batch
    ]);
    for (const [i, response] of responses.entries()) {
      t.is(response.statusCode, 200, response.body);
      checkClose(t, `round ${round} image ${i}`, response.json().outputs[0].data as number[], expected.subarray(10 * i, 10 * i + 10), MODEL_FP32);
    }
    t.is(broken.statusCode, 400, broken.body);
    t.is(expired.statusCode, 504, expired.body);
  }
});

// Binary tensors are read in place from request bodies in reused buffers (lib/serve/body.ts BodyPool): one handed out
// again before its batch ran would carry another request's tensor into that batch.
test('concurrent binary FP32 requests, some refused or expiring, each get their own tensor\'s result round after round', async (t) => {
  const server = await startServer(t, { maxBatch: 4, maxDelayMs: 20 });
  const infer = (input: HostTensor, timeoutMicroseconds?: number) => {
    const { body, length } = binaryBody({
      inputs: [{ name: 'input', datatype: 'FP32', shape: input.shape, parameters: { binary_data_size: input.data.byteLength } }],
      parameters: { binary_data_output: true, ...(timeoutMicroseconds !== undefined && { timeout: timeoutMicroseconds }) },
    }, new Uint8Array(input.data.buffer, input.data.byteOffset, input.data.byteLength));
    return server.inject({
      method: 'POST', url: '/v2/models/repvgg/infer', payload: body,
      headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(length) },
    });
  };
  const logitsOf = (raw: Buffer, headerLength: number): Float32Array => {
    const tail = raw.subarray(headerLength);
    return new Float32Array(tail.buffer.slice(tail.byteOffset, tail.byteOffset + tail.length));
  };
  for (let round = 0; round < 3; round++) {
    const inputs = Array.from({ length: 6 }, () => randomInput([1, 3, 32, 32]));
    // One after another, so that later bodies are read while earlier requests wait for their batch (maxDelayMs).
    const answers = [];
    for (const input of inputs) {
      answers.push(infer(input));
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    const [responses, refused, expired] = await Promise.all([
      Promise.all(answers),
      infer({ shape: [1, 2, 32, 32], data: randomInput([1, 2, 32, 32]).data }), // 400: two channels, not three
      infer(inputs[0]!, 1), // 1 microsecond: expired before its batch
    ]);
    for (const [i, response] of responses.entries()) {
      t.is(response.statusCode, 200, response.body);
      const expected = (await reference.predict(inputs[i]!)).data;
      checkClose(t, `round ${round} tensor ${i}`, logitsOf(response.rawPayload, Number(response.headers['inference-header-content-length'])), expected, MODEL_FP32);
    }
    t.is(refused.statusCode, 400, refused.body);
    t.is(expired.statusCode, 504, expired.body);
  }
});

test('queue overflow answers 503 with Retry-After; close() drains the accepted request', async (t) => {
  const server = createServer({ backend: 'cpu', weights: { spec, state }, labels, prepareBatches: [1], logLevel: 'silent', maxBatch: 4, maxQueue: 4, maxDelayMs: 60_000 });
  t.teardown(() => server.close());
  await server.modelLoaded;
  const post = (input: HostTensor) =>
    server.inject({ method: 'POST', url: '/v2/models/repvgg/infer', payload: jsonInfer(input), headers: { 'content-type': 'application/json' } });
  const waiting = post(randomInput([3, 3, 32, 32])); // a partial batch that waits for more requests
  let queued = 0;
  for (let poll = 0; poll < 1000 && queued !== 3; poll++) {
    queued = metricValue((await server.inject({ method: 'GET', url: '/metrics' })).body, 'repvgg_queue_images');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  t.is(queued, 3);
  const rejected = await post(randomInput([2, 3, 32, 32]));
  t.is(rejected.statusCode, 503);
  t.true(Number(rejected.headers['retry-after']) >= 1);
  t.regex(rejected.json().error as string, /queue/);
  const other = post(randomInput([1, 3, 40, 40])); // another image size: queued beside the waiting batch, the queue is full
  for (let poll = 0; poll < 1000 && queued !== 4; poll++) {
    queued = metricValue((await server.inject({ method: 'GET', url: '/metrics' })).body, 'repvgg_queue_images');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  t.is(queued, 4);
  const unread = await server.inject({ method: 'POST', url: '/v2/models/repvgg/infer', payload: 'not JSON at all', headers: { 'content-type': 'application/json' } });
  t.is(unread.statusCode, 503, 'with the queue full a request is refused before its body is parsed (else: 400)');
  t.true(Number(unread.headers['retry-after']) >= 1);
  t.is(metricValue((await server.inject({ method: 'GET', url: '/metrics' })).body, 'repvgg_requests_total{outcome="rejected"}'), 2);
  await server.close();
  t.is((await waiting).statusCode, 200, 'drained on close');
  t.is((await other).statusCode, 200, 'drained on close');
});

test('a passed deadline answers 504; the timeout parameter is in microseconds', async (t) => {
  const server = await startServer(t, { maxBatch: 4, maxDelayMs: 60_000 });
  const response = await server.inject({
    method: 'POST', url: '/v2/models/repvgg/infer', headers: { 'content-type': 'application/json' },
    payload: jsonInfer(randomInput([1, 3, 32, 32]), { parameters: { timeout: 20_000 } }),
  });
  t.is(response.statusCode, 504);
  t.is(typeof response.json().error, 'string');
  const png = await randomPng(40, 40);
  const slow = await server.inject({ method: 'POST', url: '/v1/classify?timeout_ms=10', payload: png, headers: { 'content-type': 'image/png' } });
  t.is(slow.statusCode, 504);
  const metrics = (await server.inject({ method: 'GET', url: '/metrics' })).body;
  t.is(metricValue(metrics, 'repvgg_requests_total{outcome="timed_out"}'), 2);
});

test('a client that disconnects cancels its queued request', async (t) => {
  const server = await startServer(t, { maxBatch: 4, maxDelayMs: 60_000 });
  await server.listen({ host: '127.0.0.1', port: 0 });
  const address = server.server.address();
  if (address === null || typeof address === 'string') return t.fail('no TCP address');
  const payload = jsonInfer(randomInput([1, 3, 32, 32]));
  const socket = connect(address.port, '127.0.0.1');
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.write(`POST /v2/models/repvgg/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`);
  const scrape = async (): Promise<string> => (await server.inject({ method: 'GET', url: '/metrics' })).body;
  let queued = 0;
  for (let poll = 0; poll < 1000 && queued !== 1; poll++) {
    queued = metricValue(await scrape(), 'repvgg_queue_images');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  t.is(queued, 1, 'the request waits in the queue');
  socket.destroy();
  let cancelled = 0;
  for (let poll = 0; poll < 1000 && cancelled !== 1; poll++) {
    cancelled = metricValue(await scrape(), 'repvgg_requests_total{outcome="cancelled"}');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  t.is(cancelled, 1);
  t.is(metricValue(await scrape(), 'repvgg_queue_images'), 0);
});

test('a malformed-request corpus gets the right status each, and the server keeps serving', async (t) => {
  const server = await startServer(t, { bodyLimit: 64 * 1024, maxPixels: 2000 });
  const good = jsonInfer(randomInput([1, 3, 16, 16]));
  const notImage = Buffer.from(randomArray(64, rng, 1).buffer);
  const fp32 = randomInput([1, 3, 16, 16]);
  const binaryHeader = (size: number) => ({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 16, 16], parameters: { binary_data_size: size } }] });
  const lying = binaryBody(binaryHeader(fp32.data.byteLength + 4), new Uint8Array(fp32.data.buffer));
  const short = binaryBody(binaryHeader(100), new Uint8Array(fp32.data.buffer).subarray(0, 100));
  const bytesTruncated = binaryBody(
    { inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], parameters: { binary_data_size: 6 } }] },
    Buffer.from([200, 0, 0, 0, 1, 2]),
  );
  const json = { 'content-type': 'application/json' };
  const octet = (length: number | string) => ({ 'content-type': 'application/octet-stream', 'inference-header-content-length': String(length) });
  const infer = '/v2/models/repvgg/infer';
  const corpus: Array<{ name: string; url: string; payload: string | Buffer; headers: Record<string, string>; status: number }> = [
    { name: 'truncated JSON', url: infer, payload: good.slice(0, good.length / 2), headers: json, status: 400 },
    { name: 'empty body', url: infer, payload: '', headers: json, status: 400 },
    { name: 'JSON array', url: infer, payload: '[1, 2]', headers: json, status: 400 },
    { name: 'wrong content type', url: infer, payload: good, headers: { 'content-type': 'text/plain' }, status: 415 },
    { name: 'unknown model', url: '/v2/models/nope/infer', payload: good, headers: json, status: 404 },
    { name: 'header length beyond the body', url: infer, payload: lying.body, headers: octet(lying.body.length + 10), status: 400 },
    { name: 'header length not a number', url: infer, payload: lying.body, headers: octet('12abc'), status: 400 },
    { name: 'header length cuts the JSON', url: infer, payload: lying.body, headers: octet(lying.length - 5), status: 400 },
    { name: 'binary_data_size above the bytes sent', url: infer, payload: lying.body, headers: octet(lying.length), status: 400 },
    { name: 'binary tensor shorter than its shape', url: infer, payload: short.body, headers: octet(short.length), status: 400 },
    { name: 'BYTES element length beyond the data', url: infer, payload: bytesTruncated.body, headers: octet(bytesTruncated.length), status: 400 },
    { name: 'huge declared shape', url: infer, payload: JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 1e6, 1e6], data: [1] }] }), headers: json, status: 400 },
    { name: 'declared shape beyond 2^31 elements', url: infer, payload: JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [4e9, 4e9, 4e9, 4e9], data: [1] }] }), headers: json, status: 400 },
    { name: 'data shorter than the shape', url: infer, payload: JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 32, 32], data: [1, 2, 3] }] }), headers: json, status: 400 },
    { name: 'wrong channel count', url: infer, payload: jsonInfer(randomInput([1, 4, 16, 16])), headers: json, status: 400 },
    { name: 'image smaller than the stride', url: infer, payload: jsonInfer(randomInput([1, 3, 4, 4])), headers: json, status: 400 },
    { name: 'more images than maxBatch', url: infer, payload: jsonInfer(randomInput([9, 3, 8, 8])), headers: json, status: 400 },
    { name: 'wrong datatype', url: infer, payload: good.replace('"FP32"', '"INT64"'), headers: json, status: 400 },
    { name: 'strings in FP32 data', url: infer, payload: JSON.stringify({ inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 3, 8, 8], data: Array(192).fill('x') }] }), headers: json, status: 400 },
    { name: 'two inputs', url: infer, payload: JSON.stringify({ inputs: [JSON.parse(good).inputs[0], JSON.parse(good).inputs[0]] }), headers: json, status: 400 },
    { name: 'unknown output', url: infer, payload: jsonInfer(fp32, { outputs: [{ name: 'probs' }] }), headers: json, status: 400 },
    { name: 'negative classification', url: infer, payload: jsonInfer(fp32, { outputs: [{ name: 'logits', parameters: { classification: -1 } }] }), headers: json, status: 400 },
    { name: 'bad timeout', url: infer, payload: jsonInfer(fp32, { parameters: { timeout: 'soon' } }), headers: json, status: 400 },
    { name: 'BYTES not base64', url: infer, payload: JSON.stringify({ inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: ['not base64!'] }] }), headers: json, status: 400 },
    { name: 'BYTES non-image bytes', url: infer, payload: JSON.stringify({ inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: [notImage.toString('base64')] }] }), headers: json, status: 400 },
    { name: 'classify non-image bytes', url: '/v1/classify', payload: notImage, headers: { 'content-type': 'image/jpeg' }, status: 400 },
    { name: 'classify image over maxPixels', url: '/v1/classify', payload: await randomPng(50, 50), headers: { 'content-type': 'image/png' }, status: 400 },
    { name: 'classify wrong content type', url: '/v1/classify', payload: good, headers: json, status: 415 },
    { name: 'classify bad top', url: '/v1/classify?top=0', payload: await randomPng(40, 40), headers: { 'content-type': 'image/png' }, status: 400 },
    { name: 'body over the limit', url: infer, payload: Buffer.alloc(65 * 1024, 32), headers: json, status: 413 },
    { name: 'image over the limit', url: '/v1/classify', payload: Buffer.alloc(65 * 1024, 1), headers: { 'content-type': 'image/png' }, status: 413 },
  ];
  for (const entry of corpus) {
    const response = await server.inject({ method: 'POST', url: entry.url, payload: entry.payload, headers: entry.headers });
    t.is(response.statusCode, entry.status, `${entry.name}: ${response.body}`);
    t.is(typeof response.json().error, 'string', entry.name);
  }
  const after = await server.inject({ method: 'POST', url: infer, payload: good, headers: json });
  t.is(after.statusCode, 200, 'still serving');
  const metrics = (await server.inject({ method: 'GET', url: '/metrics' })).body;
  t.is(metricValue(metrics, 'repvgg_requests_total{outcome="bad_input"}'), corpus.length);
  t.is(metricValue(metrics, 'repvgg_requests_total{outcome="success"}'), 1);
});

test('batches run at a prepared batch size: padded with zero images, their own rows returned', async (t) => {
  t.deepEqual(defaultPreparedBatches(32), [1, 2, 4, 8, 16, 32]);
  t.deepEqual(defaultPreparedBatches(24), [1, 2, 4, 8, 16, 24]);
  t.deepEqual(defaultPreparedBatches(128), [2, 4, 8, 16, 32, 64, 128], 'at most 7: the engine keeps 8 plans');
  t.is(preparedBatchSize(3, [3, 32, 32], [1, 4, 8], 32), 4, 'the smallest prepared size holding 3');
  t.is(preparedBatchSize(3, [3, 48, 48], [1, 4, 8], 32), 3, 'other image sizes run as they are');
  t.is(preparedBatchSize(9, [3, 32, 32], [1, 4, 8, 16], 32), 16);
  // Batches split by images on 2 threads (even sizes, or 8 and more) run on the prepared plans without padding.
  const splitOnTwo = (size: number): boolean => size % 2 === 0 || size >= 8;
  t.is(preparedBatchSize(19, [3, 32, 32], [1, 2, 4, 8, 16, 32], 32, splitOnTwo), 19);
  t.is(preparedBatchSize(5, [3, 32, 32], [1, 2, 4, 8, 16, 32], 32, splitOnTwo), 6, '5 stays on one plan: the next size that splits');
  t.is(preparedBatchSize(3, [3, 32, 32], [1, 2, 4, 8, 16, 32], 32, splitOnTwo), 4);
  t.is(preparedBatchSize(40, [3, 32, 32], [1, 2, 4, 8, 16, 32], 32, splitOnTwo), 40, 'above every prepared size: as it is');
  const x = randomInput([3, 3, 32, 32]);
  const alone = await reference.predict(x);
  const seen: HostTensor[] = [];
  const batcher = new Batcher({
    run: (batch) => (seen.push({ shape: [...batch.shape], data: batch.data.slice() }), reference.predict(batch)),
    paddedSize: (images, imageShape) => preparedBatchSize(images, imageShape, [1, 4, 8], 32),
    maxBatch: 8,
  });
  const full = [randomInput([2, 3, 32, 32]), randomInput([2, 3, 32, 32])]; // one batch of 4: every row of its buffer
  await Promise.all(full.map((half) => batcher.submit({ shape: half.shape, data: half.data })));
  seen.length = 0;
  const split = [x.data.subarray(0, 3 * 32 * 32), x.data.subarray(3 * 32 * 32)];
  const [first, rest] = await Promise.all([
    batcher.submit({ shape: [1, 3, 32, 32], data: split[0]! }),
    batcher.submit({ shape: [2, 3, 32, 32], data: split[1]! }),
  ]);
  t.deepEqual(seen.map((batch) => batch.shape), [[4, 3, 32, 32]], 'one batch of 3 run at 4');
  t.true(seen[0]!.data.subarray(3 * 3 * 32 * 32).every((v) => v === 0), 'the padding row is zeros, also in a reused buffer');
  t.deepEqual(first!.shape, [1, alone.shape[1]]);
  t.deepEqual(rest!.shape, [2, alone.shape[1]]);
  checkClose(t, 'padded rows vs the batch alone', Float32Array.from([...first!.data, ...rest!.data]), alone.data, MODEL_FP32);
  await batcher.drain();
});
