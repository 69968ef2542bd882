#!/usr/bin/env -S node --initial-old-space-size=128
// The `repvgg` command: info | convert | infer | export-onnx | quantize | demo | train | eval | serve | bench. Parses flags, calls the library, prints
// results; every failure is one line on stderr naming the argument, with exit status 2 (usage) or 1 (other).
// The launcher line gives node the server's V8 flags (SERVING_NODE_FLAGS in lib/serve/server.ts; a test keeps them equal).
// Not for: library logic — each command is a thin layer over lib/.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { probeCuda } from '../backend/cuda.js';
import { RepvggError, UsageError } from '../errors.js';
import { runConvert, runExportOnnx, runInfer } from './commands.js';
import { BENCH_FLAGS, runBench } from './bench.js';
import { runDemo } from './demo.js';
import { runInfo } from './info.js';
import { QUANTIZE_FLAGS, runQuantize } from './quantize.js';
import { SERVE_FLAGS, runServe } from './serve.js';
import { EVAL_FLAGS, TRAIN_FLAGS, runEval, runTrain } from './train.js';

const USAGE = `Usage: repvgg <command> [flags]

Commands:
  info                                   version and backends (oneDNN ISA; CUDA device or why not)
  convert [--arch A0] --in W --out deploy.safetensors [--key-style official|timm]
                                         re-parameterize training-time weights into the deployed form
  infer [--arch A0] --weights W --input x.npy --output logits.npy [--backend cpu|cuda|auto] [--batch N]
        [--precision fp32|bf16|int8]     class logits for float32 NCHW images (train or deploy weights; int8
                                         needs weights from repvgg quantize)
  infer [--arch A0] --weights W --images a.jpg b.png photos/ [--top 5] [--labels imagenet|FILE] [--json]
        [--resize 256] [--crop 224] [--output logits.npy]
                                         top-k classes with probabilities for JPEG/PNG/WebP files and folders
  export-onnx [--arch A0] --weights W --out model.onnx [--opset 13] [--int8]
                                         the deployed model as ONNX (--int8: QDQ from repvgg quantize weights)
  quantize --weights W [--arch A0] (--calib x.npy | --calib-dir DIR | --calib-dataset fashion-mnist)
           --out W-int8.safetensors [--calib-count 256] [--keep stage4.0,...] [--resize 256] [--crop 224]
           [--method mse|max] [--no-bias-correction] [--weight-bits 7|8 (default: 8 on CPUs with VNNI, else 7)]
                                         INT8 calibration: per-layer SQNR report, scales stored in the file
  demo [--arch A0] [--batch 8] [--size 224] [--backend cpu|cuda|auto]
                                         random A0: convert, check agreement, compare speed and memory
  train (--dataset fashion-mnist | --train-npy x.npy,y.npy [--test-npy x.npy,y.npy] |
         --train-dir DIR [--val-dir DIR] [--image-size 224]) --out DIR|W.safetensors
        [--arch mini|A0..] [--epochs N] [--steps N] [--batch-size N] [--lr F] [--momentum F] [--nesterov]
        [--weight-decay F] [--label-smoothing F] [--warmup-epochs F] [--custom-l2] [--ema DECAY] [--seed N]
        [--init W [--num-classes N] [--freeze-backbone]] [--no-shuffle] [--no-augment] [--crop-padding N]
        [--backend cpu|cuda|auto] [--precision fp32|fp16|bf16 (fp16, bf16: mixed precision, with --backend cuda)]
        [--block repvgg|qa]
        [--keep-checkpoints 3]           train a RepVGG; a run folder gets checkpoints, deploy weights, curve.svg
  train --resume DIR                     continue a run (also after Ctrl-C or a kill)
  eval --weights W (--dataset fashion-mnist | --test-npy x.npy,y.npy | --val-dir DIR [--resize 256] [--crop 224])
       [--arch A0] [--batch N] [--precision fp32|bf16|int8]
                                         top-1 (and top-5) accuracy of training-time or deployed weights
  serve --weights W [--arch A0] [--name repvgg] [--host 127.0.0.1] [--port 8000] [--backend cpu|cuda|auto]
        [--precision fp32|bf16|int8|fp16] [--max-batch 32] [--max-delay-ms 0] [--max-queue 256] [--timeout-ms 10000]
        [--labels imagenet|FILE] [--preprocess imagenet] [--resize 256] [--crop 224] [--body-limit BYTES]
        [--drain-ms 30000] [--log-requests] [--log-level warn] [--device N] [--compute-nice 10]
                                         HTTP server (KServe v2 REST, /v1/classify, /metrics); SIGTERM or SIGINT
                                         drains (exit 0; 1 past --drain-ms), a second signal exits at once (143/130);
                                         --device N: GPU N only (CUDA_VISIBLE_DEVICES); --compute-nice: the nice
                                         value (0 to 19) of the CPU compute threads and the image decoding
                                         workers, below the event loop's
  bench [--models A0,B0|all] [--batches 8] [--backend cpu|cuda|auto] [--precision fp32,bf16,int8,fp16]
        [--forms deploy,train] [--size 224] [--seconds 2] [--peer] [--profile] [--json FILE] [--plot FILE]
                                         the paper's speed table here: img/s and memory per variant, precision,
                                         form and batch (default: every variant, batch 128 on CUDA, 8 on CPU),
                                         the paper's 1080 Ti figures for reference; --peer: onnxruntime-node (CPU);
                                         --profile: per-layer time of each deployed CPU run

--arch accepts RepVGG-A0 or A0 (likewise every variant: ${'A0 A1 A2 B0 B1 B1g2 B1g4 B2 B2g2 B2g4 B3 B3g2 B3g4 D2se'}).
W is safetensors or a PyTorch checkpoint (.pth/.pt from torch.save), with official or timm key names; without
--arch the file's metadata decides, or the official variant whose shapes the tensors have.
`;

type Flags = Record<string, string | boolean | undefined>;

const FLAG_SPECS = {
  info: {},
  convert: { arch: { type: 'string' }, in: { type: 'string' }, out: { type: 'string' }, 'key-style': { type: 'string' } },
  infer: {
    arch: { type: 'string' }, weights: { type: 'string' }, input: { type: 'string' }, output: { type: 'string' },
    backend: { type: 'string' }, batch: { type: 'string' }, precision: { type: 'string' },
    images: { type: 'string', multiple: true }, top: { type: 'string' }, labels: { type: 'string' }, json: { type: 'boolean' },
    resize: { type: 'string' }, crop: { type: 'string' },
  },
  'export-onnx': { arch: { type: 'string' }, weights: { type: 'string' }, out: { type: 'string' }, opset: { type: 'string' }, int8: { type: 'boolean' } },
  quantize: QUANTIZE_FLAGS,
  demo: { arch: { type: 'string' }, batch: { type: 'string' }, size: { type: 'string' }, backend: { type: 'string' } },
  train: TRAIN_FLAGS,
  eval: EVAL_FLAGS,
  serve: SERVE_FLAGS,
  bench: BENCH_FLAGS,
} as const;

type Command = keyof typeof FLAG_SPECS;

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Flags and positional arguments; only `infer --images a.jpg b.png` takes positionals (more images). */
function parseFlags(command: Command, args: string[]): { flags: Flags; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({ args, options: { ...FLAG_SPECS[command], help: { type: 'boolean' } }, strict: true, allowPositionals: command === 'infer' });
    return { flags: values as Flags, positionals };
  } catch (err) {
    throw new UsageError(`${(err as Error).message.split('\n')[0]} (see repvgg --help)`);
  }
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return;
  }
  if (command === '--version') {
    process.stdout.write(`${packageVersion()}\n`);
    return;
  }
  if (!(command in FLAG_SPECS)) throw new UsageError(`Expected a command (info, convert, infer, export-onnx, quantize, demo, train, eval, serve, bench) but received '${command}'`);
  const { flags, positionals } = parseFlags(command as Command, rest);
  if (flags.help === true) {
    process.stdout.write(USAGE);
    return;
  }
  // The one CUDA probe of this process, on a worker thread, before any command picks a backend (a command that
  // probed synchronously would block for up to seconds on a GPU machine).
  if (command === 'info' || ('backend' in FLAG_SPECS[command as Command] && flags.backend !== 'cpu')) await probeCuda();
  switch (command as Command) {
    case 'info':
      return runInfo(packageVersion());
    case 'convert':
      return runConvert(flags);
    case 'infer':
      return runInfer(flags, positionals);
    case 'export-onnx':
      return runExportOnnx(flags);
    case 'quantize':
      return runQuantize(flags);
    case 'demo':
      return runDemo(flags);
    case 'train':
      return runTrain(flags);
    case 'eval':
      return runEval(flags);
    case 'serve':
      return runServe(flags);
    case 'bench':
      return runBench(flags);
  }
}

// A reader that stops early (`repvgg infer --images ... | head`) closes the pipe: stop quietly, as Unix tools do.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof RepvggError) {
    process.stderr.write(`repvgg: ${err.message}\n`);
    process.exitCode = err instanceof UsageError ? 2 : 1;
  } else {
    process.stderr.write(`repvgg: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  }
});
