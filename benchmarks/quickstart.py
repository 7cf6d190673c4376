"""The quickstart end to end, as a user runs it: with an empty cache (training included) and with the model cached.

Each run is ``python -m bench.cli run suites/quickstart.yaml`` in a fresh process with its own output
folder; measured per run: wall seconds, the process's CPU seconds (user + system), its peak resident
memory and minor page faults (``os.wait4``), the machine's 1-minute load average before and after,
the seconds of each cell and of training (from the run's log and the model's meta.json); ``--also ARGS``
runs this checkout a second way (e.g. ``--also '--allocator default'``). The
model-cached run keeps the trained model but not the cached attributions, so it explains everything
again. With ``--compare-with DIR``
(another checkout, e.g. ``git worktree add /tmp/base <commit>``) the same runs alternate between the
two checkouts, so that both see the same machine.

    python benchmarks/quickstart.py [--repeats 2] [--compare-with DIR] [--also ARGS] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_once(tree: Path, cache: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    """One quickstart run of the checkout ``tree`` with ``XBENCH_CACHE=cache``."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "XBENCH_CACHE": str(cache), "PYTHONPATH": str(tree)}
    command = [sys.executable, "-m", "bench.cli", "run", "suites/quickstart.yaml", "--output", str(out), *extra]
    load = [os.getloadavg()[0]]
    start = time.perf_counter()
    with open(f"{out}.log", "w") as log:
        process = subprocess.Popen(command, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    load.append(os.getloadavg()[0])
    text = Path(f"{out}.log").read_text()
    cells = {m[0]: float(m[1]) for m in re.findall(r"/small_cnn/(\w+): \d+ rows in ([\d.]+) s", text)}
    meta = next(cache.glob("models/small_cnn-*/meta.json"), None)
    threads = re.search(r"cpu: (.+)", text)
    return {
        "status": os.waitstatus_to_exitcode(status),
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "system_s": round(usage.ru_stime, 1),
        "peak_rss_mb": usage.ru_maxrss // 1024,
        "minor_faults": usage.ru_minflt,
        "load": [round(v, 1) for v in load],
        "cells_s": cells,
        "train_s": json.loads(meta.read_text()).get("train_seconds") if meta else None,
        "test_accuracy": json.loads(meta.read_text()).get("test_accuracy") if meta else None,
        "cpu_setting": threads.group(1) if threads else "",
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("wall_s", "cpu_s", "system_s", "peak_rss_mb", "minor_faults")
    return {k: statistics.median(r[k] for r in runs) for k in keys} | {
        "load": [min(r["load"][0] for r in runs), max(r["load"][1] for r in runs)]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compare-with", type=Path, help="another checkout to run alternately (a baseline)")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="ARGS",
        help="also run this checkout with these xbench run arguments, e.g. '--allocator default'",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("extra", nargs="*", help="more arguments for xbench run (after --)")
    args = parser.parse_args(argv)
    trees = {"this checkout": (ROOT, [])} | {f"this checkout {also}": (ROOT, also.split()) for also in args.also}
    if args.compare_with:
        trees["baseline"] = (args.compare_with.resolve(), [])
    work = Path(tempfile.mkdtemp(prefix="xbench-quickstart-"))
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rep in range(args.repeats):
        for name in list(trees) if rep % 2 == 0 else list(trees)[::-1]:
            cache = work / f"cache-{len(runs)}-{rep}"
            for kind in ("empty cache", "model cached"):  # the second run reuses the model the first trained
                shutil.rmtree(cache / "attributions", ignore_errors=True)  # but explains everything again
                tree, more = trees[name]
                record = run_once(tree, cache, work / f"out-{rep}-{len(runs)}", [*args.extra, *more])
                runs.setdefault((name, kind), []).append(record)
                print(f"{name}, {kind}: {json.dumps(record)}", file=sys.stderr, flush=True)
            shutil.rmtree(cache, ignore_errors=True)
    print("| checkout | run | wall s | CPU s (system) | peak RSS MB | minor faults | load average | runs |")
    print("|---|---|---:|---:|---:|---:|---|---:|")
    for (name, kind), records in runs.items():
        s = summary(records)
        print(f"| {name} | {kind} | {s['wall_s']:.0f} | {s['cpu_s']:.0f} ({s['system_s']:.1f}) | "
              f"{s['peak_rss_mb']:.0f} | {s['minor_faults'] / 1e6:.2f} M | {s['load'][0]:.1f}-{s['load'][1]:.1f} "
              f"| {len(records)} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({f"{n} / {k}": r for (n, k), r in runs.items()}, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
