// The messages between DataLoader (main thread) and its worker (loader-worker.ts). Types only.
// Not for: logic of either side.

import type { MessagePort } from 'node:worker_threads';

import type { AugmentOptions, Normalization } from './transforms.js';

/** The dataset as SharedArrayBuffer-backed views (shared, never copied again) and the plan. */
export interface WorkerInit {
  readonly images: Uint8Array | Float32Array; // (N, C, H, W) raw, on a SharedArrayBuffer
  readonly labels: Int32Array; // (N), on a SharedArrayBuffer
  readonly count: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly augment: AugmentOptions | null;
  readonly seed: number;
  readonly dropLast: boolean;
  readonly normalization: Normalization;
}

/**
 * workerData: WorkerInit plus the worker's end of a dedicated channel. All messages travel over that channel,
 * so the main thread can pull batches that arrived while it was busy synchronously (receiveMessageOnPort).
 */
export interface WorkerData extends WorkerInit {
  readonly port: MessagePort;
}

/**
 * Main -> worker. A run is one pass over steps [startStep, stepsPerEpoch) of an epoch; the worker builds a
 * run's batches in order, one per credit, so at most `prefetch` batches exist ahead of the consumer.
 */
export type ToWorker =
  | { readonly type: 'start'; readonly runId: number; readonly epoch: number; readonly startStep: number; readonly credits: number }
  | { readonly type: 'credit'; readonly runId: number; readonly credits: number }
  | { readonly type: 'cancel'; readonly runId: number };

/** Worker -> main: one built batch; its three buffers are transferred, not copied. */
export interface BatchMessage {
  readonly type: 'batch';
  readonly runId: number;
  readonly step: number;
  readonly images: ArrayBuffer; // float32 (B, C, H, W)
  readonly labels: ArrayBuffer; // int32 (B)
  readonly indices: ArrayBuffer; // int32 (B)
}

export type FromWorker = BatchMessage;
