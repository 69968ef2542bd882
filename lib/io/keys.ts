// Weight key naming schemes: the official RepVGG code's names (our canonical form), timm's byobnet names for the
// same tensors, and the `module.` prefix DataParallel adds. Detects which scheme a state dict uses and renames
// it either way. Not for: checking that the renamed weights fit an architecture (weights.ts does that next).

import { ArgumentValueError, WeightsMismatchError, describeValue } from '../errors.js';
import type { StateDict } from '../tensor.js';

/** 'official': stage0 / stage1.0.rbr_dense / linear. 'timm': stem / stages.0.0.conv_kxk / head.fc. */
export type KeyStyle = 'official' | 'timm';

export const KEY_STYLES: readonly KeyStyle[] = ['official', 'timm'];

/**
 * Renames that hold anywhere inside a key once the block prefix is mapped, official -> timm. Each pair is a
 * whole dotted component, so 'se.down.' cannot match inside another name.
 */
const COMPONENT_RENAMES: readonly (readonly [string, string])[] = [
  ['rbr_dense.', 'conv_kxk.'],
  ['rbr_1x1.', 'conv_1x1.'],
  ['rbr_identity.', 'identity.'],
  ['rbr_reparam.', 'reparam_conv.'],
  ['se.down.', 'attn.fc1.'],
  ['se.up.', 'attn.fc2.'],
];

const OFFICIAL_STEM = /^stage0\./;
const OFFICIAL_STAGE = /^stage([1-9]\d*)\.(\d+)\./;
const TIMM_STEM = /^stem\./;
const TIMM_STAGE = /^stages\.(\d+)\.(\d+)\./;

/** The naming a state dict uses: timm when any key has a timm-only prefix, official otherwise. */
export function detectKeyStyle(keys: Iterable<string>): KeyStyle {
  for (const key of keys) {
    if (TIMM_STEM.test(key) || TIMM_STAGE.test(key) || key.startsWith('head.fc.')) return 'timm';
  }
  return 'official';
}

function replaceComponents(key: string, from: 0 | 1): string {
  const to = from === 0 ? 1 : 0;
  let renamed = key;
  for (const pair of COMPONENT_RENAMES) {
    renamed = renamed.split(`.${pair[from]}`).join(`.${pair[to]}`);
  }
  return renamed;
}

/** One official key in timm's naming, e.g. 'stage1.0.rbr_dense.conv.weight' -> 'stages.0.0.conv_kxk.conv.weight'. */
export function officialToTimmKey(key: string): string {
  let renamed = key;
  if (OFFICIAL_STEM.test(key)) renamed = key.replace(OFFICIAL_STEM, 'stem.');
  else if (OFFICIAL_STAGE.test(key)) renamed = key.replace(OFFICIAL_STAGE, (_, s: string, i: string) => `stages.${Number(s) - 1}.${i}.`);
  else if (key.startsWith('linear.')) return `head.fc.${key.slice('linear.'.length)}`;
  return replaceComponents(renamed, 0);
}

/** One timm key in the official naming, e.g. 'stages.0.0.conv_kxk.conv.weight' -> 'stage1.0.rbr_dense.conv.weight'. */
export function timmToOfficialKey(key: string): string {
  let renamed = key;
  if (TIMM_STEM.test(key)) renamed = key.replace(TIMM_STEM, 'stage0.');
  else if (TIMM_STAGE.test(key)) renamed = key.replace(TIMM_STAGE, (_, s: string, i: string) => `stage${Number(s) + 1}.${i}.`);
  else if (key.startsWith('head.fc.')) return `linear.${key.slice('head.fc.'.length)}`;
  return replaceComponents(renamed, 1);
}

/** Drops the 'module.' prefix torch.nn.DataParallel puts on every key, when every key has it. */
export function stripModulePrefix(state: StateDict): StateDict {
  const keys = [...state.keys()];
  if (keys.length === 0 || !keys.every((k) => k.startsWith('module.'))) return state;
  return new Map([...state].map(([k, t]) => [k.slice('module.'.length), t]));
}

function renameAll(state: StateDict, rename: (key: string) => string, source: string): StateDict {
  const renamed: StateDict = new Map();
  for (const [key, tensor] of state) {
    const name = rename(key);
    if (renamed.has(name)) {
      throw new WeightsMismatchError(`${source}: two keys map to '${name}' after renaming (one of them is '${key}')`);
    }
    renamed.set(name, tensor);
  }
  return renamed;
}

/**
 * A state dict under the official names, whatever naming it came with (detected from the keys), with a
 * DataParallel 'module.' prefix removed. Tensors are shared, not copied.
 * @throws WeightsMismatchError when two keys would collapse into one name.
 */
export function toOfficialKeys(state: StateDict, source = 'weights'): { state: StateDict; style: KeyStyle } {
  const unprefixed = stripModulePrefix(state);
  const style = detectKeyStyle(unprefixed.keys());
  return { state: style === 'timm' ? renameAll(unprefixed, timmToOfficialKey, source) : unprefixed, style };
}

/**
 * An official-named state dict under the requested naming (for `convert --key-style timm`).
 * @throws ArgumentValueError for an unknown style.
 */
export function withKeyStyle(state: StateDict, style: KeyStyle): StateDict {
  if (!KEY_STYLES.includes(style)) {
    throw new ArgumentValueError(`Expected one of ${KEY_STYLES.join(', ')} for keyStyle but received ${describeValue(style)}`);
  }
  return style === 'timm' ? renameAll(state, officialToTimmKey, 'weights') : state;
}
