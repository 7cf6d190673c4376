"""Start-up of the light commands: seconds of ``--help``, ``list``, ``validate``, and whether they import torchvision.

Each command runs in a fresh interpreter (``python -m bench.cli ...``), ``--repeats`` times; with
``--compare-with DIR`` (another checkout) the two checkouts alternate, so that both see the same
machine. Prints a Markdown table of medians, with the load average seen during the runs.

    python benchmarks/startup.py [--repeats 5] [--compare-with DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [["--help"], ["list"], ["validate", "suites/quickstart.yaml"]]
PROBE = "import runpy, sys; sys.argv = ['xbench', *sys.argv[1:]]\ntry:\n    runpy.run_module('bench.cli', run_name='__main__')\nexcept SystemExit:\n    pass\nprint('torchvision' in sys.modules, file=sys.stderr)"  # noqa: E501


def once(tree: Path, command: list[str]) -> tuple[float, bool]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, *command], cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return seconds, done.stderr.strip().splitlines()[-1] == "True"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compare-with", type=Path, help="another checkout to run alternately (a baseline)")
    args = parser.parse_args(argv)
    trees = {"this checkout": ROOT} | ({"baseline": args.compare_with.resolve()} if args.compare_with else {})
    times: dict[tuple[str, str], list[float]] = {}
    torchvision: dict[tuple[str, str], bool] = {}
    loads = []
    for rep in range(args.repeats):
        for command in COMMANDS:
            for name in list(trees) if rep % 2 == 0 else list(trees)[::-1]:
                key = (name, " ".join(command))
                seconds, imported = once(trees[name], command)
                times.setdefault(key, []).append(seconds)
                torchvision[key] = imported
                loads.append(os.getloadavg()[0])
    print(f"1-minute load average {min(loads):.1f} to {max(loads):.1f}; medians of {args.repeats} runs\n")
    print("| command | checkout | wall s (median) | fastest | slowest | imports torchvision |")
    print("|---|---|---:|---:|---:|---|")
    for (name, command), values in sorted(times.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"| `xbench {command}` | {name} | {statistics.median(values):.2f} | {min(values):.2f} "
              f"| {max(values):.2f} | {'yes' if torchvision[(name, command)] else 'no'} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
