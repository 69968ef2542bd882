// `repvgg infer --images FILE|DIR...`: classifies encoded images (JPEG, PNG, WebP) and prints the top-k classes
// with softmax probabilities per image, as text or as one JSON object per line (the contract in DESIGN.md).
// Decoding of the next chunk overlaps the network run of the current one; unreadable files are reported and
// skipped, and the command exits 1 at the end if any was. Not for: the decoding itself (lib/data/images.ts).

import { readdir, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import type { RepVGGNetwork } from '../engine.js';
import { ArgumentValueError, RepvggError } from '../errors.js';
import { IMG_EXTENSIONS } from '../data/image-folder.js';
import { createLimiter, imagenetClassNames, preprocessBatch, preprocessWithNormalization, readLabelsFile, type EvalPreprocess } from '../data/images.js';
import { writeNpy } from '../io/npy.js';
import { topIndices } from '../tensor.js';
import { recordedClassNames, recordedNormalization, type LoadedWeights } from '../io/weights.js';
import { intFlag, optionalFlag, type Flags } from './flags.js';

/** Most image files one command takes (a bound on what a folder walk may collect). */
const MAX_IMAGE_FILES = 1_000_000;
/** Deepest folder nesting walked below a named folder. */
const MAX_WALK_DEPTH = 32;
/** Images decoded at once while the network runs. */
const DECODE_CONCURRENCY = 8;

/** One prediction: class index, name (null when no labels are known) and softmax probability. */
export interface TopClass {
  index: number;
  label: string | null;
  probability: number;
}

/**
 * The k most probable classes of one row of logits, most probable first (softmax in float64, max-subtracted).
 * @param logits - (numClasses) for one image.
 */
export function topClasses(logits: Float32Array, k: number, labels: readonly string[] | undefined): TopClass[] {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  return topIndices(logits, k).map((index) => ({ index, label: labels?.[index] ?? null, probability: Math.exp((logits[index] as number) - max) / sum }));
}

/** Class names for --labels (imagenet or a file), else those the weights recorded (image-folder training). */
async function classLabels(flags: Flags, weights: LoadedWeights): Promise<string[] | undefined> {
  const flag = optionalFlag(flags, 'labels');
  const classes = weights.spec.numClasses;
  let labels: string[] | undefined;
  if (flag === 'imagenet') labels = imagenetClassNames();
  else if (flag !== undefined) labels = await readLabelsFile(flag);
  else labels = recordedClassNames(weights);
  if (labels !== undefined && labels.length !== classes) {
    throw new ArgumentValueError(`Expected ${classes} class names for --labels (${weights.spec.arch} has ${classes} classes) but received ${labels.length} from '${flag}'`);
  }
  return labels;
}

/**
 * The image files named on the command line: files as given, folders walked (sorted, hidden entries skipped,
 * image extensions only). Paths that cannot be read are returned as failures, not thrown.
 */
export async function collectImageFiles(paths: readonly string[]): Promise<{ files: string[]; failures: [string, string][] }> {
  const files: string[] = [];
  const failures: [string, string][] = [];
  const add = (path: string): void => {
    if (files.length >= MAX_IMAGE_FILES) throw new ArgumentValueError(`Expected at most ${MAX_IMAGE_FILES} image files for --images but the folders hold more`);
    files.push(path);
  };
  const walk = async (dir: string, depth: number): Promise<void> => {
    const entries = (await readdir(dir, { withFileTypes: true })).filter((e) => !e.name.startsWith('.')).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const entry of entries) {
      const path = join(dir, entry.name);
      if (entry.isDirectory() && depth < MAX_WALK_DEPTH) await walk(path, depth + 1);
      else if (entry.isFile() && IMG_EXTENSIONS.includes(extname(entry.name).toLowerCase())) add(path);
    }
  };
  for (const path of paths) {
    try {
      if ((await stat(path)).isDirectory()) await walk(path, 0);
      else add(path);
    } catch (error) {
      if (error instanceof RepvggError) throw error;
      failures.push([path, (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : (error as Error).message]);
    }
  }
  return { files, failures };
}

/**
 * Decodes and preprocesses a chunk of files on the decoding worker threads; a failed file is reported by index
 * instead of failing the chunk.
 */
async function decodeChunk(files: readonly string[], preprocess: EvalPreprocess, limit: ReturnType<typeof createLimiter>) {
  const settled = await Promise.allSettled(files.map((file) => limit(async () => (await preprocessBatch([file], { preprocess })).data)));
  return settled.map((r, i) => (r.status === 'fulfilled' ? { file: files[i] as string, chw: r.value } : { file: files[i] as string, error: r.reason as Error }));
}

export async function classifyImages(
  network: RepVGGNetwork, weights: LoadedWeights, paths: readonly string[], flags: Flags, outputPath: string | undefined,
): Promise<void> {
  const { spec } = weights;
  if (spec.inChannels !== 3) {
    throw new ArgumentValueError(`Expected a 3-channel (RGB) network for --images but ${spec.arch} takes ${spec.inChannels}-channel input; use --input x.npy`);
  }
  const top = Math.min(intFlag(flags, 'top', 5), spec.numClasses);
  const json = flags.json === true;
  const labels = await classLabels(flags, weights);
  const normalization = recordedNormalization(weights, optionalFlag(flags, 'weights'));
  const preprocess = preprocessWithNormalization(normalization, intFlag(flags, 'resize', 256), intFlag(flags, 'crop', 224), '--resize/--crop');
  const { files, failures } = await collectImageFiles(paths);
  const report = (file: string, message: string): void => {
    failures.push([file, message]);
    process.stderr.write(`repvgg: skipped ${file}: ${message}\n`);
  };
  const unreadablePaths = failures.length;
  for (const [file, message] of failures.splice(0)) report(file, message);

  const limit = createLimiter(DECODE_CONCURRENCY);
  const chunkSize = network.maxBatch;
  const imageSize = 3 * preprocess.crop * preprocess.crop;
  const allLogits: Float32Array[] = [];
  let next = files.length > 0 ? decodeChunk(files.slice(0, chunkSize), preprocess, limit) : undefined;
  for (let start = 0; next !== undefined; start += chunkSize) {
    const decoded = await next;
    const following = files.slice(start + chunkSize, start + 2 * chunkSize);
    next = following.length > 0 ? decodeChunk(following, preprocess, limit) : undefined; // decodes while we compute
    const ok = decoded.filter((d): d is { file: string; chw: Float32Array } => 'chw' in d);
    for (const d of decoded) if ('error' in d) report(d.file, d.error.message);
    if (ok.length === 0) continue;
    const batch = new Float32Array(ok.length * imageSize); // (B, 3, crop, crop)
    ok.forEach((d, i) => batch.set(d.chw, i * imageSize));
    const logits = await network.predict({ shape: [ok.length, 3, preprocess.crop, preprocess.crop], data: batch });
    allLogits.push(logits.data);
    ok.forEach((d, i) => {
      const best = topClasses(logits.data.subarray(i * spec.numClasses, (i + 1) * spec.numClasses), top, labels);
      const line = json
        ? JSON.stringify({ file: d.file, top: best })
        : `${d.file}: ${best.map((c) => `${c.label ?? `class ${c.index}`} (${c.index}) ${c.probability.toFixed(4)}`).join(', ')}`;
      process.stdout.write(`${line}\n`);
    });
  }
  if (outputPath !== undefined) {
    const count = allLogits.reduce((n, l) => n + l.length, 0) / spec.numClasses;
    const data = new Float32Array(count * spec.numClasses);
    let offset = 0;
    for (const l of allLogits) {
      data.set(l, offset);
      offset += l.length;
    }
    await writeNpy(outputPath, data, [count, spec.numClasses], '--output');
  }
  if (failures.length > 0) {
    throw new ArgumentValueError(`${failures.length} of ${files.length + unreadablePaths} images could not be classified (listed above)`);
  }
}
