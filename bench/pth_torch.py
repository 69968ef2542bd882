#!/usr/bin/python3
"""PyTorch side of bench/pth.ts: writes a RepVGG-shaped training checkpoint with torch.save, and times torch.load
of it in a fresh process, so that our readPth can be compared with PyTorch on the very same file.

Usage (normally spawned by dist/bench/pth.js):
  /usr/bin/python3 bench/pth_torch.py make --shapes shapes.json --out B3.pth [--legacy] --digests digests.json
  /usr/bin/python3 bench/pth_torch.py load --path B3.pth
`make` reads {key: shape} (the order is kept), fills every tensor with random float32 values, adds an int64
num_batches_tracked next to every running_var as PyTorch's BatchNorm2d does, saves the state dict and writes the
SHA-256 of each float tensor's float32 bytes (row-major) to --digests. `load` prints one JSON line: seconds and CPU
seconds (user + system) for torch.load, the process's peak RSS in bytes (ru_maxrss) and the RSS after importing
torch (its baseline).
Not for: test fixtures (test/fixtures/make_pth_fixtures.py).
"""

import argparse
import collections
import hashlib
import json
import resource
import sys
import time

import torch

torch.set_num_threads(2)


def rss_bytes():
    """Current resident set size, from /proc (Linux)."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def make(args):
    with open(args.shapes) as f:
        shapes = json.load(f, object_pairs_hook=collections.OrderedDict)
    generator = torch.Generator().manual_seed(args.seed)
    state = collections.OrderedDict()
    for key, shape in shapes.items():
        state[key] = torch.randn(*shape, generator=generator)
        if key.endswith('running_var'):
            state[key] = state[key].abs() + 0.5
            state[key[:-len('running_var')] + 'num_batches_tracked'] = torch.tensor(1000, dtype=torch.int64)
    torch.save(state, args.out, _use_new_zipfile_serialization=not args.legacy)
    digests = {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()
               for k, v in state.items() if v.is_floating_point()}
    with open(args.digests, 'w') as f:
        json.dump(digests, f)


def load(args):
    baseline = rss_bytes()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    state = torch.load(args.path)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    peak = after.ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({'seconds': seconds, 'cpuSeconds': cpu, 'peakRssBytes': peak, 'baselineRssBytes': baseline,
                      'tensors': len(state)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('make')
    p.add_argument('--shapes', required=True)
    p.add_argument('--out', required=True)
    p.add_argument('--digests', required=True)
    p.add_argument('--legacy', action='store_true')
    p.add_argument('--seed', type=int, default=0)
    p = sub.add_parser('load')
    p.add_argument('--path', required=True)
    args = parser.parse_args()
    make(args) if args.command == 'make' else load(args)


if __name__ == '__main__':
    sys.exit(main())
