"""Documentation that cannot drift: the component reference, the suites, the README's commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from tests.conftest import ROOT

SUITES = sorted((ROOT / "suites").rglob("*.yaml"))


def test_component_reference_is_up_to_date() -> None:
    """Compared in a fresh interpreter: other tests register throwaway components in this one."""
    current = (ROOT / "docs" / "components.md").read_text()
    fresh = subprocess.run([sys.executable, "-m", "bench.cli", "list", "--format", "markdown"],
                           capture_output=True, text=True, check=True, cwd=ROOT).stdout  # fmt: skip
    assert current == fresh, "regenerate: xbench list --format markdown > docs/components.md"


@pytest.mark.parametrize("suite", SUITES, ids=[str(p.relative_to(ROOT / "suites")) for p in SUITES])
def test_every_suite_validates(suite: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every suite is valid here; data or weights missing on this machine are reported, not fatal. (Without
    the time estimate, which loads and times each model: tests/test_calibration.py covers it.)"""
    monkeypatch.chdir(ROOT)
    assert main(["validate", str(suite.relative_to(ROOT)), "--no-time"]) == 0
    out = capsys.readouterr().out
    assert "is valid" in out and re.search(r"\d+ cells", out)


def test_every_study_has_a_page_and_a_stand_in() -> None:
    studies = ["cifar10-resnet50-shap", "cifar10-cam-variants", "cifar10-vgg13-layers", "cifar10-cnn-vs-vit",
               "voc-model-selection", "compute-cost"]  # fmt: skip
    for name in studies:
        assert (ROOT / "suites" / f"{name}.yaml").exists(), name
        assert (ROOT / "suites" / "standin" / f"{name}.yaml").exists(), name
        page = ROOT / "docs" / "studies" / f"{name}.md"
        assert page.exists(), name
        text = page.read_text()
        assert f"suites/{name}.yaml" in text and f"suites/standin/{name}.yaml" in text, name
        assert "stand-in" in text.lower() and "## Results" in text, name
        kept = ROOT / "reports" / name
        assert (kept / "leaderboard.md").exists() and (kept / "results.parquet").exists(), name


def test_readme_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(lines) == 2
    assert "xbench run suites/quickstart.yaml" in lines[0] and "pip install" in lines[0]
    assert "pytest" in lines[1] and '".[dev]"' in lines[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"cmd='{lines[1]}'" in ci, "CI must run the README's test command verbatim"


def test_relative_links_in_docs_point_to_files() -> None:
    for page in [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def test_readme_leaderboard_is_the_kept_quickstart_run() -> None:
    """The README's quickstart excerpt shows the means of reports/quickstart (the kept run), to 3 decimals."""
    import pandas as pd

    text = (ROOT / "README.md").read_text()
    block = text.split("### synthetic / small_cnn", 1)[1].split("```", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    metrics = [h.split()[0] for h in header[3:]]
    kept = pd.read_parquet(ROOT / "reports" / "quickstart" / "results.parquet")
    means = kept[kept["status"] == "ok"].groupby(["explainer", "metric"])["value"].mean()
    assert len(body) == 4
    for row in body:
        explainer = row[0].split()[0]
        for metric, cell in zip(metrics, row[3:], strict=True):
            assert float(cell.split()[0]) == pytest.approx(means[(explainer, metric)], abs=6e-4), (explainer, metric)
