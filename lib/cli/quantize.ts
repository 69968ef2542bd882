// `repvgg quantize`: INT8 post-training calibration of any weights `infer` takes (training-time or deployed,
// safetensors or .pth, official or timm names). Reads calibration images (.npy tensors, an image folder, or the
// Fashion-MNIST training split), calibrates (lib/quant/calibrate.ts), prints the per-layer SQNR table and writes a
// deployed safetensors file carrying the int8 scales (lib/quant/params.ts); `infer --precision int8` runs it.

import { createLimiter, preprocessBatch, preprocessWithNormalization } from '../data/images.js';
import { evalBatches, loadFashionMnist } from '../data/index.js';
import { ArgumentValueError, UsageError } from '../errors.js';
import { readNpyFloat32 } from '../io/npy.js';
import { loadWeights, recordedClassNames, recordedNormalization, saveWeights, type LoadedWeights } from '../io/weights.js';
import { calibrate, calibrationMethod, defaultWeightBits, type CalibrationResult } from '../quant/calibrate.js';
import { countProgress } from '../progress.js';
import { putQuantization, type WeightBits } from '../quant/params.js';
import { deployedModelFromState, deployedStateDict, reparameterize } from '../reparam/reparam.js';
import type { HostTensor } from '../tensor.js';
import { collectImageFiles } from './classify.js';
import { archFlag } from './commands.js';
import { checkOutputDistinct, choiceFlag, intFlag, optionalFlag, requireFlag, type Flags } from './flags.js';

export const QUANTIZE_FLAGS = {
  arch: { type: 'string' }, weights: { type: 'string' }, out: { type: 'string' }, calib: { type: 'string' },
  'calib-dir': { type: 'string' }, 'calib-dataset': { type: 'string' }, 'calib-count': { type: 'string' },
  keep: { type: 'string' }, resize: { type: 'string' }, crop: { type: 'string' }, method: { type: 'string' },
  'no-bias-correction': { type: 'boolean' }, 'weight-bits': { type: 'string' },
} as const;

/** Default number of calibration images: enough for stable statistics, while every layer's activations fit in memory. */
const DEFAULT_CALIB_COUNT = 256;
const MAX_CALIB_COUNT = 100_000;

/** count indices spread evenly over [0, total): a class-sorted file or folder still gives every class. */
function evenlySpaced(total: number, count: number): number[] {
  const n = Math.min(total, count);
  return Array.from({ length: n }, (_, i) => Math.floor((i * total) / n));
}

function pick(images: HostTensor, indices: readonly number[]): HostTensor {
  const [, c, h, w] = images.shape as [number, number, number, number];
  const size = c * h * w;
  const data = new Float32Array(indices.length * size);
  indices.forEach((index, i) => data.set(images.data.subarray(index * size, (index + 1) * size), i * size));
  return { shape: [indices.length, c, h, w], data };
}

async function calibrationImages(flags: Flags, weights: LoadedWeights, count: number): Promise<{ images: HostTensor; source: string }> {
  const npy = optionalFlag(flags, 'calib');
  const dir = optionalFlag(flags, 'calib-dir');
  const dataset = optionalFlag(flags, 'calib-dataset');
  if ([npy, dir, dataset].filter((v) => v !== undefined).length !== 1) {
    throw new UsageError('Expected exactly one of --calib x.npy, --calib-dir DIR or --calib-dataset fashion-mnist');
  }
  if (npy !== undefined) {
    const all = await readNpyFloat32(npy, '--calib');
    if (all.shape.length !== 4 || all.shape[1] !== weights.spec.inChannels) {
      throw new ArgumentValueError(`Expected --calib of shape [N, ${weights.spec.inChannels}, H, W] but '${npy}' holds [${all.shape.join(', ')}]`);
    }
    return { images: pick(all, evenlySpaced(all.shape[0] as number, count)), source: npy };
  }
  if (dataset !== undefined) {
    if (dataset !== 'fashion-mnist') throw new UsageError(`Expected 'fashion-mnist' for --calib-dataset but received '${dataset}'`);
    const train = await loadFashionMnist('train');
    const indices = evenlySpaced(train.count, count);
    const size = train.channels * train.height * train.width;
    const subset = new Uint8Array(indices.length * size);
    const raw = train.images as Uint8Array;
    indices.forEach((index, i) => subset.set(raw.subarray(index * size, (index + 1) * size), i * size));
    const batches = evalBatches({ ...train, images: subset, labels: train.labels.slice(0, indices.length), count: indices.length }, indices.length);
    for await (const batch of batches) return { images: { shape: batch.images.shape, data: batch.images.data.slice() }, source: 'fashion-mnist/train' };
    throw new ArgumentValueError('--calib-dataset: the Fashion-MNIST training split is empty');
  }
  if (weights.spec.inChannels !== 3) throw new ArgumentValueError(`Expected a 3-channel (RGB) network for --calib-dir but ${weights.spec.arch} takes ${weights.spec.inChannels}`);
  const crop = intFlag(flags, 'crop', 224, 8);
  const preprocess = preprocessWithNormalization(recordedNormalization(weights, optionalFlag(flags, 'weights')), intFlag(flags, 'resize', Math.round((crop * 256) / 224), 8), crop, '--resize/--crop');
  const { files, failures } = await collectImageFiles([dir as string]);
  if (failures.length > 0) throw new ArgumentValueError(`--calib-dir: ${failures[0]![0]}: ${failures[0]![1]}`);
  if (files.length === 0) throw new ArgumentValueError(`Expected JPEG, PNG or WebP files in --calib-dir but '${dir}' has none`);
  const chosen = evenlySpaced(files.length, count).map((i) => files[i] as string);
  const limit = createLimiter(8);
  const size = 3 * crop * crop;
  const data = new Float32Array(chosen.length * size);
  let done = 0;
  const progress = countProgress('quantize: decoded', ' calibration images');
  await Promise.all(chosen.map((file, i) => limit(async () => {
    try {
      data.set((await preprocessBatch([file], { preprocess })).data, i * size); // on the decoding worker threads
    } catch (error) {
      throw new ArgumentValueError(`--calib-dir: cannot use ${file}: ${(error as Error).message}`);
    }
    progress(++done, chosen.length);
  })));
  return { images: { shape: [chosen.length, 3, crop, crop], data }, source: dir as string };
}

function formatDb(db: number | undefined): string {
  if (db === undefined) return '-';
  return Number.isFinite(db) ? db.toFixed(1) : 'exact';
}

/** The per-layer report as a markdown table: where the int8 error comes from. */
export function calibrationTable(result: CalibrationResult): string {
  const rows = result.layers.map((l) =>
    `| ${l.name.padEnd(9)} | ${l.precision.padEnd(9)} | ${formatDb(l.layerSqnrDb).padStart(15)} | ${formatDb(l.networkSqnrDb).padStart(17)} | ${l.clippedFraction === undefined ? '-'.padStart(9) : `${(l.clippedFraction * 100).toFixed(3)}%`.padStart(9)} |`);
  return [
    '| layer     | precision | layer SQNR (dB) | network SQNR (dB) | clipped   |',
    '|-----------|-----------|-----------------|-------------------|-----------|',
    ...rows,
    `logits SQNR ${formatDb(result.logitsSqnrDb)} dB; top-1 agreement with float32 on the ${result.images} calibration images ${(result.top1Agreement * 100).toFixed(1)}%`,
  ].join('\n');
}

export async function runQuantize(flags: Flags): Promise<void> {
  const arch = archFlag(flags, false);
  const weightsPath = requireFlag(flags, 'weights');
  const outPath = requireFlag(flags, 'out');
  const count = intFlag(flags, 'calib-count', DEFAULT_CALIB_COUNT, 1);
  if (count > MAX_CALIB_COUNT) throw new ArgumentValueError(`Expected at most ${MAX_CALIB_COUNT} for --calib-count but received ${count}`);
  const keep = (optionalFlag(flags, 'keep') ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  await checkOutputDistinct(['out', outPath], [['weights', weightsPath], ['calib', optionalFlag(flags, 'calib')]]);
  const weights = await loadWeights(weightsPath, arch, '--weights');
  if (weights.quantization !== undefined) {
    throw new ArgumentValueError(`Expected float weights for --weights but '${weightsPath}' is already quantized; quantize the float weights it came from`);
  }
  const model = weights.form === 'train' ? reparameterize(weights.spec, weights.state) : deployedModelFromState(weights.spec, weights.state);
  const { images, source } = await calibrationImages(flags, weights, count);
  const started = performance.now();
  const method = choiceFlag(flags, 'method', ['mse', 'max'] as const, 'mse');
  const biasCorrection = flags['no-bias-correction'] !== true;
  const weightBits = Number(choiceFlag(flags, 'weight-bits', ['7', '8'] as const, String(defaultWeightBits()) as '7' | '8')) as WeightBits;
  const result = await calibrate(model, images, {
    keep, method, biasCorrection, weightBits, onProgress: countProgress('quantize: calibrated', ' layers'),
  });
  const state = deployedStateDict(result.model);
  putQuantization(state, result.quantization);
  const classNames = recordedClassNames(weights);
  await saveWeights(outPath, weights.spec, 'deploy', state, '--out', {
    normalization: recordedNormalization(weights, weightsPath), ...(classNames !== undefined && { classNames }),
    extraMetadata: {
      quantization: 'int8',
      quantization_method: calibrationMethod({ method, biasCorrection, weightBits }),
      quantization_weight_bits: String(weightBits),
      calibration_images: String(result.images),
      calibration_source: source,
      quantization_report: JSON.stringify({ logitsSqnrDb: result.logitsSqnrDb, top1Agreement: result.top1Agreement, layers: result.layers }),
    },
  });
  process.stdout.write(
    `${calibrationTable(result)}\n` +
      `quantized ${weights.spec.arch}: ${result.quantization.size} of ${model.layers.length} layers int8 (${weightBits}-bit weights), calibrated on ${result.images} images ` +
      `in ${((performance.now() - started) / 1000).toFixed(1)} s -> ${outPath}\n`,
  );
}
