// Learning-rate schedule of the recipe: linear warm-up, then cosine decay to zero, evaluated per step.

export interface ScheduleOptions {
  baseLr: number;
  totalSteps: number;
  warmupSteps: number;
}

/** Learning rate for 0-based step: (step+1)/warmup * base during warm-up, then half-cosine to 0. */
export function learningRate(step: number, { baseLr, totalSteps, warmupSteps }: ScheduleOptions): number {
  if (step < warmupSteps) return (baseLr * (step + 1)) / warmupSteps;
  const span = Math.max(1, totalSteps - warmupSteps);
  const progress = Math.min(1, (step - warmupSteps) / span);
  return 0.5 * baseLr * (1 + Math.cos(Math.PI * progress));
}
