// ONNX export of a deployed RepVGG: builds a ModelProto (one Conv per block, optional SE, then the classifier)
// with onnx-proto's generated protobuf code and writes it to disk. With int8 calibration (`repvgg quantize`) the
// int8 layers are written in the QDQ format onnxruntime fuses into QLinearConv: the input through
// QuantizeLinear/DequantizeLinear (u8, the layer's input scale), s8 weights and s32 bias through DequantizeLinear
// per output channel, then a float Conv — the same arithmetic as our int8 program.
// Not for: importing ONNX files, exporting training-time (multi-branch) networks, or running models.

import { endianness } from 'node:os';

import onnxProto from 'onnx-proto';

import { ArgumentValueError, ShapeError, describeValue } from '../errors.js';
import { checkQuantizationFits, integerWeights, type LayerQuantization, type ModelQuantization } from '../quant/params.js';
import type { DeployedLayer, DeployedModel, SEWeights } from '../reparam/types.js';
import { writeFileAtomic } from './atomic.js';

// onnx-proto is a CommonJS bundle that assigns `module.exports = $root`, so Node's ESM loader only exposes it as
// the default export; a named `import { onnx }` fails at runtime.
const { onnx } = onnxProto;

/** Lowest opset whose Gemm and Mul broadcast the way this graph needs (unidirectional/numpy broadcasting). */
const MIN_OPSET = 7;
const DEFAULT_OPSET = 13;
const IR_VERSION = 8;
const PRODUCER_NAME = 'repvgg';
const FLOAT = onnx.TensorProto.DataType.FLOAT;
/** Per-axis DequantizeLinear (per-output-channel weight scales) needs opset 13. */
const MIN_QDQ_OPSET = 13;
const LITTLE_ENDIAN_HOST = endianness() === 'LE';

export const ONNX_INPUT_NAME = 'input';
export const ONNX_OUTPUT_NAME = 'logits';

export interface OnnxExportOptions {
  /** Default opset version to import (default 13, at least 7). */
  opset?: number;
  /** Written to ModelProto.producer_version (default empty). */
  producerVersion?: string;
  /** Int8 calibration of model (from `repvgg quantize`): its layers are exported as QDQ (opset 13 or later). */
  quantization?: ModelQuantization;
}

/**
 * Serialize a deployed network as an ONNX model: input 'input' float [batch, inChannels, height, width], output
 * 'logits' float [batch, numClasses]; batch, height and width are symbolic.
 * @throws ShapeError when a layer's (or the classifier's) weights disagree with its channel counts, naming it.
 * @throws ArgumentValueError for a bad opset.
 * @example const bytes = encodeOnnx(deployed, { opset: 17 });
 */
export function encodeOnnx(model: DeployedModel, options: OnnxExportOptions = {}): Uint8Array {
  const opset = options.opset ?? DEFAULT_OPSET;
  if (!Number.isInteger(opset) || opset < MIN_OPSET) {
    throw new ArgumentValueError(`Expected an integer >= ${MIN_OPSET} for opset but received ${describeValue(opset)}`);
  }
  const quantization = options.quantization;
  if (quantization !== undefined && opset < MIN_QDQ_OPSET) {
    throw new ArgumentValueError(`Expected opset ${MIN_QDQ_OPSET} or later for an int8 (QDQ) export but received ${opset}`);
  }
  const featureChannels = checkModelShapes(model);
  if (quantization !== undefined) checkQuantizationFits(model, quantization);
  const numClasses = model.spec.numClasses;

  const graph = new GraphBuilder();
  let current = ONNX_INPUT_NAME;
  for (const layer of model.layers) current = addLayer(graph, layer, current, quantization?.get(layer.name));

  graph.node('GlobalAveragePool', 'head.pool', [current], 'head.pooled'); // [B, C, 1, 1]
  graph.node('Flatten', 'head.flatten', ['head.pooled'], 'head.features', [intAttribute('axis', 1)]); // [B, C]
  graph.initializer('linear.weight', [numClasses, featureChannels], model.linearWeight);
  graph.initializer('linear.bias', [numClasses], model.linearBias);
  graph.node('Gemm', 'head.linear', ['head.features', 'linear.weight', 'linear.bias'], ONNX_OUTPUT_NAME, [
    intAttribute('transB', 1),
  ]); // [B, K]

  const modelProto: onnxProto.onnx.IModelProto = {
    irVersion: IR_VERSION,
    producerName: PRODUCER_NAME,
    producerVersion: options.producerVersion ?? '',
    opsetImport: [{ domain: '', version: opset }],
    graph: {
      name: model.spec.arch,
      node: graph.nodes,
      initializer: graph.initializers,
      input: [floatValueInfo(ONNX_INPUT_NAME, ['batch', model.spec.inChannels, 'height', 'width'])],
      output: [floatValueInfo(ONNX_OUTPUT_NAME, ['batch', numClasses])],
    },
  };
  // Under Node protobufjs hands back a Buffer; expose it as the plain Uint8Array the signature promises.
  const encoded = onnx.ModelProto.encode(modelProto).finish();
  return new Uint8Array(encoded.buffer, encoded.byteOffset, encoded.byteLength);
}

/**
 * Write a deployed network to `path` as an ONNX file. The file is written under a temporary name in the same
 * directory and then renamed, so readers never see a half-written model.
 * @throws ShapeError / ArgumentValueError as encodeOnnx.
 * @throws ArgumentTypeError for an empty or non-string path; ArgumentValueError when the path cannot be written.
 * @param argName - how the caller's user named the path (e.g. '--out'), used in error messages.
 * @example await exportOnnx('repvgg-a0.onnx', deployed);
 */
export async function exportOnnx(path: string, model: DeployedModel, options: OnnxExportOptions = {}, argName = 'path'): Promise<void> {
  await writeFileAtomic(path, encodeOnnx(model, options), argName);
}

/**
 * The QDQ form of an int8 layer's inputs: returns the names of its dequantized input, weight and bias. The bias is
 * stored as s32 on the accumulator's scale inputScale * weightScales[oc] (as QLinearConv takes it).
 */
function addQuantizedInputs(graph: GraphBuilder, layer: DeployedLayer, input: string, q: LayerQuantization): [string, string, string] {
  const { name, outChannels } = layer;
  const prefix = `${name}.rbr_reparam`;
  graph.initializer(`${prefix}.input_scale`, [], Float32Array.of(q.inputScale));
  graph.initializer(`${prefix}.input_zero_point`, [], new Uint8Array(1));
  const zeroPointInputs = [`${prefix}.input_scale`, `${prefix}.input_zero_point`];
  const quantized = graph.node('QuantizeLinear', `${name}.quantize`, [input, ...zeroPointInputs], `${name}.input_q`); // u8
  const x = graph.node('DequantizeLinear', `${name}.dequantize`, [quantized, ...zeroPointInputs], `${name}.input_dq`);
  const perChannel = [intAttribute('axis', 0)];
  graph.initializer(`${prefix}.weight_q`, [outChannels, layer.inChannels / layer.groups, 3, 3], Int8Array.from(integerWeights(layer.weight, q.weightScales)));
  graph.initializer(`${prefix}.weight_scale`, [outChannels], q.weightScales);
  graph.initializer(`${prefix}.weight_zero_point`, [outChannels], new Int8Array(outChannels));
  const w = graph.node('DequantizeLinear', `${name}.weight_dequantize`,
    [`${prefix}.weight_q`, `${prefix}.weight_scale`, `${prefix}.weight_zero_point`], `${name}.weight_dq`, perChannel);
  const biasScale = Float32Array.from(q.weightScales, (s) => s * q.inputScale);
  graph.initializer(`${prefix}.bias_q`, [outChannels], Int32Array.from(layer.bias, (b, oc) => Math.round(b / (biasScale[oc] as number))));
  graph.initializer(`${prefix}.bias_scale`, [outChannels], biasScale);
  graph.initializer(`${prefix}.bias_zero_point`, [outChannels], new Int32Array(outChannels));
  const b = graph.node('DequantizeLinear', `${name}.bias_dequantize`,
    [`${prefix}.bias_q`, `${prefix}.bias_scale`, `${prefix}.bias_zero_point`], `${name}.bias_dq`, perChannel);
  return [x, w, b];
}

/** Emits this block's nodes after `input` and returns the name of its output. */
function addLayer(graph: GraphBuilder, layer: DeployedLayer, input: string, q: LayerQuantization | undefined): string {
  const { name } = layer;
  let convInputs: string[];
  if (q !== undefined) {
    convInputs = addQuantizedInputs(graph, layer, input, q);
  } else {
    const weightName = `${name}.rbr_reparam.weight`;
    const biasName = `${name}.rbr_reparam.bias`;
    graph.initializer(weightName, [layer.outChannels, layer.inChannels / layer.groups, 3, 3], layer.weight);
    graph.initializer(biasName, [layer.outChannels], layer.bias);
    convInputs = [input, weightName, biasName];
  }
  let current = graph.node('Conv', `${name}.conv`, convInputs, `${name}.conv_out`, [
    intsAttribute('kernel_shape', [3, 3]),
    intsAttribute('pads', [1, 1, 1, 1]),
    intsAttribute('strides', [layer.stride, layer.stride]),
    intAttribute('group', layer.groups),
  ]); // [B, out, H', W']
  if (layer.se !== undefined) current = addSqueezeExcitation(graph, name, layer.outChannels, layer.se, current);
  return graph.node('Relu', `${name}.relu`, [current], `${name}.out`);
}

/** x * sigmoid(up(relu(down(mean_hw(x))))), with the 1x1 convs as ONNX Conv. */
function addSqueezeExcitation(graph: GraphBuilder, name: string, channels: number, se: SEWeights, input: string): string {
  const prefix = `${name}.se`;
  graph.initializer(`${prefix}.down.weight`, [se.channels, channels, 1, 1], se.downWeight);
  graph.initializer(`${prefix}.down.bias`, [se.channels], se.downBias);
  graph.initializer(`${prefix}.up.weight`, [channels, se.channels, 1, 1], se.upWeight);
  graph.initializer(`${prefix}.up.bias`, [channels], se.upBias);
  const pointwise = [intsAttribute('kernel_shape', [1, 1])];
  const pooled = graph.node('GlobalAveragePool', `${prefix}.pool`, [input], `${prefix}.pooled`); // [B, C, 1, 1]
  const down = graph.node('Conv', `${prefix}.down`, [pooled, `${prefix}.down.weight`, `${prefix}.down.bias`], `${prefix}.down_out`, pointwise); // [B, S, 1, 1]
  const hidden = graph.node('Relu', `${prefix}.relu`, [down], `${prefix}.hidden`);
  const up = graph.node('Conv', `${prefix}.up`, [hidden, `${prefix}.up.weight`, `${prefix}.up.bias`], `${prefix}.up_out`, pointwise); // [B, C, 1, 1]
  const gate = graph.node('Sigmoid', `${prefix}.sigmoid`, [up], `${prefix}.gate`);
  return graph.node('Mul', `${prefix}.scale`, [input, gate], `${prefix}.out`); // [B, C, H, W]
}

/** Collects nodes and initializers in the order they are added (ONNX requires topological node order). */
class GraphBuilder {
  readonly nodes: onnxProto.onnx.INodeProto[] = [];
  readonly initializers: onnxProto.onnx.ITensorProto[] = [];

  /** Adds a node with one output and returns that output's name. */
  node(opType: string, name: string, inputs: string[], output: string, attribute: onnxProto.onnx.IAttributeProto[] = []): string {
    this.nodes.push({ opType, name, input: inputs, output: [output], attribute });
    return output;
  }

  initializer(name: string, dims: number[], values: Float32Array | Int32Array | Int8Array | Uint8Array): void {
    this.initializers.push({ name, dims, dataType: dataTypeOf(values), rawData: littleEndianBytes(values) });
  }
}

function dataTypeOf(values: Float32Array | Int32Array | Int8Array | Uint8Array): number {
  const types = onnx.TensorProto.DataType;
  if (values instanceof Float32Array) return types.FLOAT;
  if (values instanceof Int32Array) return types.INT32;
  return values instanceof Int8Array ? types.INT8 : types.UINT8;
}

/** ONNX raw_data is little-endian whatever the host's byte order; on little-endian hosts the data is not copied. */
function littleEndianBytes(values: Float32Array | Int32Array | Int8Array | Uint8Array): Uint8Array {
  if (LITTLE_ENDIAN_HOST || values.BYTES_PER_ELEMENT === 1) return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  values.forEach((v, i) => (values instanceof Float32Array ? view.setFloat32(i * 4, v, true) : view.setInt32(i * 4, v, true)));
  return bytes;
}

function intAttribute(name: string, value: number): onnxProto.onnx.IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INT, i: value };
}

function intsAttribute(name: string, values: number[]): onnxProto.onnx.IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INTS, ints: values };
}

/** A float tensor's value info; string dims are symbolic (dim_param), numbers fixed (dim_value). */
function floatValueInfo(name: string, dims: (string | number)[]): onnxProto.onnx.IValueInfoProto {
  const dim = dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d }));
  return { name, type: { tensorType: { elemType: FLOAT, shape: { dim } } } };
}

/**
 * Checks that every array's length matches the channel counts it is exported with and that consecutive layers
 * chain; returns the channels entering the classifier.
 * @throws ShapeError naming the first offending layer or the classifier.
 */
function checkModelShapes(model: DeployedModel): number {
  let channels = model.spec.inChannels;
  for (const layer of model.layers) {
    const { name, inChannels, outChannels, groups, stride } = layer;
    if (inChannels !== channels) {
      throw new ShapeError(`Layer ${name} expects ${inChannels} input channels but the previous layer produces ${channels}`);
    }
    if (!Number.isInteger(groups) || groups < 1 || inChannels % groups !== 0 || outChannels % groups !== 0) {
      throw new ShapeError(`Layer ${name} has groups ${groups}, which does not divide its channels ${inChannels} -> ${outChannels}`);
    }
    if (!Number.isInteger(stride) || stride < 1) {
      throw new ShapeError(`Layer ${name} has stride ${describeValue(stride)}; expected a positive integer`);
    }
    expectLength(`layer ${name} weight`, layer.weight, [outChannels, inChannels / groups, 3, 3]);
    expectLength(`layer ${name} bias`, layer.bias, [outChannels]);
    if (layer.se !== undefined) {
      const se = layer.se;
      expectLength(`layer ${name} se.downWeight`, se.downWeight, [se.channels, outChannels]);
      expectLength(`layer ${name} se.downBias`, se.downBias, [se.channels]);
      expectLength(`layer ${name} se.upWeight`, se.upWeight, [outChannels, se.channels]);
      expectLength(`layer ${name} se.upBias`, se.upBias, [outChannels]);
    }
    channels = outChannels;
  }
  expectLength('linear weight', model.linearWeight, [model.spec.numClasses, channels]);
  expectLength('linear bias', model.linearBias, [model.spec.numClasses]);
  return channels;
}

function expectLength(what: string, values: Float32Array, shape: number[]): void {
  const expected = shape.reduce((p, d) => p * d, 1);
  if (values.length !== expected) {
    throw new ShapeError(`Expected ${expected} values for ${what} of shape [${shape.join(', ')}] but received ${values.length}`);
  }
}
