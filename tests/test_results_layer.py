"""Statistics, summaries, leaderboard views, regression tracking, schema versions and reports."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.cards import Cards, MetricCard, OutputCard
from bench.cli import main
from bench.compare import compare
from bench.errors import DataError
from bench.leaderboard import build, cost_table, explainer_table, model_table, table_verdicts
from bench.stats import bootstrap_ci
from bench.store import Results, read_results
from bench.summary import scored_values, summarise
from bench.tables import Leaderboard
from tests.conftest import tiny_suite, write_suite


def _rows(explainer: str, metric: str, values: list[float], higher: bool = True, **extra) -> pd.DataFrame:
    n = len(values)
    return pd.DataFrame(
        {
            "dataset": "d", "model": extra.get("model", "m"), "explainer": explainer, "explainer_params": "{}",
            "explainer_version": extra.get("explainer_version", 1), "metric": metric, "metric_params": "{}",
            "metric_version": 1, "higher_is_better": higher, "sample_id": [f"s{i}" for i in range(n)],
            "label": [i % 2 for i in range(n)], "correct": [i % 3 != 0 for i in range(n)], "value": values,
            "status": extra.get("status", ["ok"] * n), "metric_name": metric.split(".")[0],
        }
    )  # fmt: skip


def _cards(frame: pd.DataFrame, families: dict[str, str] | None = None, units: dict[str, str] | None = None) -> Cards:
    """Cards for hand-made rows: every metric ranked unless it is a cost (its unit is not "score")."""
    cards = Cards()
    for metric, part in frame.groupby("metric"):
        unit = (units or {}).get(metric, "score")
        out = OutputCard(metric, bool(part["higher_is_better"].iloc[0]), unit == "score", None, unit)
        family = (families or {}).get(metric, "localisation" if metric == "iou" else "faithfulness")
        cards.metrics[metric] = MetricCard(metric, metric, 1, "{}", family, (), (out,))
    return cards


def _results(frame: pd.DataFrame, **kwargs) -> Results:
    return Results(frame, _cards(frame, **kwargs), [])


def _verdicts(frame: pd.DataFrame, entry: str = "explainer"):
    frame = frame.assign(scored=scored_values(frame))
    keys = {"dataset": "d", "model": "m"} if entry == "explainer" else {"dataset": "d", "explainer": "gradcam"}
    controls = [e for e in set(frame["explainer"]) if e == "random"]
    return table_verdicts(frame, _cards(frame), entry, "d / m", keys, controls)


# ---------------------------------------------------------------- statistics


def test_bootstrap_interval_is_seeded_and_covers_the_mean() -> None:
    values = np.random.default_rng(0).normal(2.0, 1.0, 400)
    lo, hi = bootstrap_ci(values, seed=1)
    assert (lo, hi) == bootstrap_ci(values, seed=1)
    assert lo < values.mean() < hi and hi - lo == pytest.approx(2 * 1.96 / 20, rel=0.15)
    assert bootstrap_ci(np.array([3.0]), 0) == (3.0, 3.0)
    assert all(np.isnan(bootstrap_ci(np.array([]), 0)))


# ---------------------------------------------------------------- summaries and views


def test_summary_splits_and_counts() -> None:
    frame = _rows("a", "iou", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], status=["ok"] * 4 + ["error", "nan"])
    summary = summarise(frame, {("d", 0): "cat", ("d", 1): "dog"})
    row = summary[summary["split"] == "all"].iloc[0]
    assert row["n"] == 4 and row["mean"] == pytest.approx(0.25) and row["n_error"] == 1 and row["n_nan"] == 1
    assert set(summary[summary["split"] == "class"]["group"]) == {"cat", "dog"}
    correct = summary[(summary["split"] == "correct")].set_index("group")
    assert correct.loc["true", "n"] == 2 and correct.loc["false", "n"] == 2  # samples 0 and 3 are wrong


def test_summary_policy_counts_degenerate_samples_or_leaves_them_out() -> None:
    frame = _rows("a", "pointing_game", [1.0, 1.0, 0.0, 0.0], status=["ok", "ok", "degenerate", "ok"])
    declared = summarise(frame).query("split == 'all'").iloc[0]
    excluded = summarise(frame, policy="exclude").query("split == 'all'").iloc[0]
    assert (declared["n"], declared["mean"], declared["n_degenerate"]) == (4, 0.5, 1)
    assert (excluded["n"], excluded["mean"]) == (3, pytest.approx(2 / 3))


def test_explainer_table_blank_mean_rank_when_a_metric_is_missing() -> None:
    frame = pd.concat(
        [
            _rows("good", "iou", [0.9, 0.8, 0.85] * 20),
            _rows("good", "deletion", [0.1, 0.2, 0.15] * 20, higher=False),
            _rows("bad", "iou", [0.1, 0.2, 0.15] * 20),
            _rows("bad", "deletion", [0.6, 0.7, 0.65] * 20, higher=False),
            _rows("partial", "iou", [0.5, 0.4, 0.45] * 20),
        ]
    )
    frame = frame.assign(scored=scored_values(frame))
    t = table_verdicts(frame, _cards(frame), "explainer", "d / m", {"dataset": "d", "model": "m"}, [])
    table = explainer_table(t, _cards(frame))
    by_name = {row[0]: row for row in table.rows}
    assert by_name["good"][1] == "1.00" and by_name["bad"][1] == "2.50" and by_name["partial"][1] == ""
    assert table.headers[3:] == ["deletion ↓", "iou ↑"] and "(1)" in by_name["good"][3]
    assert [row[0] for row in table.rows] == ["good", "bad", "partial"]


def test_coverage_is_shown_and_controls_are_listed_last_with_verdicts() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.5, 40)
    frame = pd.concat(
        [
            _rows("gradcam", "iou", list(base + 0.2)),
            _rows("gradcam_pp", "iou", list(base + 0.25), status=["ok"] * 30 + ["degenerate"] * 10),
            _rows("random", "iou", list(base)),
        ]
    )
    frame.loc[(frame["explainer"] == "gradcam_pp") & (frame["status"] == "degenerate"), "value"] = 0.0
    t = _verdicts(frame)
    table = explainer_table(t, Cards(explainers={}))
    assert [row[0] for row in table.rows][-1] == "random"
    excluded = frame.assign(status=frame["status"].replace({"degenerate": "nan"}))
    t = _verdicts(excluded)
    rows = {row[0]: row for row in explainer_table(t, Cards()).rows}
    assert "(30/40)" in rows["gradcam_pp"][3] and rows["gradcam"][2] == "✓ all 1"


def test_model_table_compares_models_paired_with_accuracy() -> None:
    frame = pd.concat(
        [
            _rows("gradcam", "iou", [0.6, 0.7] * 30, model="vgg16"),
            _rows("gradcam", "iou", [0.2, 0.3] * 30, model="alexnet"),
        ]
    )
    accuracy = pd.DataFrame(
        {"dataset": ["d", "d"], "model": ["vgg16", "alexnet"], "accuracy": [0.9, 0.6], "macro_f1": [0.88, 0.55]}
    )
    table = model_table(_verdicts(frame, "model"), accuracy)
    assert [row[0] for row in table.rows] == ["vgg16", "alexnet"] and table.rows[0][1] == "0.9000"
    assert table.rows[0][2] == "1.00" and table.rows[1][2] == "2.00"


def test_cost_table_and_renderers() -> None:
    frame = pd.concat(
        [_rows("a", "runtime", [0.01] * 5, higher=False), _rows("a", "deletion", [0.2] * 5, higher=False)]
    )
    cards = _cards(frame, units={"runtime": "seconds"})
    table = cost_table("d", frame.assign(scored=scored_values(frame)), cards)
    assert table is not None and table.headers[2] == "runtime (s/image)"
    board = Leaderboard()
    board.add("Cost", table)
    assert "| model" in board.render("md") and "<table>" in board.render("html") and "\\toprule" in board.render("tex")


def test_renaming_a_metric_id_keeps_every_view() -> None:
    """Views read cards, never ids: runtime called "cost" and iou called "overlap" still make the cost view,
    the model view and the explainer ranks."""
    rng = np.random.default_rng(1)
    frame = pd.concat(
        [
            _rows("gradcam", "overlap", list(rng.uniform(0.5, 0.7, 20)), model="m1"),
            _rows("gradcam", "overlap", list(rng.uniform(0.1, 0.3, 20)), model="m2"),
            _rows("gradcam", "cost", [0.01] * 20, higher=False, model="m1"),
            _rows("gradcam", "cost", [0.01] * 20, higher=False, model="m2"),
            _rows("gradcam", "del", list(rng.uniform(0.1, 0.3, 20)), higher=False, model="m1"),
            _rows("gradcam", "del", list(rng.uniform(0.1, 0.3, 20)), higher=False, model="m2"),
        ]
    )
    cards = _cards(frame, families={"overlap": "localisation", "del": "faithfulness", "cost": "cost"},
                   units={"cost": "seconds"})  # fmt: skip
    board = build(frame, cards, pd.DataFrame()).board.render("md")
    assert "## Models by localisation" in board and "overlap ↑" in board
    assert "## Cost and faithfulness" in board and "cost (s/image)" in board and "| del" in board


def test_controls_never_rank_models() -> None:
    """A control ignores the model (a centred blob): its scores differ between models only by resampling to
    their input sizes, so a table ranking models by it would rank noise. Real explainers keep their table."""
    from bench.cards import ExplainerCard

    rng = np.random.default_rng(2)
    frame = pd.concat(
        [
            _rows("gradcam", "iou", list(rng.uniform(0.5, 0.7, 20)), model="m1"),
            _rows("gradcam", "iou", list(rng.uniform(0.1, 0.3, 20)), model="m2"),
            _rows("blob", "iou", [0.3] * 20, model="m1"),
            _rows("blob", "iou", [0.3001] * 20, model="m2"),
        ]
    )
    cards = _cards(frame)
    cards.explainers["blob"] = ExplainerCard("blob", "gaussian_blob", 1, "{}", "control", control=True)
    built = build(frame, cards, pd.DataFrame())
    assert [t.keys["explainer"] for t in built.models] == ["gradcam"]
    assert "d / gradcam: models by localisation" in built.board.render("md")
    assert "blob: models by localisation" not in built.board.render("md")


# ---------------------------------------------------------------- regression tracking


def test_compare_flags_only_significant_changes_beyond_tolerance() -> None:
    rng = np.random.default_rng(0)
    base_values = rng.uniform(0.4, 0.6, 200)

    def frames(values: np.ndarray, seconds: float, extra: str) -> Results:
        frame = pd.concat(
            [
                _rows("x", "iou", list(values)),
                _rows("x", "deletion", list(values), higher=False),
                _rows("x", "runtime", [seconds] * 200, higher=False),
                _rows(extra, "iou", [0.5] * 10),
            ]
        )
        return _results(frame, units={"runtime": "seconds"})

    noise = rng.normal(0, 0.01, 200)
    base, worse = frames(base_values, 0.01, "gone"), frames(base_values - 0.05 + noise, 0.05, "new")
    result = compare(base, worse, tolerance=0.01)
    verdicts = {d.metric: d.verdict for d in result.diffs if d.explainer == "x"}
    assert verdicts == {"iou": "regression", "deletion": "improvement", "runtime": "informational"}
    where = {(m.explainer, m.where) for m in result.missing}
    assert where == {("gone", "baseline only"), ("new", "new only")} and result.incomplete
    assert {d.metric: d.verdict for d in compare(base, worse, tolerance=0.1).diffs}["iou"] == "unchanged"
    flagged = compare(base, worse, per_metric={"runtime": 0.01})
    assert {d.metric: d.verdict for d in flagged.diffs if d.explainer == "x"}["runtime"] == "regression"
    assert "REGRESSION" in result.markdown() and json.loads(json.dumps(result.to_json()))["regressed"]


def test_new_errors_are_regressions_and_samples_on_one_side_are_listed() -> None:
    base = _results(_rows("x", "iou", [0.5] * 10))
    new = _results(_rows("x", "iou", [0.5] * 10, status=["ok"] * 9 + ["error"]))
    result = compare(base, new)
    (diff,) = result.diffs
    assert diff.verdict == "regression" and "error rows 0 -> 1" in diff.reason
    (missing,) = result.missing
    assert missing.where == "samples on one side" and "error ×1" in missing.reason and not result.incomplete


def test_compare_matches_by_suite_ids_and_lists_what_changed() -> None:
    """An explainer whose params changed is compared, not split into "only in the baseline" and "only new"."""
    rng = np.random.default_rng(2)
    values = rng.uniform(0.3, 0.7, 100)
    before = _rows("gradcam", "iou", list(values))
    after = _rows("gradcam", "iou", list(values - 0.1 + rng.normal(0, 0.01, 100)))
    after["explainer_params"] = '{"upsample": "nearest"}'
    result = compare(_results(before), _results(after), tolerance=0.02)
    assert not result.missing and result.diffs[0].verdict == "regression"
    assert ("explainer gradcam: params", "{}", '{"upsample": "nearest"}') in result.changes


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


def test_report_leads_with_the_answer_and_is_self_contained(runs: Path, tmp_path: Path) -> None:
    run = runs / "suite=tiny" / "run=a"
    assert main(["report", str(run), "--output", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    order = [page.index(h) for h in ("<nav>", ">The run<", "which explainer<", "How much to trust", ">Details<")]
    assert order == sorted(order), "facts, verdicts, reliability, then details"
    assert page.count("<figcaption>") == page.count("<figure>") >= 6 and 'src="http' not in page
    png = base64.b64decode(page.split("data:image/png;base64,")[1].split('"')[0])
    assert png.startswith(b"\x89PNG") and "data:image/jpeg;base64," in page
    assert {p.name.split("__")[0] for p in (tmp_path / "report").iterdir() if p.suffix in (".png", ".jpg")} >= {
        "forest",
        "curves",
        "gallery",
        "picks",
        "confusion",
        "cost",
    }


@pytest.mark.slow
def test_a_suite_folder_with_one_run_reports_that_run_with_every_view(tmp_path: Path, runs: Path, capsys) -> None:
    only = tmp_path / "suite=tiny"
    shutil.copytree(runs / "suite=tiny" / "run=a", only / "run=a")
    assert main(["report", str(only), "--output", str(tmp_path / "r1")]) == 0
    assert "reading the one run below" in capsys.readouterr().err
    assert main(["report", str(only / "run=a"), "--output", str(tmp_path / "r2")]) == 0
    names = {p.name for p in (tmp_path / "r1").iterdir()}
    assert names == {p.name for p in (tmp_path / "r2").iterdir()} and len(names) >= 7


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium_without_errors(runs: Path, tmp_path: Path) -> None:
    from bench.screenshot import check_page

    run = runs / "suite=tiny" / "run=a"
    assert main(["report", str(run), "--output", str(tmp_path / "r"), "--screenshot"]) == 0
    shot = tmp_path / "r" / "report.png"
    from PIL import Image

    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 20  # a rendered page with tables and figures, not a blank one
    broken = tmp_path / "r" / "broken.html"
    broken.write_text('<img alt="missing" src="nothing-here.png"><script>console.error("boom")</script>')
    problems = check_page(broken)
    assert any("boom" in p for p in problems) and any("broken image: missing" in p for p in problems)


def test_metrics_that_do_not_apply_to_every_explainer_stay_out_of_the_mean_rank() -> None:
    frame = pd.concat(
        [
            _rows("deterministic", "iou", [0.9, 0.8] * 20),
            _rows("deterministic", "consistency", [float("nan")] * 40, status=["nan"] * 40),
            _rows("stochastic", "iou", [0.2, 0.3] * 20),
            _rows("stochastic", "consistency", [0.7, 0.8] * 20),
        ]
    )
    t = _verdicts(frame)
    by_name = {row[0]: row for row in explainer_table(t, Cards()).rows}
    assert by_name["deterministic"][1] == "1.00" and by_name["stochastic"][1] == "2.00"
    assert by_name["deterministic"][3] == "n/a" and "(1)" not in by_name["stochastic"][3]


def test_compare_cli_judges_an_explainer_params_change_and_names_a_target_rule_change(tmp_path: Path, capsys) -> None:
    """The upsample change of Grad-CAM is compared (not listed as gone and new), and the suite's changed target
    rule is named at the top; an explainer present on one side only makes compare exit 2 unless allowed."""
    old = write_suite(tmp_path, tiny_suite(explainers=["gradcam", "random"], output=str(tmp_path / "old")), "o.yaml")
    changed = [{"name": "gradcam", "params": {"upsample": "nearest"}}, "random", "saliency"]
    new = write_suite(tmp_path, tiny_suite(explainers=changed, target="predicted", output=str(tmp_path / "new")))
    assert main(["run", str(old), "--no-progress"]) == 0 and main(["run", str(new), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "old"), str(tmp_path / "new")]) == 2
    out = capsys.readouterr().out
    assert (
        'explainer gradcam: params | {"layer": null, "normalize": false, "relu": true, "upsample": "bilinear"}' in out
    )
    assert "suite setting target" in out and '"auto"' in out and '"predicted"' in out
    assert "| saliency" in out and "new only" in out
    report = json.loads((tmp_path / "new" / "compare.json").read_text())
    compared = {(d["explainer"], d["metric"]) for d in report["diffs"]}
    assert ("gradcam", "iou") in compared and ("gradcam", "deletion") in compared
    assert main(["compare", str(tmp_path / "old"), str(tmp_path / "new"), "--allow-missing"]) in (0, 1)


def test_a_suite_of_costs_only_still_reports(tmp_path: Path) -> None:
    """The compute-cost study scores runtime only: no ranked metric, so no forest chart, but a report."""
    out = tmp_path / "run"
    suite = tiny_suite(explainers=["gradcam", "saliency"], metrics=["runtime"], output=str(out))
    assert main(["run", str(write_suite(tmp_path, suite)), "--no-progress"]) == 0
    assert main(["report", str(out), "--output", str(tmp_path / "report")]) == 0
    html = (tmp_path / "report" / "report.html").read_text()
    assert "which explainer" in html and "forest__" not in html
