// Public API of repvgg: architectures, weights I/O, re-parameterization, the network runner and single ops.
export * from './errors.js';
export * from './tensor.js';
export * from './models/repvgg.js';
export { randomStateDict } from './models/init.js';
export * from './reparam/types.js';
export { reparameterize, deployedStateDict, deployedModelFromState, fuseBlock, BN_EPS } from './reparam/reparam.js';
export * from './engine.js';
export { listBackends } from './backends.js';
export * from './io/weights.js';
export { readNpy, readNpyFloat32, writeNpy, encodeNpy, decodeNpy } from './io/npy.js';
export { readSafetensors, readStateDict, writeSafetensors, encodeSafetensors, decodeSafetensors, decodeStateDict } from './io/safetensors.js';
export { encodeOnnx, exportOnnx } from './io/onnx.js';
export * as ops from './ops/index.js';
export * as data from './data/index.js';
export { TrainableRepVGG } from './train/model.js';
export { train, evaluate } from './train/trainer.js';
export type { TrainConfig, TrainResult } from './train/trainer.js';
export { miniSpec } from './train/presets.js';
