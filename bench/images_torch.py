#!/usr/bin/python3
"""torchvision + PIL side of bench/images.ts: the official evaluation transform (PIL open + convert('RGB'),
Resize(256), CenterCrop(224), ToTensor, Normalize) over the JPEGs that images.ts wrote, stacked into one float32
NCHW tensor per pass (batches of 32 concatenated with workers), in one process (DataLoader num_workers=0) and with worker processes (num_workers=N).
Prints one JSON line: {"single": img/s, "workers": img/s, "workers_count": N}; with --check FILE --out X it only
writes FILE's tensor (3, 224, 224) float32 raw little-endian to X for the correctness check.

Usage (normally spawned by dist/bench/images.js):
  /usr/bin/python3 bench/images_torch.py --dir DIR --repeat 2 --workers 2 --threads 1
Not for: test fixtures (test/fixtures/make_image_fixtures.py).
"""

import argparse
import glob
import json
import os
import time

import torch
import torchvision.transforms as T
from PIL import Image

TRANSFORM = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


class Files(torch.utils.data.Dataset):
    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with open(self.files[i], "rb") as f:
            return TRANSFORM(Image.open(f).convert("RGB"))


def best_rate(run, count, repeat):
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        batch = run()
        seconds = time.perf_counter() - start
        assert batch.shape == (count, 3, 224, 224)
        best = max(best, count / seconds)
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    # One intra-op thread: per-image tensor ops are tiny, and on the 2-core test machine under load 2 threads made
    # the one-process pipeline 6x slower (9 vs 62 img/s), so 1 is torchvision's best here (DataLoader workers use 1).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--check")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.check:
        with open(args.check, "rb") as f:
            TRANSFORM(Image.open(f).convert("RGB")).numpy().tofile(args.out)
        return
    files = sorted(glob.glob(os.path.join(args.dir, "*.jpg")))
    dataset = Files(files)
    single = best_rate(lambda: torch.stack([dataset[i] for i in range(len(dataset))]), len(files), args.repeat)
    # Batches of 32 so every worker gets some; persistent workers, so only the first pass pays their start.
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, num_workers=args.workers, persistent_workers=True)
    workers = best_rate(lambda: torch.cat(list(loader)), len(files), args.repeat)
    print(json.dumps({"single": single, "workers": workers, "workers_count": args.workers}))


if __name__ == "__main__":
    main()
