"""Throughput of the executors: the same suite run locally, on Ray with 1 worker and with 2.

    python benchmarks/bench_executors.py [--samples 200] [--workers 1 2]

Each configuration runs into a fresh run directory with the attribution cache
off, after a warm-up run that trains (and caches) the model, so every run does
the same work. Prints a Markdown table: wall seconds, images explained per
second, the speed-up over 1 Ray worker, and the Ray overhead against local.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from bench.cli import main


def suite(samples: int) -> dict:
    return {
        "name": "executors",
        "seed": 0,
        "samples": samples,
        "batch_size": 25,
        "device": "cpu",
        "datasets": [{"name": "synthetic"}],
        "models": [{"name": "small_cnn"}],
        "explainers": ["saliency", "gradcam", {"name": "integrated_gradients", "params": {"n_steps": 16}}, "random"],
        "metrics": [{"name": "deletion", "params": {"steps": 16, "baseline": "mean"}},
                    {"name": "insertion", "params": {"steps": 16}}, "runtime"],
    }  # fmt: skip


def timed_run(path: Path, out: Path, *extra: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    code = main(["run", str(path), "--no-progress", "--no-cache", "--output", str(out), *extra])
    assert code == 0, f"run failed with exit code {code}"
    return time.perf_counter() - start


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="xbench-executors-"))
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite(args.samples), sort_keys=False))
    timed_run(path, folder / "warm")  # trains and caches the model
    images = 4 * args.samples
    rows = [("local (in-process)", timed_run(path, folder / "local"))]
    for n in args.workers:
        rows.append(
            (
                f"ray, {n} worker{'s' if n > 1 else ''}",
                timed_run(path, folder / f"ray{n}", "--executor", "ray", "--workers", str(n)),
            )
        )
    one = dict(rows).get("ray, 1 worker")
    local = rows[0][1]
    print(f"\n{os.cpu_count()} CPUs; suite: 4 explainers x {args.samples} images, deletion+insertion (16 steps)\n")
    print("| executor | wall s | images/s | vs 1 Ray worker | vs local |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in rows:
        speed = f"{one / seconds:.2f}x" if one else ""
        print(f"| {name} | {seconds:.1f} | {images / seconds:.1f} | {speed} | {local / seconds:.2f}x |")


if __name__ == "__main__":
    main_bench()
