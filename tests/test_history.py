"""`xbench history` over five runs of a suite with a broken Grad-CAM in the middle: the table, the plot and
the exit code point at it."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.explainers.cam import GradCAM
from tests.conftest import tiny_suite, write_suite

RUNS = ["r1", "r2", "r3", "r4", "r5"]
BROKEN = "r3"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("history")
    path = write_suite(folder, tiny_suite(explainers=["gradcam", "random"], metrics=[
        {"name": "deletion", "params": {"steps": 8, "baseline": "mean"}},
        {"name": "iou", "params": {"threshold": "mask_size"}}]))  # fmt: skip
    cwd = os.getcwd()
    os.chdir(folder)
    real = GradCAM.weigh
    try:
        for run in RUNS:
            GradCAM.weigh = (lambda self, a, g: -g.mean((2, 3), keepdim=True)) if run == BROKEN else real
            assert main(["run", str(path), "--no-progress", "--no-cache", "--run-id", run]) == 0
    finally:
        GradCAM.weigh = real
        os.chdir(cwd)
    return folder / "runs" / "suite=tiny"


@pytest.mark.slow
def test_history_marks_the_broken_run_and_its_repair(runs: Path, tmp_path: Path, capsys) -> None:
    assert main(["history", str(runs), "--output", str(tmp_path / "h")]) == 0  # the latest run is fine again
    table = pd.read_parquet(tmp_path / "h" / "history.parquet")
    moved = table[table["moved"] != ""].set_index(["run", "explainer", "metric"])["moved"].to_dict()
    assert moved[(BROKEN, "gradcam", "iou")] == "regression" and moved[("r4", "gradcam", "iou")] == "improvement"
    assert {run for run, _, _ in moved} == {BROKEN, "r4"} and {e for _, e, _ in moved} == {"gradcam"}
    text = (tmp_path / "h" / "history.md").read_text()
    assert "Runs in order: r1, r2, r3, r4, r5" in text and "▼" in text and "▲" in text
    assert "r3 against r2: ▼ synthetic / small_cnn / gradcam / deletion" in text and "gradcam / iou" in text
    assert (tmp_path / "h" / "history.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_history_exits_1_when_the_latest_run_regressed(runs: Path, tmp_path: Path, capsys) -> None:
    upto = [str(runs / f"run={r}") for r in RUNS[:3]]
    assert main(["history", *upto, "--output", str(tmp_path / "h")]) == 1
    assert "the latest run (r3) regressed: gradcam/deletion, gradcam/iou" in capsys.readouterr().err
    assert main(["history", *upto[:2], "--output", str(tmp_path / "h2")]) == 0
    # pinned: r5 against r3 as the baseline is an improvement, not a regression
    assert main(["history", str(runs), "--baseline", upto[2], "--output", str(tmp_path / "h3")]) == 0


@pytest.mark.slow
def test_folder_of_several_runs_is_refused_by_single_run_commands(runs: Path, capsys) -> None:
    assert main(["report", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "holds 5 runs" in err and "run=r1" in err and "xbench history" in err
    assert main(["leaderboard", str(runs)]) == 2
