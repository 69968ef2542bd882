// A one-line progress bar on stderr for training: epoch, step, loss, accuracy, img/s and ETA. On a terminal
// it redraws in place; in logs (CI, pipes) it prints a line every tenth of an epoch instead (lib/progress.ts).

import { ProgressLine } from '../progress.js';

export interface ProgressState {
  epoch: number;
  epochs: number;
  step: number;
  steps: number;
  loss: number;
  accuracy: number;
  imagesPerSecond: number;
  etaSeconds: number;
}

const formatDuration = (s: number): string => {
  if (!Number.isFinite(s)) return '--:--';
  const total = Math.max(0, Math.round(s));
  const m = Math.floor(total / 60);
  return `${m}:${String(total % 60).padStart(2, '0')}`;
};

export class ProgressBar {
  readonly #line = new ProgressLine();

  update(p: ProgressState): void {
    const width = 24;
    const filled = Math.round((p.step / Math.max(1, p.steps)) * width);
    const line =
      `epoch ${p.epoch}/${p.epochs} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${p.step}/${p.steps} ` +
      `loss ${p.loss.toFixed(4)} acc ${(p.accuracy * 100).toFixed(1)}% ${p.imagesPerSecond.toFixed(0)} img/s ETA ${formatDuration(p.etaSeconds)}`;
    this.#line.update(line, p.step / Math.max(1, p.steps));
  }

  /** Ends the current line (before other output). */
  done(message = ''): void {
    this.#line.done();
    if (message) process.stderr.write(`${message}\n`);
  }
}
