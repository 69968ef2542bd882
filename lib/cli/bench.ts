// `repvgg bench`: the paper's speed table measured on this machine (lib/bench/speed.ts), printed as markdown with
// the paper's 1080 Ti figures beside it for reference, and optionally written as JSON (--json) and an SVG chart
// (--plot). Progress goes to stderr.

import { availableParallelism, cpus } from 'node:os';

import { cudaStatus } from '../backend/cuda.js';
import { loadCpuAddon } from '../backend/native.js';
import { speedChartSvg } from '../bench/chart.js';
import { formatMiB, markdownTable } from '../bench/report.js';
import { PAPER_1080TI_IMAGES_PER_SECOND, benchmarkSpeed, type SpeedForm, type SpeedRow } from '../bench/speed.js';
import type { Precision } from '../engine.js';
import { UsageError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { OFFICIAL_ARCHS, canonicalArchName } from '../models/repvgg.js';
import { checkOutputDistinct, choiceFlag, intFlag, listFlag, numberFlag, optionalFlag, type Flags } from './flags.js';

export const BENCH_FLAGS = {
  models: { type: 'string' }, batches: { type: 'string' }, backend: { type: 'string' }, precision: { type: 'string' },
  size: { type: 'string' }, seconds: { type: 'string' }, forms: { type: 'string' }, peer: { type: 'boolean' },
  profile: { type: 'boolean' }, json: { type: 'string' }, plot: { type: 'string' },
} as const;

const mib = (bytes: number | undefined): string => (bytes === undefined ? '' : formatMiB(bytes));

/** Our rows' speed over a matching row's (same model, backend, precision, batch), as '1.23x', or ''. */
function ratio(row: SpeedRow, rows: readonly SpeedRow[], match: (other: SpeedRow) => boolean): string {
  const other = rows.find((o) => o !== row && o.model === row.model && o.batch === row.batch && match(o));
  return other ? `${(row.throughput.medianImagesPerSecond / other.throughput.medianImagesPerSecond).toFixed(2)}x` : '';
}

function speedTable(rows: readonly SpeedRow[]): string {
  const body = rows.map((r) => [
    r.model, r.engine, r.backend, r.precision, r.form, String(r.batch), r.throughput.medianImagesPerSecond.toFixed(1),
    `${r.throughput.p10ImagesPerSecond.toFixed(1)}–${r.throughput.p90ImagesPerSecond.toFixed(1)}`,
    mib(r.activationBytes), mib(r.weightBytes),
    r.engine === 'ours' && r.form === 'deploy'
      ? ratio(r, rows, (o) => o.engine === 'ours' && o.form === 'train' && o.backend === r.backend && o.precision === r.precision) : '',
    r.engine === 'ours' ? ratio(r, rows, (o) => o.engine === 'onnxruntime-node') : '',
  ]);
  return markdownTable(
    ['model', 'engine', 'backend', 'precision', 'form', 'batch', 'img/s (median)', 'p10–p90', 'activations', 'weights', 'deployed / train form', 'vs onnxruntime-node'],
    body,
  );
}

function paperTable(models: readonly string[]): string {
  const known = [...models, 'ResNet-50'].filter((m) => PAPER_1080TI_IMAGES_PER_SECOND[m] !== undefined);
  if (known.length === 0) return '';
  return [
    "For reference, the paper's Table 4 (a different card: GTX 1080 Ti, fp32, batch 128, 224x224, PyTorch):",
    '',
    markdownTable(['model', 'paper img/s (1080 Ti)'], known.map((m) => [m, String(PAPER_1080TI_IMAGES_PER_SECOND[m])])),
  ].join('\n');
}

function profileTables(rows: readonly SpeedRow[]): string[] {
  const out: string[] = [];
  for (const r of rows) {
    if (!r.profile) continue;
    const { entries, networkMs, sumMs, threading, images, threads } = r.profile;
    const slowest = [...entries].sort((a, b) => b.ms - a.ms).slice(0, 10);
    const plan = threading === 'images'
      ? `batch ${r.batch} split by images: one thread's plan for ${images} image${images === 1 ? '' : 's'}, run alone`
      : `batch ${r.batch} on ${threads} thread${threads === 1 ? '' : 's'}`;
    out.push(
      `Profile, ${r.model} ${r.precision} deployed, ${plan}: whole run ${networkMs.toFixed(2)} ms, primitives alone ${sumMs.toFixed(2)} ms; the 10 slowest:`,
      '',
      markdownTable(['layer', 'primitive', 'ms', 'share'], slowest.map((e) => [e.layer, e.what, e.ms.toFixed(3), `${((e.ms / sumMs) * 100).toFixed(1)}%`])),
      '',
    );
  }
  return out;
}

function machineLine(backend: 'cpu' | 'cuda'): string {
  if (backend === 'cuda') {
    const d = cudaStatus().details;
    return `${d['deviceName'] ?? 'GPU'} (sm ${d['computeCapability'] ?? '?'}), CUDA ${d['runtimeVersion'] ?? '?'}, cuDNN ${d['cudnnVersion'] ?? '?'}`;
  }
  const info = loadCpuAddon().info();
  return `${cpus()[0]?.model ?? 'CPU'}, ${availableParallelism()} cores, ${info.library} ${info.libraryVersion} (${info.isa})`;
}

export async function runBench(flags: Flags): Promise<void> {
  const requested = choiceFlag(flags, 'backend', ['cpu', 'cuda', 'auto'] as const, 'auto');
  const backend: 'cpu' | 'cuda' = requested === 'auto' ? (cudaStatus().available ? 'cuda' : 'cpu') : requested;
  const models = flags.models === 'all' ? [...OFFICIAL_ARCHS] : listFlag(flags, 'models', OFFICIAL_ARCHS, (name) => {
    const canonical = canonicalArchName(name);
    if (canonical === undefined) throw new UsageError(`Expected official variants (${OFFICIAL_ARCHS.join(', ')}) or 'all' for --models but received '${name}'`);
    return canonical;
  });
  const batches = listFlag(flags, 'batches', [backend === 'cuda' ? 128 : 8], (item) => intFlag({ batches: item }, 'batches', 1));
  const precisions = listFlag<Precision>(flags, 'precision', ['fp32'], (item) => choiceFlag({ precision: item }, 'precision', ['fp32', 'bf16', 'int8', 'fp16'], 'fp32'));
  const forms = listFlag<SpeedForm>(flags, 'forms', ['deploy', 'train'], (item) => choiceFlag({ forms: item }, 'forms', ['deploy', 'train'], 'deploy'));
  const jsonPath = optionalFlag(flags, 'json');
  const plotPath = optionalFlag(flags, 'plot');
  if (jsonPath !== undefined && plotPath !== undefined) await checkOutputDistinct(['plot', plotPath], [['json', jsonPath]]);
  const options = {
    models, backend, precisions, batches, forms, size: intFlag(flags, 'size', 224, 32), seconds: numberFlag(flags, 'seconds', 2, 0.01, 3600),
    peer: flags.peer === true, profile: flags.profile === true,
  };
  const rows = await benchmarkSpeed({ ...options, onProgress: (message) => process.stderr.write(`bench: ${message}\n`) });
  const machine = machineLine(backend);
  const report = [
    `RepVGG speed, ${options.size}x${options.size}, random weights; ${machine}; node ${process.version}`,
    '',
    speedTable(rows),
    '',
    paperTable(models),
    '',
    ...profileTables(rows),
  ];
  process.stdout.write(`${report.join('\n').trimEnd()}\n`);
  if (jsonPath !== undefined) {
    const json = { machine, options, paper1080Ti: PAPER_1080TI_IMAGES_PER_SECOND, results: rows };
    await writeFileAtomic(jsonPath, Buffer.from(`${JSON.stringify(json, null, 2)}\n`), '--json');
    process.stderr.write(`bench: wrote ${jsonPath}\n`);
  }
  if (plotPath !== undefined) {
    await writeFileAtomic(plotPath, Buffer.from(`${speedChartSvg(rows, `${machine}, ${options.size}x${options.size}`, PAPER_1080TI_IMAGES_PER_SECOND)}\n`), '--plot');
    process.stderr.write(`bench: wrote ${plotPath}\n`);
  }
}
