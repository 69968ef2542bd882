// The deployed (re-parameterized) form of a RepVGG as plain data: one 3x3 conv + bias per block, optional SE,
// then the classifier. Produced by lib/reparam/reparam.ts, consumed by the engine and the ONNX exporter.

import type { RepVGGSpec } from '../models/repvgg.js';

/** Squeeze-excitation weights of one block (1x1 convs stored as matrices). */
export interface SEWeights {
  /** Internal width. */
  readonly channels: number;
  readonly downWeight: Float32Array; // [channels, outChannels]
  readonly downBias: Float32Array; // [channels]
  readonly upWeight: Float32Array; // [outChannels, channels]
  readonly upBias: Float32Array; // [outChannels]
}

/** One deployed layer: y = ReLU(SE(conv3x3(x, weight, stride, pad 1, groups) + bias)). */
export interface DeployedLayer {
  /** Block name, e.g. 'stage1.0'. */
  readonly name: string;
  readonly inChannels: number;
  readonly outChannels: number;
  readonly stride: number;
  readonly groups: number;
  readonly weight: Float32Array; // [outChannels, inChannels / groups, 3, 3]
  readonly bias: Float32Array; // [outChannels]
  readonly se?: SEWeights;
}

/** A whole deployed network: layers in order, then global average pooling and the linear classifier. */
export interface DeployedModel {
  readonly spec: RepVGGSpec;
  readonly layers: readonly DeployedLayer[];
  readonly linearWeight: Float32Array; // [numClasses, featureChannels]
  readonly linearBias: Float32Array; // [numClasses]
}
