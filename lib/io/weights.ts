// Model weights on disk: detects training-time vs deployed form from the keys, checks a state dict against an
// architecture (listing the first missing/unexpected keys and shape mismatches), and reads/writes the metadata
// contract (arch, num_classes, form, input normalization, and the full spec for custom architectures).

import { WeightsMismatchError, formatShape } from '../errors.js';
import {
  canonicalArchName,
  expectedWeights,
  officialSpec,
  validateSpec,
  type RepVGGSpec,
  type WeightForm,
} from '../models/repvgg.js';
import type { StateDict } from '../tensor.js';
import { readStateDict, writeSafetensors } from './safetensors.js';

/** Per-channel input normalization recorded in the metadata: x' = (x * scale - mean) / std; ImageNet's by default. */
export interface InputNormalization {
  mean: number[];
  std: number[];
  /** Applied to raw values first (1/255 for 8-bit pixels); 1 when omitted. */
  scale?: number;
}

export const IMAGENET_NORMALIZATION: InputNormalization = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

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

/** Resolves the architecture: an explicit arch name wins; otherwise the file's own metadata. */
function specFor(arch: string | undefined, state: StateDict, metadata: Record<string, string>, path: string): RepVGGSpec {
  const classes = state.get('linear.weight')?.shape[0];
  const inChannels = (state.get('stage0.rbr_dense.conv.weight') ?? state.get('stage0.rbr_reparam.weight'))?.shape[1];
  const options = { ...(classes !== undefined && { numClasses: classes }), ...(inChannels !== undefined && { inChannels }) };
  if (arch !== undefined) return officialSpec(arch, options);
  if (metadata.repvgg_spec !== undefined) return validateSpec(JSON.parse(metadata.repvgg_spec) as RepVGGSpec);
  if (metadata.arch !== undefined && canonicalArchName(metadata.arch) !== undefined) return officialSpec(metadata.arch, options);
  throw new WeightsMismatchError(`${path} records no architecture in its metadata: pass the arch (e.g. --arch A0)`);
}

export interface LoadedWeights {
  spec: RepVGGSpec;
  form: WeightForm;
  state: StateDict;
  metadata: Record<string, string>;
}

/**
 * Reads a safetensors weights file and checks it against the architecture.
 * @param arch official variant name; when omitted the file's metadata decides.
 * @throws FormatError for unreadable files, WeightsMismatchError when the weights do not fit the architecture.
 * @example const { spec, form, state } = await loadWeights('a0.safetensors', 'A0');
 */
export async function loadWeights(path: string, arch?: string, argName = '--weights'): Promise<LoadedWeights> {
  const { state, metadata } = await readStateDict(path, argName);
  const form = detectForm(state);
  const spec = specFor(arch, state, metadata, path);
  checkWeights(spec, state, form);
  return { spec, form, state, metadata };
}

/** Writes a state dict with this library's metadata, atomically. */
export async function saveWeights(
  path: string,
  spec: RepVGGSpec,
  form: WeightForm,
  state: StateDict,
  argName = '--out',
  normalization = IMAGENET_NORMALIZATION,
): Promise<void> {
  await writeSafetensors(path, state, weightsMetadata(spec, form, normalization), argName);
}
