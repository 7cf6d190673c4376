"""Regression tracking: did a change make explanations worse?

``compare(baseline, new)`` matches results by identity (dataset, model,
explainer and its params, metric and its params), pairs samples by id, and
for each metric reports the mean difference (new - baseline) with a paired
bootstrap 95 % interval. A difference is a regression when the interval lies
entirely on the worse side of zero (in the metric's direction) and the
difference exceeds the tolerance (per metric, else global). New error rows
are regressions too. Runtime metrics depend on the machine: they are reported
but only flagged when a tolerance is given for them explicitly. Identities
present in only one of the runs are listed, never ignored.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from bench.leaderboard import fmt_value
from bench.seeding import stable_hash
from bench.stats import paired_bootstrap

IDENTITY = ["dataset", "model", "explainer", "explainer_params", "metric", "metric_params"]


@dataclass
class MetricDiff:
    dataset: str
    model: str
    explainer: str
    metric: str
    higher_is_better: bool
    n_paired: int
    baseline: float
    new: float
    diff: float
    ci_low: float
    ci_high: float
    tolerance: float | None
    errors_baseline: int
    errors_new: int
    verdict: str  # regression | improvement | unchanged | informational
    reason: str = ""
    versions: str = ""


@dataclass
class Comparison:
    diffs: list[MetricDiff] = field(default_factory=list)
    only_baseline: list[dict[str, str]] = field(default_factory=list)
    only_new: list[dict[str, str]] = field(default_factory=list)

    @property
    def regressions(self) -> list[MetricDiff]:
        return [d for d in self.diffs if d.verdict == "regression"]

    def to_json(self) -> dict[str, Any]:
        return {
            "regressed": bool(self.regressions),
            "regressions": len(self.regressions),
            "diffs": [asdict(d) for d in self.diffs],
            "only_baseline": self.only_baseline,
            "only_new": self.only_new,
        }

    def markdown(self) -> str:
        lines = [f"# Comparison: {len(self.regressions)} regression(s) in {len(self.diffs)} matched metric(s)\n"]
        order = {"regression": 0, "improvement": 1, "unchanged": 2, "informational": 3}
        rows = [
            [d.verdict.upper() if d.verdict == "regression" else d.verdict, d.dataset, d.model, d.explainer,
             f"{d.metric} {'↑' if d.higher_is_better else '↓'}", fmt_value(d.baseline), fmt_value(d.new),
             f"{fmt_value(d.diff)} [{fmt_value(d.ci_low)}, {fmt_value(d.ci_high)}]",
             "" if d.tolerance is None else fmt_value(d.tolerance), d.n_paired, d.reason]
            for d in sorted(self.diffs, key=lambda d: (order[d.verdict], d.dataset, d.model, d.explainer, d.metric))
        ]  # fmt: skip
        headers = ["verdict", "dataset", "model", "explainer", "metric", "baseline", "new", "diff [95% CI]",
                   "tolerance", "n", "note"]  # fmt: skip
        lines.append(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
        for title, items in (("Only in the baseline", self.only_baseline), ("Only in the new run", self.only_new)):
            if items:
                lines.append(f"\n## {title}\n")
                lines.append(tabulate([list(i.values()) for i in items], headers=list(items[0]), tablefmt="github"))
        return "\n".join(lines) + "\n"


def _tolerance(metric: str, tolerance: float, per_metric: dict[str, float]) -> float | None:
    if metric in per_metric:
        return per_metric[metric]
    base = metric.split(".", 1)[0]
    if base in per_metric and base != "runtime":
        return per_metric[base]
    if metric.startswith("runtime"):
        return None  # machine-dependent: informational unless asked for
    return tolerance


def compare(
    baseline: pd.DataFrame, new: pd.DataFrame, tolerance: float = 0.0, per_metric: dict[str, float] | None = None
) -> Comparison:
    """Compare two long-form results tables (see module docstring)."""
    per_metric = per_metric or {}
    result = Comparison()
    base_groups = {k: g for k, g in baseline.groupby(IDENTITY, sort=True, dropna=False)}
    new_groups = {k: g for k, g in new.groupby(IDENTITY, sort=True, dropna=False)}
    for key in sorted(set(base_groups) | set(new_groups)):
        named = {k: v for k, v in zip(IDENTITY, key, strict=True) if not k.endswith("_params")}
        if key not in new_groups:
            result.only_baseline.append(named)
            continue
        if key not in base_groups:
            result.only_new.append(named)
            continue
        result.diffs.append(_diff(key, base_groups[key], new_groups[key], _tolerance(key[4], tolerance, per_metric)))
    return result


def _diff(key: tuple, base: pd.DataFrame, new: pd.DataFrame, tol: float | None) -> MetricDiff:
    dataset, model, explainer, _, metric, _ = key
    higher = bool(new["higher_is_better"].iloc[0])
    ok_b = base[base["status"] == "ok"].drop_duplicates("sample_id").set_index("sample_id")["value"]
    ok_n = new[new["status"] == "ok"].drop_duplicates("sample_id").set_index("sample_id")["value"]
    common = ok_b.index.intersection(ok_n.index)
    b, n = ok_b.loc[common].to_numpy(float), ok_n.loc[common].to_numpy(float)
    diff, lo, hi = paired_bootstrap(b, n, stable_hash("compare", *map(str, key)))
    errors_b, errors_n = int((base["status"] == "error").sum()), int((new["status"] == "error").sum())
    versions = ""
    vb = (base["explainer_version"].iloc[0], base["metric_version"].iloc[0])
    vn = (new["explainer_version"].iloc[0], new["metric_version"].iloc[0])
    if vb != vn:
        versions = f"versions (explainer, metric) {tuple(map(int, vb))} -> {tuple(map(int, vn))}"
    verdict, reason = "unchanged", ""
    worse = (hi < 0) if higher else (lo > 0)
    better = (lo > 0) if higher else (hi < 0)
    if errors_n > errors_b:
        verdict, reason = "regression", f"error rows {errors_b} -> {errors_n}"
    elif tol is None:
        verdict = "informational"
    elif len(common) and worse and abs(diff) > tol:
        verdict = "regression"
    elif len(common) and better and abs(diff) > tol:
        verdict = "improvement"
    if not len(common):
        reason = reason or "no sample scored in both runs"
    return MetricDiff(
        dataset=dataset, model=model, explainer=explainer, metric=metric, higher_is_better=higher,
        n_paired=len(common), baseline=float(b.mean()) if len(b) else float("nan"),
        new=float(n.mean()) if len(n) else float("nan"), diff=diff, ci_low=lo, ci_high=hi, tolerance=tol,
        errors_baseline=errors_b, errors_new=errors_n, verdict=verdict,
        reason="; ".join(r for r in (reason, versions) if r), versions=versions,
    )  # fmt: skip


def write_json(comparison: Comparison, dest: Path) -> None:
    from bench import atomic

    atomic.write_text(dest, json.dumps(comparison.to_json(), indent=2, default=str) + "\n")
