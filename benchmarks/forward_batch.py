"""Forward time per image by batch size, and the size ``forward_batch: auto`` picks: how the auto rule was chosen.

For CIFAR ResNet-20 at 32 px, the quickstart's small CNN at 64 px and ResNet-50 at 224 px (random
weights), every batch size is timed on reused images, the sizes taking turns in every repetition
(medians of ``--repeats``), under this process's fast path (``--threads``, ``--allocator``: run it
once with ``--allocator default`` to see glibc's defaults). Each batch is forwarded as many times as
makes about 1024 images (64 at 224 px), so small batches are not timed on a few milliseconds.

    python benchmarks/forward_batch.py [--threads 1] [--allocator tuned|default] [--repeats 5] [--models r20,cnn,r50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from bench import fastpath
from bench.explainers.base import forward_batch_size
from bench.models.cifar_resnet import CifarResNet
from bench.models.small_cnn import build_small_cnn

MODELS = {
    "r20": ("cifar_resnet20 32px", lambda: CifarResNet(20), 32, [16, 32, 64, 128, 256, 512]),
    "cnn": ("small_cnn 64px", lambda: build_small_cnn((16, 32, 64, 64), 5), 64, [8, 16, 21, 32, 64, 128, 256]),
    "r50": ("resnet50 224px", None, 224, [1, 2, 4, 8, 16, 24, 32, 64]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1")
    parser.add_argument("--allocator", choices=["tuned", "default"], default="tuned")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="r20,cnn,r50")
    args = parser.parse_args(argv)
    applied = fastpath.configure(fastpath.parse_threads(args.threads), args.allocator)
    print(f"{applied.describe()}, torch {torch.__version__}; ms per image, medians of {args.repeats}; "
          f"load {os.getloadavg()[0]:.1f} at the start\n")  # fmt: skip
    for key in args.models.split(","):
        label, build, size, sizes = MODELS[key]
        torch.manual_seed(0)
        if build is None:
            import torchvision

            build = lambda: torchvision.models.resnet50(weights=None)  # noqa: E731
        model = build().eval()
        total = 64 if size >= 224 else 1024
        xs = {b: torch.rand(b, 3, size, size) for b in sizes}
        times: dict[int, list[float]] = {b: [] for b in sizes}
        with torch.no_grad():
            for b in sizes:
                model(xs[b])
            for rep in range(args.repeats):
                for b in sizes if rep % 2 == 0 else sizes[::-1]:
                    calls = max(1, total // b)
                    start = time.perf_counter()
                    for _ in range(calls):
                        model(xs[b])
                    times[b].append((time.perf_counter() - start) / (calls * b))
        auto = forward_batch_size("auto", xs[sizes[0]])
        best = min(sizes, key=lambda b: statistics.median(times[b]))
        cells = " | ".join(f"{statistics.median(times[b]) * 1e3:.3g}" for b in sizes)
        print(f"{label} (auto: {auto} images; fastest here: {best})\n")
        print("| batch | " + " | ".join(map(str, sizes)) + " |")
        print("|---|" + "---:|" * len(sizes))
        print(f"| ms/image | {cells} |\n", flush=True)
    print(f"load {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
