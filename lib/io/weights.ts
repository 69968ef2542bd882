// Model weights on disk: reads safetensors and PyTorch checkpoints (.pth/.pt, detected from the content), maps
// timm names to the official ones, detects training-time vs deployed form from the keys, resolves the
// architecture (flag, metadata, or the official variant the shapes fit), checks the state dict against it (listing
// the first missing/unexpected keys and shape mismatches), and reads/writes the metadata contract (arch,
// num_classes, form, input normalization, and the full spec for custom architectures).

import { FormatError, WeightsMismatchError, formatShape } from '../errors.js';
import {
  OFFICIAL_ARCHS,
  canonicalArchName,
  checkSpecAgainstKeys,
  expectedWeights,
  officialSpec,
  parseSpecJson,
  type OfficialOptions,
  type RepVGGSpec,
  type WeightForm,
} from '../models/repvgg.js';
import type { StateDict } from '../tensor.js';
import { readFileHead } from './atomic.js';
import { toOfficialKeys, withKeyStyle, type KeyStyle } from './keys.js';
import { isPthHead, readPth } from './pth.js';
import { checkWeightValues } from './weight-values.js';
import { readStateDict, writeSafetensors } from './safetensors.js';
import { hasQuantization, takeQuantization, type ModelQuantization } from '../quant/params.js';

/** Per-channel input normalization recorded in the metadata: x' = (x * scale - mean) / std; ImageNet's by default. */
export interface InputNormalization {
  mean: number[];
  std: number[];
  /** Applied to raw values first (1/255 for 8-bit pixels); 1 when omitted. */
  scale?: number;
}

export const IMAGENET_NORMALIZATION: InputNormalization = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

/** Most channels an input normalization may list (a bound on untrusted metadata). */
const MAX_NORMALIZATION_CHANNELS = 64;

/**
 * The input normalization recorded in a weights file's metadata, or ImageNet's when none is recorded (files
 * from the official code, timm and torch.save carry none and were trained on ImageNet).
 * @throws FormatError when the recorded value is not {mean: number[], std: number[] > 0, scale?: number}.
 */
export function recordedNormalization(weights: { metadata: Record<string, string> }, source = 'weights'): InputNormalization {
  const text = weights.metadata.input_normalization;
  if (text === undefined) return IMAGENET_NORMALIZATION;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  const v = value as { mean?: unknown; std?: unknown; scale?: unknown } | undefined;
  const numbers = (list: unknown, positive: boolean): list is number[] =>
    Array.isArray(list) && list.length >= 1 && list.length <= MAX_NORMALIZATION_CHANNELS &&
    list.every((x) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0));
  const scaleOk = v?.scale === undefined || (typeof v.scale === 'number' && Number.isFinite(v.scale) && v.scale > 0);
  if (typeof v !== 'object' || v === null || !numbers(v.mean, false) || !numbers(v.std, true) || v.mean.length !== v.std.length || !scaleOk) {
    throw new FormatError(
      `${source}: metadata 'input_normalization' is ${JSON.stringify(text.slice(0, 120))}; expected ` +
        `{"mean": [...], "std": [... > 0], "scale"?: number} with up to ${MAX_NORMALIZATION_CHANNELS} channels`,
    );
  }
  return { mean: v.mean, std: v.std, ...(v.scale !== undefined && { scale: v.scale as number }) };
}

/**
 * The class names recorded in a weights file's metadata (`class_names`, written by image-folder training), or
 * undefined when none are recorded or the record does not list one name per class (an optional field: a bad
 * value is ignored rather than failing the command).
 */
export function recordedClassNames(weights: { spec: RepVGGSpec; metadata: Record<string, string> }): string[] | undefined {
  const text = weights.metadata.class_names;
  if (text === undefined) return undefined;
  try {
    const names: unknown = JSON.parse(text);
    if (Array.isArray(names) && names.length === weights.spec.numClasses && names.every((n) => typeof n === 'string')) return names as string[];
  } catch {
    // malformed JSON: treated as absent
  }
  return undefined;
}

/** 'train' when the keys hold rbr_dense branches, 'deploy' when they hold rbr_reparam convs. */
export function detectForm(state: StateDict): WeightForm {
  let train = false;
  let deploy = false;
  for (const key of state.keys()) {
    if (key.includes('.rbr_reparam.')) deploy = true;
    if (key.includes('.rbr_dense.') || key.includes('.rbr_1x1.')) train = true;
  }
  if (train === deploy) {
    const sample = [...state.keys()].slice(0, 3).join(', ');
    throw new WeightsMismatchError(
      train
        ? 'The weights mix training-time (rbr_dense/rbr_1x1) and deployed (rbr_reparam) keys'
        : `The weights hold no RepVGG block keys (rbr_dense or rbr_reparam); first keys: ${sample || 'none'}`,
    );
  }
  return train ? 'train' : 'deploy';
}

/**
 * Checks that state holds exactly the keys and shapes of spec in the given form.
 * @throws WeightsMismatchError listing up to five missing keys, unexpected keys and shape mismatches each.
 */
export function checkWeights(spec: RepVGGSpec, state: StateDict, form: WeightForm): void {
  const expected = expectedWeights(spec, form);
  const missing: string[] = [];
  const mismatched: string[] = [];
  for (const [key, shape] of expected) {
    const t = state.get(key);
    if (!t) missing.push(key);
    else if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      mismatched.push(`${key} expected ${formatShape(shape)} but received ${formatShape(t.shape)}`);
    }
  }
  const unexpected = [...state.keys()].filter((k) => !expected.has(k));
  if (missing.length + unexpected.length + mismatched.length === 0) return;
  const list = (label: string, items: string[]): string =>
    items.length === 0 ? '' : `; ${items.length} ${label}: ${items.slice(0, 5).join(', ')}${items.length > 5 ? ', ...' : ''}`;
  throw new WeightsMismatchError(
    `Weights do not match ${spec.arch} (${form} form, ${spec.numClasses} classes)` +
      list('missing', missing) +
      list('unexpected', unexpected) +
      list('shape mismatches', mismatched),
  );
}

/** The metadata this library writes next to weights. */
export function weightsMetadata(spec: RepVGGSpec, form: WeightForm, normalization = IMAGENET_NORMALIZATION): Record<string, string> {
  return {
    format: 'pt',
    arch: spec.arch,
    num_classes: String(spec.numClasses),
    form,
    input_normalization: JSON.stringify(normalization),
    repvgg_spec: JSON.stringify(spec),
  };
}

/** The class count and input channels an official variant takes from its tensors (the classifier, the stem). */
function officialOptionsOf(state: StateDict): OfficialOptions {
  const classes = state.get('linear.weight')?.shape[0];
  const inChannels = (state.get('stage0.rbr_dense.conv.weight') ?? state.get('stage0.rbr_reparam.weight'))?.shape[1];
  // QARepVGG's training-time blocks have a plain 1x1 conv (rbr_1x1.weight) where RepVGG's has rbr_1x1.conv.weight.
  const qa = state.has('stage0.rbr_1x1.weight');
  return { ...(classes !== undefined && { numClasses: classes }), ...(inChannels !== undefined && { inChannels }), ...(qa && { block: 'qa' as const }) };
}

/** Resolves the architecture: an explicit arch name wins; otherwise the file's own metadata. */
function specFor(arch: string | undefined, state: StateDict, metadata: Record<string, string>, path: string): RepVGGSpec {
  const options = officialOptionsOf(state);
  if (arch !== undefined) return officialSpec(arch, options);
  if (metadata.repvgg_spec !== undefined) {
    const spec = parseSpecJson(metadata.repvgg_spec, `${path} metadata repvgg_spec`);
    // A spec that lies about its depth fails here, before its block and key lists are built.
    checkSpecAgainstKeys(spec, state.keys(), detectForm(state), path);
    return spec;
  }
  if (metadata.arch !== undefined && canonicalArchName(metadata.arch) !== undefined) return officialSpec(metadata.arch, options);
  throw new WeightsMismatchError(`${path} records no architecture in its metadata: pass the arch (e.g. --arch A0)`);
}

export interface LoadedWeights {
  spec: RepVGGSpec;
  form: WeightForm;
  /** Under the official key names, whatever naming the file used. */
  state: StateDict;
  metadata: Record<string, string>;
  /** What the file held: 'safetensors' or 'pth' (torch.save, zip or legacy). */
  fileFormat: WeightsFileFormat;
  /** The key naming the file used. */
  keyStyle: KeyStyle;
  /** The int8 calibration written by `repvgg quantize` (taken out of state), when the file has one. */
  quantization?: ModelQuantization;
}

export type WeightsFileFormat = 'safetensors' | 'pth';

/**
 * Reads the tensors of a weights file, whatever its format (decided by its first bytes, not its name): safetensors,
 * or a PyTorch checkpoint written by torch.save (read by a restricted unpickler, see pth.ts). Keys are renamed to
 * the official names (timm's and DataParallel's 'module.' are recognized).
 * @throws ArgumentValueError when the file is missing; FormatError when it is neither format or is damaged.
 */
export async function readWeightsFile(
  path: string,
  argName = '--weights',
): Promise<{ state: StateDict; metadata: Record<string, string>; fileFormat: WeightsFileFormat; keyStyle: KeyStyle }> {
  const head = await readFileHead(path, 16, argName);
  const fileFormat: WeightsFileFormat = isPthHead(head) ? 'pth' : 'safetensors';
  const { state: raw, metadata } = fileFormat === 'pth' ? await readPth(path, argName) : await readStateDict(path, argName);
  const { state, style } = toOfficialKeys(raw, path);
  return { state, metadata, fileFormat, keyStyle: style };
}

/**
 * The official variant whose training-time or deployed weights have exactly these keys and shapes (class count
 * and input channels taken from the tensors), for files that carry no metadata (.pth, timm exports).
 * @throws WeightsMismatchError naming the closest variant's mismatches when none fits.
 */
export function identifyOfficialArch(state: StateDict, form: WeightForm, path: string): string {
  const options = officialOptionsOf(state);
  let closest: { arch: string; error: WeightsMismatchError } | undefined;
  for (const arch of OFFICIAL_ARCHS) {
    const spec = officialSpec(arch, options);
    try {
      checkWeights(spec, state, form);
      return arch;
    } catch (error) {
      if (!(error instanceof WeightsMismatchError)) throw error;
      // The variant with the same number of tensors is the one the user most likely meant.
      if (closest === undefined || expectedWeights(spec, form).size === state.size) closest = { arch, error };
    }
  }
  throw new WeightsMismatchError(
    `${path} records no architecture and its tensors fit no official variant: pass the arch (e.g. --arch A0). ` +
      `Closest, ${closest?.arch ?? 'none'}: ${closest?.error.message ?? ''}`,
  );
}

/**
 * Reads a weights file (safetensors or .pth/.pt, official or timm names) and checks it against the architecture.
 * @param arch official variant name; when omitted the file's metadata decides, and for files without metadata the
 *   official variant whose shapes the tensors have.
 * @throws FormatError for unreadable files, WeightsMismatchError when the weights do not fit the architecture.
 * @example const { spec, form, state } = await loadWeights('RepVGG-A0-train.pth', 'A0');
 */
export async function loadWeights(path: string, arch?: string, argName = '--weights'): Promise<LoadedWeights> {
  const { state, metadata, fileFormat, keyStyle } = await readWeightsFile(path, argName);
  const quantization = hasQuantization(state) ? takeQuantization(state, path) : undefined;
  const form = detectForm(state);
  const knowsArch = arch !== undefined || metadata.repvgg_spec !== undefined || metadata.arch !== undefined;
  const spec = specFor(knowsArch ? arch : identifyOfficialArch(state, form, path), state, metadata, path);
  checkWeights(spec, state, form);
  checkWeightValues(state, path);
  return { spec, form, state, metadata, fileFormat, keyStyle, ...(quantization && { quantization }) };
}

export interface SaveWeightsOptions {
  /** The input normalization the weights expect (metadata `input_normalization`); ImageNet's by default. */
  normalization?: InputNormalization;
  /** Key naming to write: 'official' (default) or 'timm' (`convert --key-style timm`). */
  keyStyle?: KeyStyle;
  /** Class names in index order (metadata `class_names`), e.g. from image-folder training. */
  classNames?: readonly string[];
  /** More metadata fields (e.g. the int8 calibration's method and report). */
  extraMetadata?: Record<string, string>;
}

/** Writes a state dict with this library's metadata, atomically. */
export async function saveWeights(
  path: string,
  spec: RepVGGSpec,
  form: WeightForm,
  state: StateDict,
  argName = '--out',
  options: SaveWeightsOptions = {},
): Promise<void> {
  const metadata = weightsMetadata(spec, form, options.normalization ?? IMAGENET_NORMALIZATION);
  if (options.classNames !== undefined) metadata.class_names = JSON.stringify(options.classNames);
  Object.assign(metadata, options.extraMetadata);
  await writeSafetensors(path, withKeyStyle(state, options.keyStyle ?? 'official'), metadata, argName);
}
