// `repvgg demo` (what `npm start` runs): builds a RepVGG with random weights and random BN statistics, converts
// it, shows that both forms agree and how much faster and leaner the deployed form is, as a small table.

import { RepVGGNetwork, type BackendName, type PlanReport } from '../engine.js';
import { randomStateDict, seededUniform } from '../models/init.js';
import { officialSpec, parameterCount } from '../models/repvgg.js';
import { formatMiB } from '../bench/report.js';
import { reparameterize } from '../reparam/reparam.js';
import type { HostTensor } from '../tensor.js';
import { archFlag } from './commands.js';
import { choiceFlag, intFlag, type Flags } from './flags.js';

/** Median images/second over `runs` timed predictions after one warm-up. */
async function throughput(network: RepVGGNetwork, input: HostTensor, runs: number): Promise<number> {
  await network.predict(input);
  const seconds: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await network.predict(input);
    seconds.push((performance.now() - start) / 1000);
  }
  seconds.sort((a, b) => a - b);
  return (input.shape[0] as number) / (seconds[Math.floor(runs / 2)] as number);
}

function maxRelativeError(ours: Float32Array, reference: Float32Array): number {
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < reference.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs((ours[i] as number) - (reference[i] as number)));
    maxRef = Math.max(maxRef, Math.abs(reference[i] as number));
  }
  return maxDiff / Math.max(maxRef, Number.MIN_VALUE);
}

/** 'winograd 12, direct 10' (CPU) or 'IMPLICIT_PRECOMP_GEMM 20, ...' (CUDA), most used first. */
function algorithmCounts(plan: PlanReport): string {
  const counts = new Map<string, number>();
  for (const conv of plan.convs) counts.set(conv.algorithm, (counts.get(conv.algorithm) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1]).map(([name, count]) => `${name} ${count}`).join(', ');
}


export async function runDemo(flags: Flags): Promise<void> {
  const spec = officialSpec(archFlag(flags, false) ?? 'A0');
  const batch = intFlag(flags, 'batch', 8);
  const size = intFlag(flags, 'size', 224, 32);
  const log = (text: string): boolean => process.stderr.write(`${text}\n`);

  log(`${spec.arch}: random weights with random BN statistics...`);
  const trainState = randomStateDict(spec, 'train', 7);
  log('re-parameterizing (float64 fusion of 3x3, 1x1 and identity branches)...');
  const convertStart = performance.now();
  const deployed = reparameterize(spec, trainState);
  const convertMs = performance.now() - convertStart;

  const uniform = seededUniform(11);
  const input: HostTensor = { shape: [batch, 3, size, size], data: Float32Array.from({ length: batch * 3 * size * size }, () => 2 * uniform() - 1) };
  const backend = choiceFlag<BackendName>(flags, 'backend', ['cpu', 'cuda', 'auto'], 'auto');
  const trainNet = RepVGGNetwork.fromStateDict(spec, trainState, { backend });
  const deployNet = RepVGGNetwork.fromDeployed(deployed, { backend });
  try {
    log(`compiling both forms for batch ${batch} at ${size}x${size} (choosing conv algorithms by measuring)...`);
    const trainPlan: PlanReport = await trainNet.prepare(batch, size, size);
    const deployPlan: PlanReport = await deployNet.prepare(batch, size, size);
    const trainLogits = await trainNet.predict(input);
    const deployLogits = await deployNet.predict(input);
    const agreement = maxRelativeError(deployLogits.data, trainLogits.data);
    log('timing...');
    const trainSpeed = await throughput(trainNet, input, 5);
    const deploySpeed = await throughput(deployNet, input, 5);

    const rows = [
      ['', 'training-time form', 'deployed form', 'deployed vs train'],
      ['parameters', parameterCount(spec, 'train').toLocaleString('en-US'), parameterCount(spec, 'deploy').toLocaleString('en-US'),
        `${((parameterCount(spec, 'deploy') / parameterCount(spec, 'train')) * 100).toFixed(1)}%`],
      ['activation memory', formatMiB(trainPlan.activationBytes), formatMiB(deployPlan.activationBytes),
        `${((deployPlan.activationBytes / trainPlan.activationBytes) * 100).toFixed(1)}%`],
      [`img/s (batch ${batch}, ${size}x${size})`, trainSpeed.toFixed(1), deploySpeed.toFixed(1), `${(deploySpeed / trainSpeed).toFixed(2)}x`],
    ];
    const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
    const line = (r: string[]): string => `| ${r.map((cell, c) => cell.padEnd(widths[c]!)).join(' | ')} |`;
    const out = [
      `${spec.arch}, ${spec.numClasses} classes, ${deployNet.backend === 'cuda' ? 'CUDA (cuDNN)' : 'CPU (oneDNN)'} backend, fp32`,
      line(rows[0]!),
      `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
      ...rows.slice(1).map(line),
      '',
      `conversion: ${convertMs.toFixed(0)} ms; max relative difference of logits, deployed vs training-time: ${agreement.toExponential(2)}`,
      `deployed convs (${deployPlan.convs.length}) by algorithm: ${algorithmCounts(deployPlan)}`,
    ];
    process.stdout.write(out.join('\n') + '\n');
  } finally {
    trainNet.dispose();
    deployNet.dispose();
  }
}
