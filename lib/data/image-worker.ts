// A decoding worker thread of images.ts's DecodeWorkerPool: runs sample tasks (decode, transform, normalize) and
// sends each (3, S, S) float32 sample back, its buffer transferred (or writes it to the task's shared output and
// says so), or the error's class and message.
// Not for: import from anywhere but `new Worker(...)` in images.ts (it starts listening on import).

import { setPriority } from 'node:os';
import { isMainThread, parentPort } from 'node:worker_threads';

import { runSampleTask } from './images.js';
import type { SampleReply, SampleRequest, WorkerNice } from './images.js';

if (isMainThread || parentPort === null) throw new Error('image-worker.js must be started as a worker thread by images.ts');
const port = parentPort;

port.on('message', (request: SampleRequest | WorkerNice) => {
  if ('nice' in request) {
    // On Linux, nice is per thread and setpriority(pid 0) sets the calling thread's: this worker's alone. Raising it
    // needs no privilege; a failure (another OS) leaves the priority as it was.
    try {
      setPriority(request.nice);
    } catch {
      // keep the inherited priority
    }
    return;
  }
  runSampleTask(request.task).then(
    (data) => {
      if (request.task.output !== undefined) {
        port.postMessage({ id: request.id, written: true } satisfies SampleReply);
        return;
      }
      const buffer = data.buffer as ArrayBuffer;
      port.postMessage({ id: request.id, data: buffer } satisfies SampleReply, [buffer]);
    },
    (error: unknown) => {
      const name = error instanceof Error ? error.name : 'Error';
      const message = error instanceof Error ? error.message : String(error);
      port.postMessage({ id: request.id, error: { name, message } } satisfies SampleReply);
    },
  );
});
