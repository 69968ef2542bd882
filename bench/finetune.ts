// End-to-end image-folder training and fine-tuning through the real `repvgg` command: writes two synthetic
// photo-like image folders (bench/synthetic-images.ts) with different classes, pre-trains a RepVGG on the first
// with `--train-dir/--val-dir`, then on the second compares training from scratch, fine-tuning from the
// pre-trained weights (`--init`, new head) and linear probing (`--freeze-backbone`), printing accuracies and times.
// Not for: speed comparisons with other libraries (bench/cpu.ts, bench/train.ts).
// Usage: USAGE below (`node dist/bench/finetune.js --help`).

import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { archList, integerOption, parseBenchArgs, runBench } from '../lib/bench/args.js';
import { writeSyntheticImageFolder } from './synthetic-images.js';

const CLI = fileURLToPath(new URL('../lib/cli/main.js', import.meta.url));

const USAGE = `Usage: node dist/bench/finetune.js [--arch A0] [--image-size 64] [--epochs 4] [--keep DIR]
  --arch        official variant (default A0)
  --image-size  training and evaluation side in pixels (default 64)
  --epochs      epochs of each training run (default 4)
  --keep        write the image folders and runs under DIR and keep them (default: a temporary folder, removed)`;

/** Runs the CLI, echoing its last stderr line as progress; resolves with stdout. */
function repvgg(args: string[]): Promise<{ stdout: string; seconds: number }> {
  const started = performance.now();
  process.stderr.write(`$ repvgg ${args.join(' ')}\n`);
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, ...args], { maxBuffer: 64 * 2 ** 20 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`repvgg ${args[0]} failed: ${stderr.split('\n').filter(Boolean).at(-1) ?? error.message}`));
      else resolve({ stdout, seconds: (performance.now() - started) / 1000 });
    });
  });
}

async function summary(runDir: string): Promise<{ deploy_test_accuracy: number; test_accuracy: number }> {
  return JSON.parse(await readFile(join(runDir, 'summary.json'), 'utf8')) as { deploy_test_accuracy: number; test_accuracy: number };
}

async function main(): Promise<void> {
  const values = parseBenchArgs(USAGE, {
    arch: { type: 'string', default: 'A0' },
    'image-size': { type: 'string', default: '64' },
    epochs: { type: 'string', default: '4' },
    keep: { type: 'string' },
  });
  const arch = archList(values.arch, '--arch', { maxCount: 1 })[0]!;
  const size = String(integerOption(values['image-size'], '--image-size', { min: 32, max: 1024 }));
  const epochs = String(integerOption(values.epochs, '--epochs', { min: 1, max: 1000 }));
  const root = values.keep ?? (await mkdtemp(join(tmpdir(), 'repvgg-finetune-')));
  try {
    const common = ['--image-size', size, '--epochs', epochs, '--batch-size', '32', '--lr', '0.05', '--warmup-epochs', '0.5'];
    const folder = (name: string) => ({ train: join(root, name, 'train'), val: join(root, name, 'val') });
    const [a, b] = [folder('pretrain'), folder('target')];
    process.stderr.write(`writing synthetic image folders under ${root}\n`);
    await writeSyntheticImageFolder(a.train, { classes: 4, imagesPerClass: 80, minSide: 72, maxSide: 160, seed: 1 });
    await writeSyntheticImageFolder(a.val, { classes: 4, imagesPerClass: 20, minSide: 72, maxSide: 160, seed: 2 });
    await writeSyntheticImageFolder(b.train, { classes: 4, imagesPerClass: 30, minSide: 72, maxSide: 160, seed: 3, firstPattern: 4 });
    await writeSyntheticImageFolder(b.val, { classes: 4, imagesPerClass: 20, minSide: 72, maxSide: 160, seed: 4, firstPattern: 4 });

    const rows: [string, number, number, number][] = [];
    const run = async (label: string, dir: string, args: string[]): Promise<void> => {
      const { seconds } = await repvgg(['train', ...args, ...common, '--out', dir]);
      const s = await summary(dir);
      rows.push([label, s.test_accuracy, s.deploy_test_accuracy, seconds]);
    };
    const pretrained = join(root, 'runs', 'pretrain');
    await run(`pre-train ${arch} on 4 classes (320 images)`, pretrained, ['--train-dir', a.train, '--val-dir', a.val, '--arch', arch]);
    const target = ['--train-dir', b.train, '--val-dir', b.val];
    await run('target, from scratch (120 images)', join(root, 'runs', 'scratch'), [...target, '--arch', arch]);
    await run('target, fine-tuned from pre-train (--init)', join(root, 'runs', 'finetune'), [...target, '--init', join(pretrained, 'train.safetensors')]);
    await run('target, linear probe (--freeze-backbone)', join(root, 'runs', 'probe'), [...target, '--init', join(pretrained, 'train.safetensors'), '--freeze-backbone']);
    const check = await repvgg(['eval', '--weights', join(root, 'runs', 'finetune', 'deploy.safetensors'), '--val-dir', b.val, '--crop', size]);

    const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;
    console.log(`\n${arch} at ${size}x${size}, ${epochs} epochs each, synthetic image folders (80 val images per set)\n`);
    console.log('| run | val top-1 (training form) | val top-1 (deployed) | wall s |');
    console.log('|---|---|---|---|');
    for (const [label, trainAcc, deployAcc, seconds] of rows) console.log(`| ${label} | ${pct(trainAcc)} | ${pct(deployAcc)} | ${seconds.toFixed(0)} |`);
    console.log(`\nrepvgg eval --val-dir on the fine-tuned deployed weights: ${check.stdout.trim()}`);
  } finally {
    if (values.keep === undefined) await rm(root, { recursive: true, force: true });
  }
}

await runBench(USAGE, main);
