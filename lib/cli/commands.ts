// The file-in/file-out commands: convert, infer and export-onnx.

import { RepVGGNetwork, type BackendName, type Precision } from '../engine.js';
import { ArgumentValueError, BackendError, UsageError } from '../errors.js';
import { classifyImages } from './classify.js';
import { exportOnnx } from '../io/onnx.js';
import { readNpyFloat32, writeNpy } from '../io/npy.js';
import { KEY_STYLES, type KeyStyle } from '../io/keys.js';
import { loadWeights, recordedClassNames, recordedNormalization, saveWeights, type LoadedWeights } from '../io/weights.js';
import { canonicalArchName } from '../models/repvgg.js';
import { countProgress } from '../progress.js';
import { deployedModelFromState, deployedStateDict, reparameterize } from '../reparam/reparam.js';
import type { DeployedModel } from '../reparam/types.js';
import { checkOutputDistinct, choiceFlag, intFlag, optionalFlag, requireFlag, type Flags } from './flags.js';

export function archFlag(flags: Flags, required: boolean): string | undefined {
  const arch = required ? requireFlag(flags, 'arch') : optionalFlag(flags, 'arch');
  if (arch !== undefined && canonicalArchName(arch) === undefined) {
    throw new UsageError(`Expected an official variant (A0, A1, A2, B0, B1, B1g2, B1g4, B2, B2g2, B2g4, B3, B3g2, B3g4, D2se; optionally RepVGG-) for --arch but received '${arch}'`);
  }
  return arch;
}

function deployedOf(weights: LoadedWeights): DeployedModel {
  return weights.form === 'train' ? reparameterize(weights.spec, weights.state) : deployedModelFromState(weights.spec, weights.state);
}

export async function runConvert(flags: Flags): Promise<void> {
  const arch = archFlag(flags, false);
  const inPath = requireFlag(flags, 'in');
  const outPath = requireFlag(flags, 'out');
  const keyStyle = choiceFlag<KeyStyle>(flags, 'key-style', KEY_STYLES, 'official');
  await checkOutputDistinct(['out', outPath], [['in', inPath]]);
  const weights = await loadWeights(inPath, arch, '--in');
  if (weights.form !== 'train') {
    throw new ArgumentValueError(`Expected training-time weights (rbr_dense keys) for --in but '${inPath}' is already deployed (rbr_reparam keys)`);
  }
  const deployed = reparameterize(weights.spec, weights.state);
  const classNames = recordedClassNames(weights);
  await saveWeights(outPath, weights.spec, 'deploy', deployedStateDict(deployed), '--out', {
    normalization: recordedNormalization(weights, inPath), keyStyle, ...(classNames !== undefined && { classNames }),
  });
  process.stdout.write(
    `converted ${weights.spec.arch} (${weights.spec.numClasses} classes): ${deployed.layers.length} blocks -> ${outPath}` +
      `${keyStyle === 'official' ? '' : ` (${keyStyle} key names)`}\n`,
  );
}

/** Names the --backend flag in "backend unavailable" errors, so the user knows which flag to change. */
function withBackendFlag<T>(backend: string, make: () => T): T {
  try {
    return make();
  } catch (err) {
    if (err instanceof BackendError && err.code === 'ERR_BACKEND_UNAVAILABLE') {
      throw new BackendError(`--backend ${backend}: ${err.message} (use --backend cpu or auto)`, err.code);
    }
    throw err;
  }
}

export async function runInfer(flags: Flags, positionals: readonly string[] = []): Promise<void> {
  const arch = archFlag(flags, false);
  const weightsPath = requireFlag(flags, 'weights');
  const backend = choiceFlag<BackendName>(flags, 'backend', ['cpu', 'cuda', 'auto'], 'auto');
  const precision = choiceFlag<Precision>(flags, 'precision', ['fp32', 'bf16', 'int8', 'fp16'], 'fp32');
  const maxBatch = intFlag(flags, 'batch', 32);
  const images = flags.images === undefined ? undefined : [...(flags.images as unknown as string[]), ...positionals];
  if (images === undefined && positionals.length > 0) throw new UsageError(`Expected no positional arguments without --images but received '${positionals[0]}'`);
  if ((images === undefined) === (flags.input === undefined)) throw new UsageError('Expected exactly one of --input x.npy or --images FILE|DIR...');
  const outputPath = images === undefined ? requireFlag(flags, 'output') : optionalFlag(flags, 'output');
  if (outputPath !== undefined) await checkOutputDistinct(['output', outputPath], [['weights', weightsPath], ['input', optionalFlag(flags, 'input')]]);
  const weights = await loadWeights(weightsPath, arch, '--weights');
  const network = withBackendFlag(backend, () => RepVGGNetwork.fromStateDict(weights.spec, weights.state, {
    backend, precision, maxBatch, ...(weights.quantization && { quantization: weights.quantization }),
  }));
  try {
    if (images !== undefined) {
      await classifyImages(network, weights, images, flags, outputPath);
      return;
    }
    const input = await readNpyFloat32(requireFlag(flags, 'input'), '--input');
    network.checkInput(input, '--input');
    const started = performance.now();
    const chunks = countProgress('infer: chunk');
    const logits = await network.predict(input, {
      onProgress: (done, total) => {
        if (total > 1) chunks(done, total);
      },
    });
    const seconds = (performance.now() - started) / 1000;
    await writeNpy(outputPath as string, logits.data, logits.shape, '--output');
    const count = input.shape[0] as number;
    process.stdout.write(
      `${count} images through ${weights.spec.arch} (${weights.form} form, ${network.backend} ${precision}) in ${seconds.toFixed(2)} s ` +
        `(${(count / seconds).toFixed(1)} img/s) -> ${outputPath} [${logits.shape.join(', ')}]\n`,
    );
  } finally {
    network.dispose();
  }
}

export async function runExportOnnx(flags: Flags): Promise<void> {
  const arch = archFlag(flags, false);
  const weightsPath = requireFlag(flags, 'weights');
  const outPath = requireFlag(flags, 'out');
  const opset = intFlag(flags, 'opset', 13, 7);
  await checkOutputDistinct(['out', outPath], [['weights', weightsPath]]);
  const int8 = flags.int8 === true;
  const weights = await loadWeights(weightsPath, arch, '--weights');
  if (int8 && weights.quantization === undefined) {
    throw new ArgumentValueError(`Expected weights from repvgg quantize for --int8 but '${weightsPath}' carries no int8 scales`);
  }
  await exportOnnx(outPath, deployedOf(weights), { opset, ...(int8 && { quantization: weights.quantization }) }, '--out');
  process.stdout.write(`exported deployed ${weights.spec.arch}${int8 ? ` with ${weights.quantization!.size} int8 (QDQ) layers` : ''} (opset ${opset}) -> ${outPath}\n`);
}
