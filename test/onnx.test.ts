// ONNX export: exported models run in onnxruntime-node and match a float64 forward of the deployed network;
// the protobuf decodes back with the expected graph; inconsistent models are rejected.
// Not for: the reparam math (test/reparam.test.ts) or our own engine's accuracy.

import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import test from 'ava';
import onnxProto from 'onnx-proto';
import { InferenceSession, Tensor } from 'onnxruntime-node';

import { ArgumentValueError, ShapeError } from '../lib/errors.js';
import { encodeOnnx, exportOnnx } from '../lib/io/onnx.js';
import { blocksOf, customSpec, featureChannels } from '../lib/models/repvgg.js';
import type { RepVGGSpec } from '../lib/models/repvgg.js';
import type { DeployedLayer, DeployedModel } from '../lib/reparam/types.js';
import type { HostTensor } from '../lib/tensor.js';
import { makeRng, modelDeployRef, randomArray } from './helpers/reference.js';
import { ONNX, checkClose } from './helpers/tolerances.js';

const { onnx } = onnxProto;

/** A deployed model with random non-zero weights for `spec`; SE weights on every block when the spec asks for SE. */
function randomDeployedModel(spec: RepVGGSpec, seed: number): DeployedModel {
  const rng = makeRng(seed);
  const layers: DeployedLayer[] = blocksOf(spec).map((block) => {
    const { name, inChannels, outChannels, stride, groups, seChannels } = block;
    const fanIn = (inChannels / groups) * 9;
    const layer = {
      name,
      inChannels,
      outChannels,
      stride,
      groups,
      weight: randomArray(outChannels * fanIn, rng, Math.sqrt(3 / fanIn)), // [out, in/g, 3, 3]
      bias: randomArray(outChannels, rng, 0.1), // [out]
    };
    if (seChannels === 0) return layer;
    return {
      ...layer,
      se: {
        channels: seChannels,
        downWeight: randomArray(seChannels * outChannels, rng, Math.sqrt(3 / outChannels)), // [S, out]
        downBias: randomArray(seChannels, rng, 0.1), // [S]
        upWeight: randomArray(outChannels * seChannels, rng, Math.sqrt(3 / seChannels)), // [out, S]
        upBias: randomArray(outChannels, rng, 0.1), // [out]
      },
    };
  });
  const features = featureChannels(spec);
  return {
    spec,
    layers,
    linearWeight: randomArray(spec.numClasses * features, rng, Math.sqrt(3 / features)), // [K, C]
    linearBias: randomArray(spec.numClasses, rng, 0.1), // [K]
  };
}

/** Grouped blocks (2 and 4) and stride 2 in the stem and two stages, no SE. */
const groupedSpec = customSpec({
  inChannels: 3,
  numClasses: 7,
  stemChannels: 8,
  stemStride: 2,
  stageChannels: [8, 12, 16, 16],
  stageDepths: [2, 1, 1, 1],
  stageStrides: [1, 2, 1, 2],
  groups: [1, 2, 4, 2, 1],
});

/** SE on every block (reduction 4), groups 2 on even-numbered blocks. */
const seSpec = customSpec({
  inChannels: 2,
  numClasses: 5,
  stemChannels: 8,
  stemStride: 1,
  stageChannels: [8, 8, 16, 16],
  stageDepths: [1, 1, 1, 1],
  stageStrides: [2, 1, 2, 1],
  groups: 2,
  seReduction: 4,
});

function randomInput(shape: readonly number[], seed: number): HostTensor {
  return { shape, data: randomArray(shape.reduce((p, d) => p * d, 1), makeRng(seed), 1) };
}

async function runOnnxruntime(bytes: Uint8Array, x: HostTensor): Promise<{ dims: readonly number[]; data: Float32Array }> {
  const session = await InferenceSession.create(bytes);
  try {
    const outputs = await session.run({ input: new Tensor('float32', x.data, x.shape) });
    const logits = outputs['logits'];
    if (logits === undefined) throw new Error('onnxruntime returned no logits output');
    return { dims: logits.dims, data: logits.data as Float32Array };
  } finally {
    await session.release();
  }
}

for (const [title, spec, inputShape] of [
  ['grouped, strided model', groupedSpec, [3, 3, 33, 29]],
  ['SE model', seSpec, [3, 2, 33, 29]],
] as const) {
  test(`${title}: onnxruntime logits match the float64 reference`, async (t) => {
    const model = randomDeployedModel(spec, 1234);
    const x = randomInput(inputShape, 99); // [B, Cin, H, W]
    const logits = await runOnnxruntime(encodeOnnx(model), x); // [B, K]
    t.deepEqual(logits.dims, [inputShape[0], spec.numClasses]);
    checkClose(t, `${title} logits`, logits.data, modelDeployRef(model, x).logits, ONNX);
  });
}

test('the symbolic batch and spatial dims accept other sizes', async (t) => {
  const model = randomDeployedModel(groupedSpec, 7);
  const x = randomInput([1, 3, 16, 40], 8);
  const logits = await runOnnxruntime(encodeOnnx(model, { opset: 17 }), x);
  t.deepEqual(logits.dims, [1, groupedSpec.numClasses]);
  checkClose(t, 'opset 17 logits', logits.data, modelDeployRef(model, x).logits, ONNX);
});

test('the exported model decodes back with onnx-proto', (t) => {
  const model = randomDeployedModel(seSpec, 5);
  const decoded = onnx.ModelProto.decode(encodeOnnx(model, { producerVersion: '9.9.9' }));
  t.is(Number(decoded.irVersion), 8);
  t.is(decoded.producerName, 'repvgg');
  t.is(decoded.producerVersion, '9.9.9');
  t.is(decoded.opsetImport.length, 1);
  t.is(Number(decoded.opsetImport[0]?.version), 13);

  const graph = decoded.graph;
  if (!(graph instanceof onnx.GraphProto)) return t.fail('graph missing');
  const perBlock = ['Conv', 'GlobalAveragePool', 'Conv', 'Relu', 'Conv', 'Sigmoid', 'Mul', 'Relu'];
  const expectedOps = [...model.layers.flatMap(() => perBlock), 'GlobalAveragePool', 'Flatten', 'Gemm'];
  t.deepEqual(
    graph.node.map((n) => n.opType),
    expectedOps,
  );

  const dims = (info: onnxProto.onnx.IValueInfoProto | undefined): (string | number)[] =>
    (info?.type?.tensorType?.shape?.dim ?? []).map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue)));
  t.deepEqual(graph.input.map((i) => i.name), ['input']);
  t.deepEqual(dims(graph.input[0]), ['batch', 2, 'height', 'width']);
  t.deepEqual(graph.output.map((o) => o.name), ['logits']);
  t.deepEqual(dims(graph.output[0]), ['batch', 5]);

  const stem = model.layers[0];
  if (stem === undefined) return t.fail('model has no layers');
  const firstConv = graph.node[0];
  t.deepEqual(firstConv?.input, ['input', 'stage0.rbr_reparam.weight', 'stage0.rbr_reparam.bias']);
  const attribute = (node: onnxProto.onnx.INodeProto | undefined, name: string) =>
    node?.attribute?.find((a) => a.name === name);
  t.deepEqual(attribute(firstConv, 'pads')?.ints?.map(Number), [1, 1, 1, 1]);
  t.deepEqual(attribute(firstConv, 'strides')?.ints?.map(Number), [stem.stride, stem.stride]);
  t.is(Number(attribute(firstConv, 'group')?.i), 1);
  const gemm = graph.node.find((n) => n.opType === 'Gemm');
  t.is(Number(attribute(gemm, 'transB')?.i), 1);

  const weight = graph.initializer.find((i) => i.name === 'stage0.rbr_reparam.weight');
  if (weight === undefined) return t.fail('stem weight initializer missing');
  t.deepEqual(weight.dims?.map(Number), [stem.outChannels, stem.inChannels, 3, 3]);
  t.is(weight.dataType, onnx.TensorProto.DataType.FLOAT);
  const raw = weight.rawData ?? new Uint8Array();
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const decodedWeight = Float32Array.from({ length: raw.byteLength / 4 }, (_, i) => view.getFloat32(i * 4, true));
  t.deepEqual(decodedWeight, stem.weight);
  t.truthy(graph.initializer.find((i) => i.name === 'stage1.0.se.down.weight'));
  t.truthy(graph.initializer.find((i) => i.name === 'linear.weight'));
});

test('a weight whose length disagrees with the channels is rejected, naming the layer', (t) => {
  const model = randomDeployedModel(groupedSpec, 3);
  const layers = model.layers.map((layer) =>
    layer.name === 'stage2.0' ? { ...layer, weight: new Float32Array(layer.weight.length + 9) } : layer,
  );
  const error = t.throws(() => encodeOnnx({ ...model, layers }), { instanceOf: ShapeError });
  t.regex(error?.message ?? '', /stage2\.0/);
  t.is(error?.code, 'ERR_SHAPE');
});

test('a classifier that does not fit the last layer is rejected', (t) => {
  const model = randomDeployedModel(groupedSpec, 3);
  const error = t.throws(() => encodeOnnx({ ...model, linearWeight: new Float32Array(7 * 12) }), { instanceOf: ShapeError });
  t.regex(error?.message ?? '', /linear weight/);
});

test('an opset below 7 is rejected', (t) => {
  const model = randomDeployedModel(groupedSpec, 3);
  t.throws(() => encodeOnnx(model, { opset: 6 }), { instanceOf: ArgumentValueError });
});

test('exportOnnx writes a loadable file and leaves no temporary behind', async (t) => {
  const directory = await mkdtemp(join(tmpdir(), 'repvgg-onnx-'));
  try {
    const model = randomDeployedModel(seSpec, 11);
    const path = join(directory, 'model.onnx');
    await exportOnnx(path, model);
    const bytes = await readFile(path);
    t.deepEqual(new Uint8Array(bytes), encodeOnnx(model));
    t.deepEqual(await readdir(directory), ['model.onnx']);
    const x = randomInput([2, 2, 9, 11], 12);
    const logits = await runOnnxruntime(bytes, x);
    checkClose(t, 'file logits', logits.data, modelDeployRef(model, x).logits, ONNX);
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
});
