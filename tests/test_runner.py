"""The runner end to end on a tiny suite: tables, resume, determinism, batch invariance, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import tests.plugins  # noqa: F401 - registers the misbehaving explainers
from bench.cli import main
from bench.config import load_suite
from bench.runner import Runner, RunOptions
from bench.store import RESULT_SCHEMA, Manifest, read_results
from tests.conftest import ROOT, tiny_suite, write_suite

KEY = ["dataset", "model", "explainer", "metric", "sample_id"]


def _run(path: Path, *extra: str) -> int:
    return main(["run", str(path), "--no-progress", *extra])


def _values(run_dir: Path) -> pd.DataFrame:
    df = read_results(run_dir)
    df = df[~df["metric"].str.startswith("runtime")]
    return df.sort_values(KEY).reset_index(drop=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    path = write_suite(folder, tiny_suite(output=str(folder / "run")))
    assert _run(path) == 0
    return folder / "run"


def test_tables_manifest_and_leaderboard(tiny_run: Path) -> None:
    cells = sorted((tiny_run / "cells").glob("*.parquet"))
    assert len(cells) == 3
    for path in cells:
        table = pq.read_table(path)
        assert table.schema.remove_metadata() == RESULT_SCHEMA
        assert table.num_rows == 16 * 7  # deletion, insertion, iou, and runtime's 4 outputs
        meta = json.loads(table.schema.metadata[b"xbench"])
        assert meta["schema_version"] == 3 and meta["errors"] == 0
        assert set(meta["cards"]["metrics"]) == {"deletion", "insertion", "iou", "runtime"}
    df = read_results(tiny_run)
    assert (df[df["metric"] != "runtime.peak_memory_mb"]["status"] == "ok").all()
    assert set(df["metric"]) == {"deletion", "insertion", "iou", "runtime"} | {
        f"runtime.{k}" for k in ("forward_images", "backward_images", "peak_memory_mb")
    }
    assert df.groupby(["explainer", "metric"]).size().eq(16).all()
    cost = df[df["metric"].str.startswith("runtime.")].pivot_table(index="explainer", columns="metric", values="value")
    assert cost.loc["saliency", "runtime.forward_images"] == 1 and cost.loc["saliency", "runtime.backward_images"] == 1
    assert cost.loc["gradcam", "runtime.forward_images"] == 1 and cost.loc["random", "runtime.forward_images"] == 0
    assert df[df["metric"] == "runtime.peak_memory_mb"]["status"].eq("nan").all()  # CUDA only
    assert df["sample_id"].nunique() == 16 and df["label"].value_counts().min() >= 3  # stratified over 5 classes
    assert (df["target"] == df["label"]).all()  # target: label
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    model = manifest["models"]["synthetic/small_cnn"]
    assert 0 <= model["accuracy"] <= 1 and model["n"] == 16 and "test_accuracy" in model
    env = manifest["environment"]
    assert env["packages"]["torch"] and env["device"]["type"] == "cpu" and env["python"]
    assert manifest["invocations"][-1]["status"] == "finished"
    assert all(c["status"] == "done" for c in manifest["cells"].values())
    board_text = (tiny_run / "leaderboard.md").read_text()
    assert "## Explainers" in board_text and "## Reliability" in board_text and "peak_memory" not in board_text
    assert "## Models by localisation" not in board_text  # one model: no table of one row
    board = pd.read_parquet(tiny_run / "leaderboard.parquet")
    assert set(board.columns) >= {"mean", "ci_low", "ci_high", "rank", "n"}
    preds = pd.read_parquet(next((tiny_run / "predictions").glob("*.parquet")))
    assert len(preds) == 16 and set(preds.columns) >= {"sample_id", "prediction", "correct", "confidence"}


def test_rerun_reuses_cells_and_force_recomputes(tiny_run: Path, tmp_path: Path, capsys) -> None:
    suite = load_suite(write_suite(tmp_path, tiny_suite(output=str(tiny_run))))
    stamps = {p: p.stat().st_mtime_ns for p in (tiny_run / "cells").glob("*.parquet")}
    before = _values(tiny_run)
    result = Runner(suite, RunOptions(progress=False)).run()
    assert result.computed == [] and len(result.reused) == 3
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    forced = Runner(suite, RunOptions(progress=False, force=True)).run()
    assert len(forced.computed) == 3
    assert all(p.stat().st_mtime_ns != stamps[p] for p in stamps)
    pd.testing.assert_frame_equal(before, _values(tiny_run))


def test_adding_a_metric_recomputes_only_what_changed(tiny_run: Path, tmp_path: Path) -> None:
    metrics = [*tiny_suite()["metrics"], {"name": "iou", "id": "iou_half", "params": {"threshold": "fraction_of_max"}}]
    out = tmp_path / "copy"
    import shutil

    shutil.copytree(tiny_run, out)
    suite = load_suite(write_suite(tmp_path, tiny_suite(output=str(out), metrics=metrics)))
    result = Runner(suite, RunOptions(progress=False)).run()
    assert len(result.computed) == 3  # each cell lacked iou_half
    df = read_results(out)
    assert len(df) == 3 * 16 * 8 and df.duplicated(KEY).sum() == 0  # 7 outputs + iou_half


def test_changing_the_suite_retires_cells_of_its_earlier_version(tiny_run: Path, tmp_path: Path) -> None:
    """Cells the suite no longer plans (an explainer dropped, another seed) leave the results, not the disk."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(tiny_run, out)
    before = {p.name for p in (out / "cells").glob("*.parquet")}
    (out / "parts" / "synthetic__small_cnn__lime__0123456789").mkdir(parents=True)  # an unfinished, unplanned cell
    suite = load_suite(write_suite(tmp_path, tiny_suite(output=str(out), explainers=["saliency", "gradcam"], seed=1)))
    result = Runner(suite, RunOptions(progress=False)).run()
    assert len(result.computed) == 2 and not result.reused  # the seed changed every cell's identity
    assert {p.name for p in (out / "superseded" / "cells").glob("*.parquet")} == before
    assert (out / "superseded" / "parts" / "synthetic__small_cnn__lime__0123456789").is_dir()
    assert not (out / "parts" / "synthetic__small_cnn__lime__0123456789").exists()
    df = read_results(out)
    assert set(df["explainer"]) == {"saliency", "gradcam"} and len(df) == 2 * 16 * 7
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["cells"]) == {p.stem for p in (out / "cells").glob("*.parquet")}


def test_unfinished_parts_of_a_planned_sweep_survive_retirement(tmp_path: Path) -> None:
    """An interrupted sweep's variants are not in the manifest yet: their parts must stay to resume."""
    from bench.plan import build_plan

    out = tmp_path / "run"
    explainers = [{"name": "gradcam", "params": {"layer": "all_conv"}}]
    suite = load_suite(write_suite(tmp_path, tiny_suite(output=str(out), explainers=explainers)))
    variant_parts = out / "parts" / "synthetic__small_cnn__gradcam@net.features.0__0123456789"
    stale_parts = out / "parts" / "synthetic__small_cnn__saliency__0123456789"
    variant_parts.mkdir(parents=True)
    stale_parts.mkdir(parents=True)
    Runner(suite, RunOptions(progress=False))._retire_superseded(build_plan(suite), Manifest())
    assert variant_parts.is_dir() and not stale_parts.exists()
    assert (out / "superseded" / "parts" / stale_parts.name).is_dir()


def test_same_seed_gives_identical_results(tiny_run: Path, tmp_path: Path) -> None:
    path = write_suite(tmp_path, tiny_suite(output=str(tmp_path / "again")))
    assert _run(path) == 0
    pd.testing.assert_frame_equal(
        _values(tiny_run).drop(columns=["run_id"]), _values(tmp_path / "again").drop(columns=["run_id"])
    )


@pytest.mark.slow
def test_batch_invariance_one_batch_of_16_equals_four_of_4(tiny_run: Path, tmp_path: Path) -> None:
    one = write_suite(tmp_path, tiny_suite(batch_size=16, output=str(tmp_path / "b16")), "b16.yaml")
    four = write_suite(tmp_path, tiny_suite(batch_size=4, output=str(tmp_path / "b4")), "b4.yaml")
    assert _run(one) == 0 and _run(four) == 0
    a, b = _values(tmp_path / "b16"), _values(tmp_path / "b4")
    assert a[KEY].equals(b[KEY]) and len(a) == 3 * 16 * 3
    pd.testing.assert_series_equal(a["value"], b["value"], rtol=1e-5, atol=1e-6)


def test_cell_errors_are_recorded_and_the_run_goes_on(tmp_path: Path, capsys) -> None:
    explainers = ["test_fails_second_batch", "test_nan_first", "saliency"]
    path = write_suite(tmp_path, tiny_suite(explainers=explainers, output=str(tmp_path / "faults")))
    assert _run(path) == 1  # some cells failed
    assert "recorded errors" in capsys.readouterr().err
    df = read_results(tmp_path / "faults")
    failing = df[df["explainer"] == "test_fails_second_batch"]
    assert (failing["status"] == "error").sum() == 8 * 7  # batch 2: 8 samples x 7 metric outputs
    assert failing[failing["status"] == "error"]["message"].str.contains("boom in batch 2").all()
    assert (failing["status"] == "ok").sum() == 8 * 6  # batch 1 (peak memory is NaN on a CPU)
    nan = df[df["explainer"] == "test_nan_first"]
    assert (nan["status"] == "error").sum() == 2 * 7  # first image of each of 2 batches
    assert nan[nan["status"] == "error"]["message"].str.contains("non-finite").all()
    assert (df[df["explainer"] == "saliency"]["status"] != "error").all()
    manifest = json.loads((tmp_path / "faults" / "manifest.json").read_text())
    states = {c["explainer"]: c["status"] for c in manifest["cells"].values()}
    assert states == {"test_fails_second_batch": "error", "test_nan_first": "error", "saliency": "done"}
    # a rerun retries the cells with errors and reuses the clean one
    result = Runner(load_suite(path), RunOptions(progress=False)).run()
    assert len(result.computed) == 2 and len(result.reused) == 1


def test_bad_layer_fails_its_cell_at_once(tmp_path: Path) -> None:
    explainers = [{"name": "gradcam", "params": {"layer": "net.nope"}}, "random"]
    path = write_suite(tmp_path, tiny_suite(explainers=explainers, warmup=True, output=str(tmp_path / "layer")))
    assert _run(path) == 1
    df = read_results(tmp_path / "layer")
    bad = df[df["explainer"] == "gradcam"]
    assert (bad["status"] == "error").all() and bad["message"].str.contains("net.0").all()
    assert (df[df["explainer"] == "random"]["status"] != "error").all()


@pytest.mark.slow
def test_resume_after_kill(tmp_path: Path, model_cache: Path) -> None:
    """SIGKILL mid-run, rerun: every cell present exactly once, same values as an uninterrupted run."""
    explainers = [{"name": "test_slow", "id": f"slow{i}"} for i in range(4)]
    suite = tiny_suite(explainers=explainers, metrics=["iou", "deletion"], output=str(tmp_path / "killed"))
    path = write_suite(tmp_path, suite)
    # train the model first so the killed process spends its time in cells
    write_suite(tmp_path, tiny_suite(explainers=["random"], output=str(tmp_path / "warm")), "warm.yaml")
    assert _run(tmp_path / "warm.yaml") == 0
    script = f"import tests.plugins; from bench.cli import main; main(['run', {str(path)!r}, '--no-progress'])"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(2):  # kill twice at different points
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        cells = tmp_path / "killed" / "cells"
        done_before = len(list(cells.glob("*.parquet"))) if cells.exists() else 0
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if cells.exists() and len(list(cells.glob("*.parquet"))) > done_before:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = list((tmp_path / "killed" / "cells").glob("*.parquet"))
    assert 1 <= len(done) < 4, "the kill should land mid-run"
    assert _run(path) == 0
    files = sorted(p.name for p in (tmp_path / "killed" / "cells").iterdir())
    assert len(files) == 4 and not any(".tmp-" in f for f in files)
    df = read_results(tmp_path / "killed")
    assert df.duplicated(KEY).sum() == 0 and len(df) == 4 * 16 * 2
    straight = write_suite(tmp_path, {**suite, "output": str(tmp_path / "straight")}, "straight.yaml")
    assert _run(straight) == 0
    pd.testing.assert_frame_equal(
        _values(tmp_path / "killed").drop(columns=["run_id"]), _values(tmp_path / "straight").drop(columns=["run_id"])
    )
