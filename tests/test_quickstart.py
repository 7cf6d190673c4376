"""Acceptance: the quickstart suite on the embedded benchmark, as the README runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # one quickstart run (training included) for the module: about 80 s


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quickstart") / "run"
    assert main(["run", str(ROOT / "suites" / "quickstart.yaml"), "--output", str(out), "--no-progress"]) == 0
    return out


def test_model_reaches_95_percent_and_the_run_records_it(quickstart: Path) -> None:
    manifest = json.loads((quickstart / "manifest.json").read_text())
    model = manifest["models"]["synthetic/small_cnn"]
    assert model["test_accuracy"] >= 0.95 and model["test_images"] == 1000
    assert model["accuracy"] >= 0.95 and model["n"] == 200


@pytest.mark.parametrize("explainer", ["gradcam", "integrated_gradients"])
@pytest.mark.parametrize("metric", ["deletion", "insertion", "iou"])
def test_real_explainers_beat_the_random_control(quickstart: Path, explainer: str, metric: str) -> None:
    """Paired on the same 200 images (Holm-corrected), in the metric's direction."""
    board = pd.read_parquet(quickstart / "leaderboard.parquet")
    board = board[board["view"] == "explainers"].set_index(["entry", "metric"])
    real, control = board.loc[(explainer, metric)], board.loc[("random", metric)]
    assert real["n"] == control["n"] == real["n_common"] == 200
    assert real["vs_controls"] == "beats controls" and bool(control["control"])


def test_leaderboard_ranks_every_explainer_on_every_metric(quickstart: Path) -> None:
    board = pd.read_parquet(quickstart / "leaderboard.parquet")
    board = board[(board["view"] == "explainers") & board["ranked"]]
    assert set(board["metric"]) == {"deletion", "insertion", "iou"} and len(board) == 4 * 3
    ranks = board.set_index(["metric", "entry"])["rank"]
    for metric in ("deletion", "insertion", "iou"):
        assert ranks[(metric, "random")] == 4, metric  # significantly worse than the three real explainers
    assert ranks[("iou", "gradcam")] == 1 and ranks[("insertion", "gradcam")] == 1
    text = (quickstart / "leaderboard.md").read_text()
    assert "## Explainers" in text and "deletion ↓" in text and "## Cost and faithfulness" in text
    assert "## Reliability" in text and "paired differences to the best" in text


def test_a_fresh_run_matches_the_kept_reference(quickstart: Path, tmp_path: Path) -> None:
    """reports/quickstart is the reference `xbench compare` gates on: a fresh run must not regress against it."""
    report = tmp_path / "compare.json"
    assert main(["compare", str(ROOT / "reports" / "quickstart"), str(quickstart), "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert not result["regressed"] and not result["incomplete"]
    gradcam = {d["metric"]: d for d in result["diffs"] if d["explainer"] == "gradcam"}
    assert gradcam["iou"]["n_paired"] == 200 and gradcam["iou"]["verdict"] in {"unchanged", "improvement"}


def test_compare_catches_a_sign_bug_in_gradcam(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plausible bug (Grad-CAM weights with the wrong sign) must fail the comparison with the reference."""
    import yaml

    from bench.explainers.cam import GradCAM

    suite = yaml.safe_load((ROOT / "suites" / "quickstart.yaml").read_text())
    suite["explainers"] = ["gradcam"]
    path = tmp_path / "quickstart.yaml"
    path.write_text(yaml.safe_dump(suite))
    monkeypatch.setattr(GradCAM, "weigh", lambda self, a, g: -g.mean((2, 3), keepdim=True))
    out = tmp_path / "broken"
    assert main(["run", str(path), "--output", str(out), "--no-progress", "--no-cache"]) == 0
    report = tmp_path / "compare.json"
    assert main(["compare", str(ROOT / "reports" / "quickstart"), str(out), "--json", str(report)]) == 2  # 3 gone
    assert (
        main(["compare", str(ROOT / "reports" / "quickstart"), str(out), "--json", str(report), "--allow-missing"]) == 1
    )
    result = json.loads(report.read_text())
    regressed = {d["metric"] for d in result["diffs"] if d["verdict"] == "regression"}
    assert {d["explainer"] for d in result["diffs"] if d["verdict"] == "regression"} == {"gradcam"}
    assert {"iou", "deletion", "insertion"} <= regressed
