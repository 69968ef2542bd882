#!/usr/bin/python3
"""PyTorch side of bench/train.ts (CPU, or with --device cuda the GPU, eager fp32 or --amp): trains a training-time RepVGG for a number of SGD steps on the batch that
train.ts wrote and prints one JSON line with the timings. The model is defined here (module names as in the
official RepVGG repository: stage0, stage1..4, rbr_dense.conv/bn, rbr_1x1.conv/bn, rbr_identity, gap, linear), with
PyTorch's default initialization, so weights and the per-step work match ours; the initial weights differ.
The network comes from train.ts as --spec, our RepVGGSpec as JSON (stemChannels, stemStride, stageChannels,
stageDepths, stageStrides, blockGroups, inChannels, numClasses), and the parameter count goes back in the output
for train.ts to compare with ours: the two cannot drift apart (until Dec 2026 this file defined RepVGG-mini itself
with narrower stages than lib/train/presets.ts had since Nov 2026, and PyTorch's side did less work).

Usage (normally spawned by dist/bench/train.js):
  /usr/bin/python3 bench/torch_train.py --arch RepVGG-mini --spec '{"stemChannels": 32, ...}' --batch 128 --size 28 \
      --data DIR --steps 20 --warmup 3 --threads 2
DIR holds x.f32 (batch*C*H*W float32, little-endian) and y.i32 (batch int32). Without --data a random batch is used.
Not for: fixtures for tests (test/fixtures/make_fixtures.py).
"""

import argparse
import contextlib
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn


class ConvBN(nn.Sequential):
    def __init__(self, cin, cout, kernel, stride, padding, groups):
        super().__init__()
        self.add_module('conv', nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False))
        self.add_module('bn', nn.BatchNorm2d(cout))


class RepVGGBlock(nn.Module):
    """Training-time block: ReLU(BN(conv3x3 x) + BN(conv1x1 x) [+ BN(x)])."""

    def __init__(self, cin, cout, stride, groups):
        super().__init__()
        self.nonlinearity = nn.ReLU()
        self.se = nn.Identity()
        self.rbr_identity = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None
        self.rbr_dense = ConvBN(cin, cout, 3, stride, 1, groups)
        self.rbr_1x1 = ConvBN(cin, cout, 1, stride, 0, groups)

    def forward(self, x):
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return self.nonlinearity(self.se(out))


class RepVGG(nn.Module):
    def __init__(self, in_channels, num_classes, stem_channels, stem_stride, stage_channels, stage_depths,
                 stage_strides, block_groups):
        super().__init__()
        self.stage0 = RepVGGBlock(in_channels, stem_channels, stem_stride, 1)
        cin = stem_channels
        block = 0
        for s, (cout, depth, stride) in enumerate(zip(stage_channels, stage_depths, stage_strides)):
            blocks = []
            for i in range(depth):
                blocks.append(RepVGGBlock(cin, cout, stride if i == 0 else 1, block_groups[block]))
                block += 1
                cin = cout
            setattr(self, f'stage{s + 1}', nn.Sequential(*blocks))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.stage0(x)
        for s in range(1, 5):
            x = getattr(self, f'stage{s}')(x)
        return self.linear(torch.flatten(self.gap(x), 1))


def make_model(spec):
    """The training-time RepVGG of a RepVGGSpec (lib/models/repvgg.ts); SE and QARepVGG blocks are not modelled."""
    if spec.get('seReduction', 0) or spec.get('block') is not None:
        raise SystemExit('torch_train.py models plain RepVGG blocks only (no SE, no QARepVGG)')
    return RepVGG(spec['inChannels'], spec['numClasses'], spec['stemChannels'], spec['stemStride'], spec['stageChannels'],
                  spec['stageDepths'], spec['stageStrides'], spec['blockGroups'])


def param_groups(model, weight_decay):
    """The official sgd_optimizer rule: no weight decay for biases and for BN of the dense and 1x1 branches."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if 'bias' in name or 'bn' in name else decay).append(p)
    return [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--arch', default='custom', help='display name only')
    ap.add_argument('--spec', required=True, help='the network: our RepVGGSpec as JSON')
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--size', type=int, default=28)
    ap.add_argument('--data', default=None)
    ap.add_argument('--steps', type=int, default=20)
    ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--lr', type=float, default=0.05)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    ap.add_argument('--amp', action='store_true', help='CUDA only: autocast fp16 with a GradScaler (PyTorch AMP)')
    args = ap.parse_args()

    spec = json.loads(args.spec)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    shape = (args.batch, spec['inChannels'], args.size, args.size)
    if args.data:
        x = torch.from_numpy(np.fromfile(os.path.join(args.data, 'x.f32'), dtype='<f4').reshape(shape).copy())
        y = torch.from_numpy(np.fromfile(os.path.join(args.data, 'y.i32'), dtype='<i4').astype(np.int64))
    else:
        x = torch.randn(shape)
        y = torch.randint(0, spec['numClasses'], (args.batch,))
    device = torch.device(args.device)
    cuda = args.device == 'cuda'
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False  # ours trains in true fp32
        torch.backends.cudnn.allow_tf32 = False
    x, y = x.to(device), y.to(device)
    model = make_model(spec).to(device).train()
    opt = torch.optim.SGD(param_groups(model, 5e-4), lr=args.lr, momentum=0.9, nesterov=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    scaler = torch.cuda.amp.GradScaler(enabled=True) if cuda and args.amp else None

    def sync():
        if cuda:
            torch.cuda.synchronize()

    losses, times = [], []
    for step in range(args.warmup + args.steps):
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type='cuda', dtype=torch.float16) if cuda and args.amp else contextlib.nullcontext():
            loss = loss_fn(model(x), y)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        sync()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    timed = times[args.warmup:]
    total = sum(timed)
    print(json.dumps({
        'torch': torch.__version__,
        'threads': torch.get_num_threads(),
        'device': args.device,
        'amp': bool(cuda and args.amp),
        'arch': args.arch,
        'parameters': sum(p.numel() for p in model.parameters()),
        'batch': args.batch,
        'steps': args.steps,
        'seconds': total,
        'images_per_second': args.batch * len(timed) / total,
        'step_ms': [t * 1000 for t in timed],
        'losses': losses,
    }))
    sys.stdout.flush()


if __name__ == '__main__':
    main()
