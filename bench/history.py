"""`xbench history`: follow every (dataset, model, explainer, metric) over a series of runs.

Runs are found below the given paths (a Hive-partitioned ``runs/`` tree works), ordered
by when they ran or by a manifest field (the git revision's commit time, a package
version, any dotted manifest path), and each consecutive pair is compared with
``bench.compare`` (entries matched by suite ids, paired t-test on the shared images,
Holm-corrected, the suite's tolerances). A run where an entry moved significantly is
marked (▼ worse, ▲ better) in the table and the plot. The command exits 1 when the
latest run regressed against the previous one, or against a pinned ``--baseline``.
"""

from __future__ import annotations

import itertools
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.compare import Comparison, compare
from bench.errors import DataError
from bench.store import Manifest, Results, read_manifest, read_run, run_dirs
from bench.summary import overall, summarise
from bench.tables import Leaderboard, Table, fmt_interval

MARKS = {"regression": "▼", "improvement": "▲"}


@dataclass
class Run:
    path: Path
    label: str
    key: Any
    manifest: Manifest | None
    results: Results


@dataclass
class History:
    runs: list[Run]
    summary: pd.DataFrame  # run, dataset, model, explainer, metric, mean, ci_low, ci_high, n, moved
    steps: list[Comparison] = field(default_factory=list)  # runs[i] against runs[i - 1], for i >= 1
    against_baseline: Comparison | None = None

    @property
    def latest_regressions(self) -> list[Any]:
        last = self.steps[-1].regressions if self.steps else []
        pinned = self.against_baseline.regressions if self.against_baseline else []
        return [*last, *pinned]


def _commit_time(revision: str | None) -> float | None:
    if not revision:
        return None
    try:
        out = subprocess.run(["git", "show", "-s", "--format=%ct", revision.split("+")[0]], capture_output=True,
                             text=True, timeout=5, check=True)  # fmt: skip
        return float(out.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _version_key(text: str | None) -> tuple[int, object]:
    from packaging.version import InvalidVersion, Version

    try:
        return (0, Version(str(text)))
    except InvalidVersion:
        return (1, str(text))


def order_key(manifest: Manifest | None, path: Path, by: str) -> Any:
    """The sort key of a run: ``time`` (its first invocation), ``git`` (commit time of its revision, else
    its time), ``package:NAME`` (that package's version), or a dotted manifest path (``suite.seed``)."""
    started = manifest.invocations[0].started if manifest and manifest.invocations else ""
    if manifest is None or by == "time":
        return (started, str(path))
    if by == "git":
        when = _commit_time(manifest.environment.get("git_revision"))
        return (when if when is not None else float("inf"), started)
    if by.startswith("package:"):
        return (_version_key(manifest.environment.get("packages", {}).get(by.split(":", 1)[1])), started)
    value: Any = manifest.to_json()
    for part in by.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return (str(value), started)


def load_runs(paths: list[Path], by: str = "time") -> list[Run]:
    found: list[Path] = []
    for path in paths:
        for run in run_dirs(path):
            if run not in found:
                found.append(run)
    runs = []
    for path in found:
        manifest = read_manifest(path)
        label = manifest.run_id if manifest and manifest.run_id else path.name
        runs.append(Run(path, label, order_key(manifest, path, by), manifest, read_run(path)))
    runs.sort(key=lambda r: r.key)
    return runs


def _tolerances(manifest: Manifest | None) -> tuple[float, dict[str, float]]:
    settings = manifest.suite.get("regression", {}) if manifest else {}
    return float(settings.get("tolerance", 0.0)), dict(settings.get("tolerances", {}))


def history(
    paths: list[Path], by: str = "time", baseline: Path | None = None, metrics: list[str] | None = None
) -> History:
    runs = load_runs(paths, by)
    if len(runs) < 2:
        raise DataError(
            f"history needs at least two runs; found {len(runs)} below {', '.join(map(str, paths))}",
            fix="give the runs' directories or the folder that holds them (e.g. runs/suite=NAME)",
        )
    frames = []
    for run in runs:
        policy = run.manifest.suite.get("nan_policy", "declared") if run.manifest else "declared"
        rows = overall(summarise(run.results.rows, policy=policy))
        frames.append(rows.assign(run=run.label))
    summary = pd.concat(frames, ignore_index=True)[
        ["run", "dataset", "model", "explainer", "metric", "higher_is_better", "mean", "ci_low", "ci_high", "n"]
    ]
    if metrics:
        summary = summary[summary["metric"].isin(metrics)]
    out = History(runs, summary.assign(moved=""))
    for before, after in itertools.pairwise(runs):
        tolerance, per_metric = _tolerances(after.manifest)
        step = compare(
            before.results, after.results, tolerance, per_metric, manifests=(before.manifest, after.manifest)
        )
        out.steps.append(step)
        for diff in step.diffs:
            if diff.verdict in MARKS:
                hit = ((out.summary["run"] == after.label) & (out.summary["dataset"] == diff.dataset)
                       & (out.summary["model"] == diff.model) & (out.summary["explainer"] == diff.explainer)
                       & (out.summary["metric"] == diff.metric))  # fmt: skip
                out.summary.loc[hit, "moved"] = diff.verdict
    if baseline is not None:
        pinned = Run(baseline, "baseline", None, read_manifest(baseline), read_run(baseline))
        tolerance, per_metric = _tolerances(runs[-1].manifest)
        out.against_baseline = compare(
            pinned.results, runs[-1].results, tolerance, per_metric, manifests=(pinned.manifest, runs[-1].manifest)
        )
    return out


def _ranked(h: History) -> list[str]:
    """Ranked score metrics (by the latest run's cards), in first-seen order."""
    outputs = h.runs[-1].results.cards.outputs()
    return [m for m in dict.fromkeys(h.summary["metric"]) if m in outputs and outputs[m].ranked]


def tables(h: History) -> Leaderboard:
    board = Leaderboard()
    labels = [r.label for r in h.runs]
    for (dataset, model, metric), part in h.summary.groupby(["dataset", "model", "metric"], sort=True):
        if metric not in _ranked(h):
            continue
        rows = []
        for explainer, entries in part.groupby("explainer", sort=True):
            by_run = entries.set_index("run")
            cells = []
            for label in labels:
                if label not in by_run.index:
                    cells.append("")
                    continue
                r = by_run.loc[label]
                cells.append(
                    f"{fmt_interval(r['mean'], r['ci_low'], r['ci_high'], 3)} {MARKS.get(r['moved'], '')}".strip()
                )
            rows.append([str(explainer), *cells])
        arrow = "↑" if bool(part["higher_is_better"].iloc[0]) else "↓"
        board.add(
            "History",
            Table(
                f"{dataset} / {model}: {metric} {arrow}",
                ["explainer", *labels],
                rows,
                "mean [95% CI] per run, in run order; ▼ significantly worse, ▲ better than the "
                "run before (paired on the shared images, Holm-corrected, beyond the tolerance)",
            ),
        )
    for before, after, step in zip(h.runs, h.runs[1:], h.steps, strict=False):
        moved = [d for d in step.diffs if d.verdict in MARKS]
        if not moved:
            continue
        lines = [f"{MARKS[d.verdict]} {d.dataset} / {d.model} / {d.explainer} / {d.metric}: "
                 f"{fmt_interval(d.diff, d.ci_low, d.ci_high)} (p={d.p_holm:.3g})" for d in moved]  # fmt: skip
        changed = "; ".join(f"{w}: {b} -> {n}" for w, b, n in step.changes) or "no recorded change"
        board.add("What moved", f"{after.label} against {before.label}: " + "; ".join(lines) + f". Changed: {changed}.")
    if h.against_baseline is not None:
        moved = [d for d in h.against_baseline.diffs if d.verdict in MARKS]
        text = "; ".join(f"{MARKS[d.verdict]} {d.explainer} / {d.metric}" for d in moved) or "nothing moved"
        board.add("Against the pinned baseline", f"{h.runs[-1].label}: {text}.")
    return board


def plot(h: History) -> bytes | None:
    """One panel per (dataset, model, ranked metric): each explainer's mean and 95 % interval over the runs,
    ▼ at significant regressions and ▲ at improvements against the run before."""
    from bench.figures import _grid, png

    metrics = _ranked(h)
    panels = [(k, p) for k, p in h.summary.groupby(["dataset", "model", "metric"], sort=True) if k[2] in metrics]
    if not panels:
        return None
    labels = [r.label for r in h.runs]
    fig, axes = _grid(len(panels), width=4.6, height=3.3)
    for ax, ((dataset, model, metric), part) in zip(axes, panels, strict=True):
        for explainer, entries in part.groupby("explainer", sort=True):
            by_run = entries.set_index("run").reindex(labels)
            x = np.arange(len(labels))
            low = (by_run["mean"] - by_run["ci_low"]).clip(lower=0).fillna(0)
            high = (by_run["ci_high"] - by_run["mean"]).clip(lower=0).fillna(0)
            ax.errorbar(x, by_run["mean"], yerr=[low, high], marker="o", ms=3, capsize=2, label=str(explainer))
            for xi, (mean, moved) in enumerate(zip(by_run["mean"], by_run["moved"], strict=True)):
                if moved in MARKS:
                    ax.annotate(
                        MARKS[moved],
                        (xi, mean),
                        color="red" if moved == "regression" else "green",
                        fontsize=14,
                        ha="center",
                        va="bottom",
                        xytext=(0, 6),
                        textcoords="offset points",
                    )
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        better = "higher" if bool(part["higher_is_better"].iloc[0]) else "lower"
        ax.set_title(f"{dataset} / {model}: {metric} ({better} is better)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return png(fig)


def write(h: History, folder: Path) -> list[Path]:
    """history.md, history.parquet and history.png into ``folder``."""
    from bench import atomic

    board = tables(h)
    text = "# History\n\n" + f"Runs in order: {', '.join(r.label for r in h.runs)}.\n\n" + board.render("md")
    written = [folder / "history.md", folder / "history.parquet"]
    atomic.write_text(written[0], text)
    summary = h.summary
    atomic.write_with(written[1], lambda p: summary.to_parquet(p, index=False))
    image = plot(h)
    if image is not None:
        atomic.write_bytes(folder / "history.png", image)
        written.append(folder / "history.png")
    return written
