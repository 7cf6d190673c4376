"""The kept regression-history example: five runs of the quickstart with a broken Grad-CAM in the middle.

Runs ``suites/quickstart.yaml`` five times into ``runs/history-example/suite=quickstart/run=r1..r5``
(attribution cache off, so every run explains again); in run r3 Grad-CAM weighs the activations by
the *negated* mean gradient (a sign bug, as a user's edit of ``weigh`` might introduce), and r4 and r5
are repaired. Then ``xbench history`` over the five runs writes the table, the plot and the exit code
into ``reports/quickstart-history/``: r3 is marked as a regression of Grad-CAM, r4 as its repair,
and the command exits 0 because the latest run (r5) did not regress. ``--upto 3`` stops after r3 and
shows the exit code 1 a CI job would see on the broken commit.

    python benchmarks/history_example.py [--output reports/quickstart-history] [--upto 5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cli import main  # noqa: E402
from bench.explainers.cam import GradCAM  # noqa: E402

RUNS = ["r1", "r2", "r3", "r4", "r5"]
BROKEN = "r3"


def broken_weigh(self: GradCAM, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Grad-CAM with a sign bug: the negated channel weights point at what lowers the class score."""
    return -g.mean((2, 3), keepdim=True)


def run_series(runs_root: Path, upto: int) -> list[Path]:
    real = GradCAM.weigh
    folders = []
    try:
        for run in RUNS[:upto]:
            GradCAM.weigh = broken_weigh if run == BROKEN else real  # type: ignore[method-assign]
            args = ["run", str(ROOT / "suites/quickstart.yaml"), "--output", str(runs_root / f"run={run}")]
            rc = main([*args, "--no-cache", "--no-progress", "--run-id", run])
            if rc != 0:
                raise SystemExit(f"run {run} exited {rc}")
            folders.append(runs_root / f"run={run}")
    finally:
        GradCAM.weigh = real  # type: ignore[method-assign]
    return folders


def main_() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "quickstart-history")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "history-example" / "suite=quickstart")
    parser.add_argument("--upto", type=int, default=5, choices=range(3, 6))
    args = parser.parse_args()
    shutil.rmtree(args.runs, ignore_errors=True)
    folders = run_series(args.runs, args.upto)
    rc = main(["history", *map(str, folders), "--output", str(args.output)])
    print(f"xbench history exited {rc}")
    return rc


if __name__ == "__main__":
    sys.exit(main_())
