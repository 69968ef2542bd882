// Reading PyTorch checkpoints: our readPth against torch.load on the same files. For each model (training-time
// RepVGG weights with BN statistics, keys and shapes from expectedWeights) and format, bench/pth_torch.py writes the
// checkpoint with torch.save; then a child process of ours reads it and every tensor's SHA-256 must equal
// PyTorch's; only then are both timed, each load in a fresh process (seconds, peak RSS), and one markdown table
// is printed. Usage: USAGE below (`node dist/bench/pth.js --help`).
// Not for: test coverage of the format (test/pth.test.ts) or inference speed (bench/cpu.ts).

import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

import { archList, choiceList, integerOption, parseBenchArgs, runBench } from '../lib/bench/args.js';
import { readPth } from '../lib/io/pth.js';
import { expectedWeights, officialSpec } from '../lib/models/repvgg.js';
import { median, runProcess } from './process.js';

const THIS_SCRIPT = fileURLToPath(import.meta.url);
const TORCH_SCRIPT = join(dirname(THIS_SCRIPT), '..', '..', 'bench', 'pth_torch.py');
const MB = 1024 * 1024;

interface LoadResult {
  seconds: number;
  /** User + system CPU time of the load: less sensitive than wall time to other work on a shared machine. */
  cpuSeconds: number;
  peakRssBytes: number;
  baselineRssBytes: number;
  tensors: number;
}

interface Row {
  model: string;
  format: string;
  fileBytes: number;
  ours: LoadResult;
  torch: LoadResult;
}



/** The median of each field over several runs. */
function medianResult(results: LoadResult[]): LoadResult {
  return {
    seconds: median(results.map((r) => r.seconds)),
    cpuSeconds: median(results.map((r) => r.cpuSeconds)),
    peakRssBytes: median(results.map((r) => r.peakRssBytes)),
    baselineRssBytes: median(results.map((r) => r.baselineRssBytes)),
    tensors: results[0]?.tensors ?? 0,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Child modes: one load per process, so that peak RSS belongs to that load alone

async function childTime(path: string): Promise<void> {
  const baselineRssBytes = process.memoryUsage().rss;
  const start = performance.now();
  const cpuStart = process.cpuUsage();
  const { state } = await readPth(path);
  const cpu = process.cpuUsage(cpuStart);
  const seconds = (performance.now() - start) / 1000;
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  const peakRssBytes = process.resourceUsage().maxRSS * 1024; // maxRSS is in KiB
  const result: LoadResult = { seconds, cpuSeconds, peakRssBytes, baselineRssBytes, tensors: state.size };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

async function childDigest(path: string): Promise<void> {
  const { state } = await readPth(path);
  const digests: Record<string, string> = {};
  for (const [name, { data }] of state) {
    digests[name] = createHash('sha256').update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)).digest('hex');
  }
  process.stdout.write(`${JSON.stringify(digests)}\n`);
}

// ---------------------------------------------------------------------------------------------------------------
// Parent

/** Whether our tensors are bit-identical to PyTorch's, listing the first differences. */
function compareDigests(ours: Record<string, string>, torch: Record<string, string>): string[] {
  const problems: string[] = [];
  for (const [key, digest] of Object.entries(torch)) {
    if (ours[key] === undefined) problems.push(`missing '${key}'`);
    else if (ours[key] !== digest) problems.push(`'${key}' differs`);
  }
  for (const key of Object.keys(ours)) if (torch[key] === undefined) problems.push(`unexpected '${key}'`);
  return problems.slice(0, 5);
}

async function benchOne(python: string, dir: string, model: string, format: string, repeats: number): Promise<Row | undefined> {
  const shapesPath = join(dir, `${model}.shapes.json`);
  const digestsPath = join(dir, `${model}-${format}.digests.json`);
  const path = join(dir, `${model}-${format}.pth`);
  await writeFile(shapesPath, JSON.stringify(Object.fromEntries(expectedWeights(officialSpec(model), 'train'))));
  process.stderr.write(`${model} ${format}: writing the checkpoint with torch.save...\n`);
  await runProcess(python, [TORCH_SCRIPT, 'make', '--shapes', shapesPath, '--out', path, '--digests', digestsPath, ...(format === 'legacy' ? ['--legacy'] : [])]);
  try {
    const fileBytes = (await stat(path)).size;
    const torchDigests = JSON.parse(await readFile(digestsPath, 'utf8')) as Record<string, string>;
    const ourDigests = JSON.parse(await runProcess(process.execPath, [THIS_SCRIPT, '--digest', path])) as Record<string, string>;
    const problems = compareDigests(ourDigests, torchDigests);
    if (problems.length > 0) {
      process.stderr.write(`${model} ${format}: our tensors differ from PyTorch's (${problems.join('; ')}); not timed\n`);
      process.exitCode = 1;
      return undefined;
    }
    process.stderr.write(`${model} ${format}: all ${Object.keys(torchDigests).length} tensors bit-identical to PyTorch's; timing ${repeats}x each...\n`);
    const ours: LoadResult[] = [];
    const torch: LoadResult[] = [];
    for (let i = 0; i < repeats; i++) {
      ours.push(JSON.parse(await runProcess(process.execPath, [THIS_SCRIPT, '--time', path])) as LoadResult);
      torch.push(JSON.parse(await runProcess(python, [TORCH_SCRIPT, 'load', '--path', path])) as LoadResult);
    }
    return { model, format, fileBytes, ours: medianResult(ours), torch: medianResult(torch) };
  } finally {
    await rm(path, { force: true });
  }
}

function table(rows: Row[]): string {
  const mb = (bytes: number): string => (bytes / MB).toFixed(1);
  const lines = [
    '| model | format | file MB | readPth s | torch.load s | torch / ours time | CPU s: ours / torch | readPth peak RSS MB (x file) | ' +
      'torch.load peak RSS MB (x file) | RSS before load MB: ours / torch |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const { model, format, fileBytes, ours, torch } of rows) {
    lines.push(
      `| ${model} | ${format} | ${mb(fileBytes)} | ${ours.seconds.toFixed(3)} | ${torch.seconds.toFixed(3)} | ` +
        `${(torch.seconds / ours.seconds).toFixed(2)}x | ${ours.cpuSeconds.toFixed(2)} / ${torch.cpuSeconds.toFixed(2)} | ${mb(ours.peakRssBytes)} (${(ours.peakRssBytes / fileBytes).toFixed(2)}x) | ` +
        `${mb(torch.peakRssBytes)} (${(torch.peakRssBytes / fileBytes).toFixed(2)}x) | ${mb(ours.baselineRssBytes)} / ${mb(torch.baselineRssBytes)} |`,
    );
  }
  return lines.join('\n');
}

const USAGE = `Usage: node dist/bench/pth.js [--models A0,B3] [--formats zip,legacy] [--repeats 3] [--python /usr/bin/python3] [--json out.json]
  --models   official variants whose training-time weights are saved and read (default A0,B3)
  --formats  zip (torch.save's default) and/or legacy (_use_new_zipfile_serialization=False) (default zip,legacy)
  --repeats  fresh processes timed per reader, model and format (default 3)
  --python   the Python with torch (default /usr/bin/python3, Debian's python3-torch)
  --json     also write the rows as JSON to this file`;

async function main(): Promise<void> {
  const values = parseBenchArgs(USAGE, {
    models: { type: 'string', default: 'A0,B3' },
    formats: { type: 'string', default: 'zip,legacy' },
    repeats: { type: 'string', default: '3' },
    python: { type: 'string', default: '/usr/bin/python3' },
    json: { type: 'string' },
    // The timed child processes: this script run with one of these.
    time: { type: 'string' },
    digest: { type: 'string' },
  });
  if (values.time !== undefined) return childTime(values.time);
  if (values.digest !== undefined) return childDigest(values.digest);
  const repeats = integerOption(values.repeats, '--repeats', { min: 1, max: 100 });
  const models = archList(values.models, '--models');
  const formats = choiceList(values.formats, '--formats', ['zip', 'legacy']);
  const dir = await mkdtemp(join(tmpdir(), 'repvgg-pth-bench-'));
  const rows: Row[] = [];
  try {
    for (const model of models) {
      for (const format of formats) {
        const row = await benchOne(values.python, dir, model, format, repeats);
        if (row !== undefined) rows.push(row);
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  process.stdout.write(
    `Reading training-time RepVGG checkpoints (float32, torch.save): median of ${repeats} fresh processes each; ` +
      'peak RSS is the whole process (Node.js or Python with torch imported).\n\n' + `${table(rows)}\n`,
  );
  if (values.json !== undefined) await writeFile(values.json, `${JSON.stringify({ repeats, rows }, null, 2)}\n`);
}

await runBench(USAGE, main);
