// Training checkpoints: model weights (official keys), SGD momentum buffers ('optimizer.momentum.<key>'),
// EMA weights ('ema.<key>') and the run position/config in the safetensors metadata, written atomically.
// Not for: plain weight files (lib/io/weights.ts).

import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError, WeightsMismatchError, describeValue } from '../errors.js';
import { TEMP_FILE_PATTERN } from '../io/atomic.js';
import { readStateDict, writeSafetensors } from '../io/safetensors.js';
import { checkWeights } from '../io/weights.js';
import { checkSpecAgainstKeys, parseSpec, type RepVGGSpec } from '../models/repvgg.js';
import type { HostTensor, StateDict } from '../tensor.js';
import type { TrainHistory } from './trainer.js';

const MOMENTUM_PREFIX = 'optimizer.momentum.';
const EMA_PREFIX = 'ema.';

export interface RunPosition {
  /** Epoch to continue in (0-based) and the first step of it not yet taken. */
  epoch: number;
  stepInEpoch: number;
  globalStep: number;
}

export interface CheckpointContents {
  weights: StateDict;
  momentum: Map<string, Float32Array>;
  ema: StateDict | undefined;
  position: RunPosition;
  /** JSON-serializable run configuration and history, stored verbatim. */
  config: unknown;
  history: unknown;
}

export async function writeCheckpoint(path: string, c: CheckpointContents): Promise<void> {
  const state: StateDict = new Map(c.weights);
  for (const [key, buf] of c.momentum) state.set(`${MOMENTUM_PREFIX}${key}`, { shape: [buf.length], data: buf });
  if (c.ema) for (const [key, t] of c.ema) state.set(`${EMA_PREFIX}${key}`, t);
  await writeSafetensors(path, state, {
    format: 'repvgg-checkpoint',
    position: JSON.stringify(c.position),
    config: JSON.stringify(c.config),
    history: JSON.stringify(c.history),
  }, '--out');
}

/** Most [step, value] points in a run's history: the loss is logged every 20 steps, so this covers 20M steps. */
const MAX_HISTORY_POINTS = 1_000_000;

function parseJsonField(text: string, field: string, path: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new FormatError(`${path}: metadata '${field}' is not valid JSON (${(error as Error).message})`);
  }
}

function fieldError(expected: string, field: string, value: unknown, path: string): FormatError {
  return new FormatError(`${path}: Expected ${expected} for ${field} but received ${describeValue(value)}`);
}

function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parsePosition(text: string, path: string): RunPosition {
  const value = parseJsonField(text, 'position', path);
  if (!isJsonObject(value)) throw fieldError('a JSON object {epoch, stepInEpoch, globalStep}', 'position', value, path);
  const count = (name: keyof RunPosition): number => {
    const n = value[name];
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) {
      throw fieldError('a non-negative safe integer', `position.${name}`, n, path);
    }
    return n;
  };
  return { epoch: count('epoch'), stepInEpoch: count('stepInEpoch'), globalStep: count('globalStep') };
}

/** The run configuration with its spec checked (bounded, consistent) the same way as weights metadata. */
function parseConfig(text: string, path: string): Record<string, unknown> & { spec: RepVGGSpec } {
  const value = parseJsonField(text, 'config', path);
  if (!isJsonObject(value)) throw fieldError('a JSON object', 'config', value, path);
  return { ...value, spec: parseSpec(value.spec, `${path} metadata config.spec`) };
}

/** A list of [global step, value] points; JSON wrote NaN (a diverged loss) as null, which becomes NaN again. */
function parsePoints(value: unknown, field: string, path: string): [number, number][] {
  if (!Array.isArray(value) || value.length > MAX_HISTORY_POINTS) {
    throw fieldError(`an array of at most ${MAX_HISTORY_POINTS} [step, value] pairs`, field, value, path);
  }
  return value.map((point: unknown, i): [number, number] => {
    const [step, y] = Array.isArray(point) ? (point as unknown[]) : [];
    const valid =
      Array.isArray(point) && point.length === 2 && Number.isSafeInteger(step) && (step as number) >= 0 &&
      (typeof y === 'number' || y === null);
    if (!valid) throw fieldError('a [step, value] pair of a non-negative integer and a number', `${field}[${i}]`, point, path);
    return [step as number, y === null ? NaN : (y as number)];
  });
}

function parseHistory(text: string | undefined, path: string): TrainHistory {
  if (text === undefined) return { loss: [], testAccuracy: [] };
  const value = parseJsonField(text, 'history', path);
  if (!isJsonObject(value)) throw fieldError('a JSON object {loss, testAccuracy}', 'history', value, path);
  return {
    loss: parsePoints(value.loss, 'history.loss', path),
    testAccuracy: parsePoints(value.testAccuracy, 'history.testAccuracy', path),
  };
}

/**
 * Reads a checkpoint written by writeCheckpoint, checking everything in it before the caller builds on it: the
 * position, the config's spec (bounded, and matching the weights' keys and shapes), the history, the momentum
 * buffers (one per weight, of its size) and the EMA weights.
 * @throws ArgumentValueError when the file is missing; FormatError naming the file and the field for bad metadata;
 *   WeightsMismatchError when the weights, momentum or EMA do not fit the config's spec.
 */
export async function readCheckpoint(path: string): Promise<CheckpointContents> {
  const { state, metadata } = await readStateDict(path, '--resume');
  if (metadata.format !== 'repvgg-checkpoint' || metadata.position === undefined || metadata.config === undefined) {
    throw new FormatError(`${path} is not a repvgg training checkpoint (no position/config metadata)`);
  }
  const position = parsePosition(metadata.position, path);
  const config = parseConfig(metadata.config, path);
  const history = parseHistory(metadata.history, path);
  const weights: StateDict = new Map();
  const momentum = new Map<string, Float32Array>();
  const ema: StateDict = new Map();
  for (const [key, t] of state) {
    if (key.startsWith(MOMENTUM_PREFIX)) momentum.set(key.slice(MOMENTUM_PREFIX.length), t.data);
    else if (key.startsWith(EMA_PREFIX)) ema.set(key.slice(EMA_PREFIX.length), t as HostTensor);
    else weights.set(key, t);
  }
  // The cheap block count first, so a spec that lies about its depth fails before its key list is built.
  checkSpecAgainstKeys(config.spec, weights.keys(), 'train', path);
  checkWeights(config.spec, weights, 'train');
  if (ema.size > 0) checkWeights(config.spec, ema, 'train');
  for (const [key, buffer] of momentum) {
    const size = weights.get(key)?.data.length;
    if (size !== buffer.length) {
      throw new WeightsMismatchError(
        `${path}: momentum buffer '${key}' has ${buffer.length} elements but ` +
          (size === undefined ? 'the checkpoint holds no such weight' : `the weight has ${size}`),
      );
    }
  }
  return { weights, momentum, ema: ema.size > 0 ? ema : undefined, position, config, history };
}

/** The newest checkpoint of a run folder (highest global step), or undefined when there is none. */
export async function latestCheckpoint(runDir: string): Promise<string | undefined> {
  const newest = (await checkpointFiles(runDir)).at(-1);
  return newest === undefined ? undefined : join(runDir, 'checkpoints', newest);
}

/** File name of the checkpoint taken at a global step (zero-padded so names sort by step). */
export function checkpointName(globalStep: number): string {
  return `step-${String(globalStep).padStart(8, '0')}.safetensors`;
}

/** The checkpoint file names of a run folder, oldest (lowest global step) first. */
async function checkpointFiles(runDir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(join(runDir, 'checkpoints'));
  } catch {
    return [];
  }
  const step = (name: string): number => Number(/^step-(\d+)\.safetensors$/.exec(name)?.[1] ?? Number.NaN);
  return names.filter((n) => Number.isFinite(step(n))).sort((a, b) => step(a) - step(b));
}

/** Deletes all but the newest `keep` checkpoints of a run folder; returns the names deleted. */
export async function pruneCheckpoints(runDir: string, keep: number): Promise<string[]> {
  const files = await checkpointFiles(runDir);
  const doomed = files.slice(0, Math.max(0, files.length - keep));
  for (const name of doomed) await rm(join(runDir, 'checkpoints', name), { force: true });
  return doomed;
}

/**
 * Deletes the temp files an interrupted atomic write leaves (a kill between creating `.NAME.PID.HEX.tmp` and
 * renaming it) from a run folder and its checkpoints folder; returns the paths deleted. Only names of that exact
 * pattern are touched.
 */
export async function removeStaleTempFiles(runDir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const dir of [runDir, join(runDir, 'checkpoints')]) {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      if (!TEMP_FILE_PATTERN.test(name)) continue;
      await rm(join(dir, name), { force: true });
      removed.push(join(dir, name));
    }
  }
  return removed;
}
