"""Statistics, summaries, leaderboard views, regression tracking, schema versions and reports."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.cli import main
from bench.compare import compare
from bench.errors import DataError
from bench.leaderboard import Leaderboard, cost_view, explainer_view, model_view
from bench.stats import bootstrap_ci, paired_bootstrap, significance_ranks
from bench.store import read_results
from bench.summary import overall, summarise
from tests.conftest import tiny_suite, write_suite


def _rows(explainer: str, metric: str, values: list[float], higher: bool = True, **extra) -> pd.DataFrame:
    n = len(values)
    return pd.DataFrame(
        {
            "dataset": "d", "model": extra.get("model", "m"), "explainer": explainer, "explainer_params": "{}",
            "explainer_version": extra.get("explainer_version", 1), "metric": metric, "metric_params": "{}",
            "metric_version": 1, "higher_is_better": higher, "sample_id": [f"s{i}" for i in range(n)],
            "label": [i % 2 for i in range(n)], "correct": [i % 3 != 0 for i in range(n)], "value": values,
            "status": extra.get("status", ["ok"] * n),
        }
    )  # fmt: skip


# ---------------------------------------------------------------- statistics


def test_bootstrap_interval_is_seeded_and_covers_the_mean() -> None:
    values = np.random.default_rng(0).normal(2.0, 1.0, 400)
    lo, hi = bootstrap_ci(values, seed=1)
    assert (lo, hi) == bootstrap_ci(values, seed=1)
    assert lo < values.mean() < hi and hi - lo == pytest.approx(2 * 1.96 / 20, rel=0.15)
    assert bootstrap_ci(np.array([3.0]), 0) == (3.0, 3.0)
    assert all(np.isnan(bootstrap_ci(np.array([]), 0)))


def test_paired_bootstrap() -> None:
    base = np.random.default_rng(0).normal(0, 1, 300)
    assert paired_bootstrap(base, base, 0) == (0.0, 0.0, 0.0)
    diff, lo, hi = paired_bootstrap(base, base + 0.1 + np.random.default_rng(1).normal(0, 0.01, 300), 0)
    assert diff == pytest.approx(0.1, abs=0.01) and 0 < lo < diff < hi


def test_significance_ranks_tie_overlapping_intervals() -> None:
    means, lows, highs = (
        [0.9, 0.85, 0.5, float("nan")],
        [0.8, 0.75, 0.45, float("nan")],
        [1.0, 0.95, 0.55, float("nan")],
    )
    ranks = significance_ranks(means, lows, highs, higher_is_better=True)
    assert ranks[:3] == [1.0, 1.0, 3.0] and np.isnan(ranks[3])
    assert significance_ranks(means[:3], lows[:3], highs[:3], higher_is_better=False) == [2.0, 2.0, 1.0]


# ---------------------------------------------------------------- summaries and views


def test_summary_splits_and_counts() -> None:
    frame = _rows("a", "iou", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], status=["ok"] * 4 + ["error", "nan"])
    summary = summarise(frame, {("d", 0): "cat", ("d", 1): "dog"})
    row = summary[summary["split"] == "all"].iloc[0]
    assert row["n"] == 4 and row["mean"] == pytest.approx(0.25) and row["n_error"] == 1 and row["n_nan"] == 1
    assert set(summary[summary["split"] == "class"]["group"]) == {"cat", "dog"}
    correct = summary[(summary["split"] == "correct")].set_index("group")
    assert correct.loc["true", "n"] == 2 and correct.loc["false", "n"] == 2  # samples 0 and 3 are wrong


def test_explainer_view_blank_mean_rank_when_a_metric_is_missing() -> None:
    frame = pd.concat(
        [
            _rows("good", "iou", [0.9, 0.8, 0.85] * 20),
            _rows("good", "deletion", [0.1, 0.2, 0.15] * 20, higher=False),
            _rows("bad", "iou", [0.1, 0.2, 0.15] * 20),
            _rows("bad", "deletion", [0.6, 0.7, 0.65] * 20, higher=False),
            _rows("partial", "iou", [0.5, 0.4, 0.45] * 20),
        ]
    )
    table = explainer_view(overall(summarise(frame)))[0]
    by_name = {row[0]: row for row in table.rows}
    assert by_name["good"][1] == "1.00" and by_name["bad"][1] == "2.50" and by_name["partial"][1] == ""
    assert table.headers[2:] == ["deletion ↓", "iou ↑"] and "(1)" in by_name["good"][2]
    assert [row[0] for row in table.rows] == ["good", "bad", "partial"]


def test_model_view_ranks_models_by_iou_with_accuracy() -> None:
    frame = pd.concat(
        [
            _rows("gradcam", "iou", [0.6, 0.7] * 30, model="vgg16"),
            _rows("gradcam", "iou", [0.2, 0.3] * 30, model="alexnet"),
        ]
    )
    accuracy = pd.DataFrame(
        {"dataset": ["d", "d"], "model": ["vgg16", "alexnet"], "accuracy": [0.9, 0.6], "macro_f1": [0.88, 0.55]}
    )
    table = model_view(overall(summarise(frame)), accuracy)[0]
    assert (
        [row[1] for row in table.rows] == ["vgg16", "alexnet"]
        and table.rows[0][0] == 1
        and table.rows[0][3] == "0.9000"
    )


def test_renderers() -> None:
    frame = pd.concat(
        [_rows("a", "runtime", [0.01] * 5, higher=False), _rows("a", "deletion", [0.2] * 5, higher=False)]
    )
    board = Leaderboard()
    for table in cost_view(overall(summarise(frame))):
        board.add("Cost", table)
    assert "| model" in board.render("md") and "<table>" in board.render("html") and "\\toprule" in board.render("tex")


# ---------------------------------------------------------------- regression tracking


def test_compare_flags_only_significant_changes_beyond_tolerance() -> None:
    rng = np.random.default_rng(0)
    base_values = rng.uniform(0.4, 0.6, 200)

    def frames(values: np.ndarray, seconds: float, extra: str) -> pd.DataFrame:
        return pd.concat(
            [
                _rows("x", "iou", list(values)),
                _rows("x", "deletion", list(values), higher=False),
                _rows("x", "runtime", [seconds] * 200, higher=False),
                _rows(extra, "iou", [0.5] * 10),
            ]
        )

    base, worse = frames(base_values, 0.01, "gone"), frames(base_values - 0.05, 0.05, "new")
    result = compare(base, worse, tolerance=0.01)
    verdicts = {d.metric: d.verdict for d in result.diffs}
    assert verdicts == {"iou": "regression", "deletion": "improvement", "runtime": "informational"}
    assert result.only_baseline[0]["explainer"] == "gone" and result.only_new[0]["explainer"] == "new"
    assert {d.metric: d.verdict for d in compare(base, worse, tolerance=0.1).diffs}["iou"] == "unchanged"
    flagged = compare(base, worse, per_metric={"runtime": 0.01})
    assert {d.metric: d.verdict for d in flagged.diffs}["runtime"] == "regression"
    assert "REGRESSION" in result.markdown() and json.loads(json.dumps(result.to_json()))["regressed"]


def test_new_errors_are_regressions() -> None:
    base = _rows("x", "iou", [0.5] * 10)
    new = _rows("x", "iou", [0.5] * 10, status=["ok"] * 9 + ["error"])
    (diff,) = compare(base, new).diffs
    assert diff.verdict == "regression" and "error rows 0 -> 1" in diff.reason


# ---------------------------------------------------------------- runs on disk


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny runs in the default partitioned layout: runs/suite=tiny/run={a,b}."""
    folder = tmp_path_factory.mktemp("layered")
    path = write_suite(folder, tiny_suite(explainers=["gradcam", "random"]))
    import os

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert main(["run", str(path), "--no-progress", "--run-id", "a"]) == 0
        assert main(["run", str(path), "--no-progress", "--run-id", "b"]) == 0
    finally:
        os.chdir(cwd)
    return folder / "runs"


def test_partitioned_layout_reads_with_pandas_pyarrow_and_duckdb(runs: Path) -> None:
    assert (runs / "suite=tiny" / "run=a" / "manifest.json").exists()
    both = read_results(runs)
    assert set(both["run_id"]) == {"a", "b"} and set(both["suite"]) == {"tiny"}
    import pyarrow.dataset as ds

    files = [str(p) for p in runs.glob("*/*/cells/*.parquet")]
    table = ds.dataset(files, format="parquet", partitioning="hive", partition_base_dir=str(runs)).to_table()
    assert table.num_rows == len(both)
    duckdb = pytest.importorskip("duckdb")
    source = f"read_parquet('{runs}/*/*/cells/*.parquet', hive_partitioning=true)"
    query = f"SELECT run, count(*) AS n FROM {source} GROUP BY run ORDER BY run"
    assert duckdb.sql(query).fetchall() == [("a", len(both) // 2), ("b", len(both) // 2)]


def test_compare_cli_on_runs_and_on_an_exported_reference(runs: Path, tmp_path: Path, capsys) -> None:
    a, b = runs / "suite=tiny" / "run=a", runs / "suite=tiny" / "run=b"
    assert main(["compare", str(a), str(b)]) == 0
    assert json.loads((b / "compare.json").read_text())["regressions"] == 0
    assert main(["export", str(a), str(tmp_path / "ref")]) == 0
    assert {p.name for p in (tmp_path / "ref").iterdir()} >= {"results.parquet", "summary.parquet", "leaderboard.md"}
    assert main(["compare", str(tmp_path / "ref"), str(b), "--json", str(tmp_path / "c.json")]) == 0
    broken = tmp_path / "broken"
    shutil.copytree(b, broken)
    cell = next(p for p in (broken / "cells").glob("*gradcam*.parquet"))
    table = pq.read_table(cell)
    values = table.column("value").to_numpy(zero_copy_only=False).copy()
    metric = table.column("metric").to_pylist()
    for i, m in enumerate(metric):
        if m == "iou":
            values[i] = 0.0  # Grad-CAM suddenly never overlaps the mask
    table = table.set_column(table.schema.get_field_index("value"), "value", pa.array(values))
    pq.write_table(table, cell)
    capsys.readouterr()
    assert main(["compare", str(a), str(broken), "--tolerance", "0.01"]) == 1
    assert "REGRESSION" in capsys.readouterr().out


def test_schema_versions(tmp_path: Path, runs: Path) -> None:
    cell = next((runs / "suite=tiny" / "run=a" / "cells").glob("*.parquet"))
    old = pq.read_table(cell).drop(["suite"]).replace_schema_metadata({"xbench": json.dumps({"schema_version": 1})})
    pq.write_table(old, tmp_path / "v1.parquet")
    upgraded = read_results(tmp_path / "v1.parquet")
    assert upgraded["suite"].isna().all() and len(upgraded) == old.num_rows
    future = old.replace_schema_metadata({"xbench": json.dumps({"schema_version": 99})})
    pq.write_table(future, tmp_path / "v99.parquet")
    with pytest.raises(DataError, match="newer than this xbench"):
        read_results(tmp_path / "v99.parquet")
    with pytest.raises(DataError, match="no xbench results"):
        read_results(tmp_path / "nothing-here")


def test_report_is_self_contained(runs: Path, tmp_path: Path) -> None:
    run = runs / "suite=tiny" / "run=a"
    assert main(["report", str(run), "--output", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>synthetic / small_cnn</h2>" in page and "Leaderboards" in page
    assert page.count("data:image/png;base64,") >= 4 and 'src="http' not in page
    png = base64.b64decode(page.split("data:image/png;base64,")[1].split('"')[0])
    assert png.startswith(b"\x89PNG")
    assert {p.name.split("__")[0] for p in (tmp_path / "report").glob("*.png")} >= {
        "curves",
        "gallery",
        "confusion",
        "cost",
    }


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(runs: Path, tmp_path: Path) -> None:
    run = runs / "suite=tiny" / "run=a"
    html = Path(main(["report", str(run), "--output", str(tmp_path / "r")]) or tmp_path / "r" / "report.html")
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400", f"--screenshot={shot}"]  # fmt: skip
    subprocess.run(
        [CHROMIUM, *flags, (tmp_path / "r" / "report.html").as_uri()], capture_output=True, timeout=120, check=False
    )
    assert html.exists() and shot.exists() and shot.stat().st_size > 50_000
    from PIL import Image

    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 20  # a rendered page with figures, not a blank one


def test_metrics_that_do_not_apply_to_every_explainer_stay_out_of_the_mean_rank() -> None:
    frame = pd.concat(
        [
            _rows("deterministic", "iou", [0.9, 0.8] * 20),
            _rows("deterministic", "consistency", [float("nan")] * 40, status=["nan"] * 40),
            _rows("stochastic", "iou", [0.2, 0.3] * 20),
            _rows("stochastic", "consistency", [0.7, 0.8] * 20),
        ]
    )
    table = explainer_view(overall(summarise(frame)))[0]
    by_name = {row[0]: row for row in table.rows}
    assert by_name["deterministic"][1] == "1.00" and by_name["stochastic"][1] == "2.00"
    assert by_name["deterministic"][2] == "n/a" and "(1)" in by_name["stochastic"][2]
