// Progress on stderr for long-running commands: on a terminal one line redrawn in place; in logs (CI, pipes),
// where a carriage return would run the updates together, a whole line at each tenth of the work instead.
// Used by the training progress bar (lib/train/progress.ts) and the CLI's counts (infer chunks, quantize).
// Not for: what the line says (the callers format it).

export class ProgressLine {
  readonly #stream = process.stderr;
  readonly #interactive = process.stderr.isTTY === true;
  #loggedTenth = -1;

  /** Shows `line` for the work done so far, `fraction` of it (0 to 1). */
  update(line: string, fraction: number): void {
    if (this.#interactive) {
      this.#stream.write(`\r${line}\u001b[K`);
      return;
    }
    const tenth = Math.floor(fraction * 10);
    if (tenth === this.#loggedTenth) return;
    this.#loggedTenth = tenth;
    this.#stream.write(`${line}\n`);
  }

  /** Ends the current line (before other output); the next update starts a new round of tenths. */
  done(): void {
    if (this.#interactive) this.#stream.write('\n');
    this.#loggedTenth = -1;
  }
}

/**
 * A callback for `done` of `total` items: shows `${label} ${done}/${total}${suffix}` and ends the line at the last.
 * @example network.predict(x, { onProgress: countProgress('infer: chunk') })
 */
export function countProgress(label: string, suffix = ''): (done: number, total: number) => void {
  const line = new ProgressLine();
  return (done, total) => {
    line.update(`${label} ${done}/${total}${suffix}`, done / Math.max(1, total));
    if (done === total) line.done();
  };
}
