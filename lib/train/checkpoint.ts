// Training checkpoints: model weights (official keys), SGD momentum buffers ('optimizer.momentum.<key>'),
// EMA weights ('ema.<key>') and the run position/config in the safetensors metadata, written atomically.
// Not for: plain weight files (lib/io/weights.ts).

import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError } from '../errors.js';
import { readStateDict, writeSafetensors } from '../io/safetensors.js';
import type { HostTensor, StateDict } from '../tensor.js';

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

export async function readCheckpoint(path: string): Promise<CheckpointContents> {
  const { state, metadata } = await readStateDict(path, '--resume');
  if (metadata.format !== 'repvgg-checkpoint' || metadata.position === undefined || metadata.config === undefined) {
    throw new FormatError(`${path} is not a repvgg training checkpoint (no position/config metadata)`);
  }
  const weights: StateDict = new Map();
  const momentum = new Map<string, Float32Array>();
  const ema: StateDict = new Map();
  for (const [key, t] of state) {
    if (key.startsWith(MOMENTUM_PREFIX)) momentum.set(key.slice(MOMENTUM_PREFIX.length), t.data);
    else if (key.startsWith(EMA_PREFIX)) ema.set(key.slice(EMA_PREFIX.length), t as HostTensor);
    else weights.set(key, t);
  }
  return {
    weights, momentum, ema: ema.size > 0 ? ema : undefined,
    position: JSON.parse(metadata.position) as RunPosition,
    config: JSON.parse(metadata.config) as unknown,
    history: JSON.parse(metadata.history ?? '{}') as unknown,
  };
}

/** The newest checkpoint of a run folder (highest global step), or undefined when there is none. */
export async function latestCheckpoint(runDir: string): Promise<string | undefined> {
  let names: string[];
  try {
    names = await readdir(join(runDir, 'checkpoints'));
  } catch {
    return undefined;
  }
  const steps = names
    .map((n) => ({ n, m: /^step-(\d+)\.safetensors$/.exec(n) }))
    .filter((e): e is { n: string; m: RegExpExecArray } => e.m !== null)
    .sort((a, b) => Number(b.m[1]) - Number(a.m[1]));
  return steps[0] ? join(runDir, 'checkpoints', steps[0].n) : undefined;
}

/** File name of the checkpoint taken at a global step (zero-padded so names sort by step). */
export function checkpointName(globalStep: number): string {
  return `step-${String(globalStep).padStart(8, '0')}.safetensors`;
}
