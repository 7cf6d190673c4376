"""Why the per-image cost of RISE (and every perturbation method) swings between runs on a shared CPU.

Times RISE on one model with 1 and with all torch threads, with the machine as it is and with one
extra busy process (a Python loop this script starts and stops: "another job on one core"). Thread
counts switch inside this one process and the four settings take turns in every repetition, so a
change of the machine's other load hits all of them alike. Prints, per setting, the median, fastest
and slowest seconds per image and the spread (slowest / fastest), plus the thread count that
``threads: auto`` picks with and without the busy process.

    python benchmarks/contention.py [--model resnet20|small_cnn] [--images 4] [--masks 500] [--repeats 5]
                                    [--allocator tuned|default]

Run it once with ``--allocator default`` to see the allocator's share: with glibc's defaults every
forward batch above its mmap threshold is mapped and faulted in afresh, which costs system time that
a busy machine delays further.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

from bench import fastpath
from bench.explainers.rise import RISE
from bench.models.base import prepare
from bench.models.cifar_resnet import CifarResNet
from bench.models.small_cnn import build_small_cnn
from bench.types import ModelSpec

BUSY = "while True: pass"


def model_and_images(name: str, n: int) -> tuple[object, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net, size = (CifarResNet(20), 32) if name == "resnet20" else (build_small_cnn((16, 32, 64, 64), 5), 64)
    model = prepare(net, ModelSpec(num_classes=10 if name == "resnet20" else 5), torch.device("cpu"))
    x = torch.rand(n, 3, size, size)
    return model, x, torch.zeros(n, dtype=torch.long)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["resnet20", "small_cnn"], default="resnet20")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--masks", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--allocator", choices=["tuned", "default"], default="tuned")
    args = parser.parse_args(argv)
    cores = fastpath.usable_cores()
    fastpath.configure(cores, args.allocator)
    model, x, target = model_and_images(args.model, args.images)
    rise = RISE(RISE.Params(n_masks=args.masks))
    run = lambda: rise.explain(model, x, target, list(range(len(x))))  # noqa: E731
    run()
    times: dict[tuple[str, int], list[float]] = {}
    auto: dict[str, list[int]] = {"as is": [], "+1 busy process": []}
    for rep in range(args.repeats):
        for state in ("as is", "+1 busy process") if rep % 2 == 0 else ("+1 busy process", "as is"):
            busy = subprocess.Popen([sys.executable, "-c", BUSY]) if state != "as is" else None
            try:
                time.sleep(0.5)  # let the scheduler see it
                auto[state].append(fastpath.auto_threads(fastpath.free_cores(), cores))
                for threads in (1, cores) if rep % 2 == 0 else (cores, 1):
                    torch.set_num_threads(threads)
                    start = time.perf_counter()
                    run()
                    times.setdefault((state, threads), []).append((time.perf_counter() - start) / len(x))
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    print(f"RISE, {args.masks} masks, {args.model}, {len(x)} images per call, {cores} cores, allocator "
          f"{args.allocator}, torch {torch.__version__}, load before the run {os.getloadavg()[0]:.1f}; "
          f"seconds per image over {args.repeats} interleaved repetitions\n")  # fmt: skip
    print("| other load | torch threads | median | fastest | slowest | slowest / fastest | auto picks |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for (state, threads), values in sorted(times.items()):
        picks = ", ".join(map(str, auto[state]))
        print(f"| {state} | {threads} | {statistics.median(values):.4f} | {min(values):.4f} | {max(values):.4f} "
              f"| {max(values) / min(values):.1f} | {picks} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
