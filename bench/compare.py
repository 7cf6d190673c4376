"""Regression tracking: did a change make explanations worse?

``compare(baseline, new)`` matches entries by their suite ids (dataset, model,
explainer, metric), never by their params or versions: changing an explainer's
params is exactly the change a user wants judged. It lists first what differs
between the runs (component params and versions, suite settings, package
versions), then for each matched entry the mean difference (new - baseline) on
the samples both runs scored, with the paired t-test of ``bench.stats`` (the same
test as the leaderboards) and Holm's correction over all the entries compared.
An entry regressed when the corrected test says it is worse (in its direction)
and the difference exceeds the tolerance; new error rows are regressions too.
Costs (runtime) depend on the machine: reported, and flagged only with an explicit
tolerance. Entries and samples present on one side only are listed with the reason;
they make ``xbench compare`` exit 2 unless ``--allow-missing``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.cards import Cards
from bench.stats import holm, paired_t
from bench.store import Results
from bench.summary import scored_values
from bench.tables import fmt_interval, fmt_value

ENTRY = ["dataset", "model", "explainer", "metric"]
SETTINGS = ("target", "precision", "samples", "seed", "batch_size", "nan_policy", "warmup")
ALPHA = 0.05


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
    p_holm: float
    tolerance: float | None
    errors_baseline: int
    errors_new: int
    verdict: str  # regression | improvement | unchanged | informational
    reason: str = ""


@dataclass
class Missing:
    """An entry, or some samples of one, that could not be compared."""

    dataset: str
    model: str
    explainer: str
    metric: str
    where: str  # "baseline only" | "new only" | "no paired samples" | "samples on one side"
    reason: str


@dataclass
class Comparison:
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # (what, baseline, new)
    diffs: list[MetricDiff] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)

    @property
    def regressions(self) -> list[MetricDiff]:
        return [d for d in self.diffs if d.verdict == "regression"]

    @property
    def incomplete(self) -> bool:
        """Some entry could not be compared at all (on one side only, or without a paired sample)."""
        return any(m.where != "samples on one side" for m in self.missing)

    def to_json(self) -> dict[str, Any]:
        return {
            "regressed": bool(self.regressions),
            "regressions": len(self.regressions),
            "incomplete": self.incomplete,
            "changes": [{"what": w, "baseline": b, "new": n} for w, b, n in self.changes],
            "diffs": [asdict(d) for d in self.diffs],
            "missing": [asdict(m) for m in self.missing],
        }

    def markdown(self) -> str:
        head = f"# Comparison: {len(self.regressions)} regression(s) in {len(self.diffs)} matched metric(s)"
        lines = [head + (f", {len(self.missing)} not comparable" if self.missing else "") + "\n"]
        if self.changes:
            lines.append("## What changed between the runs\n")
            lines.append(
                tabulate(
                    [list(c) for c in self.changes],
                    headers=["what", "baseline", "new"],
                    tablefmt="github",
                    disable_numparse=True,
                )
                + "\n"
            )
        else:
            lines.append("No difference in params, versions, suite settings or packages.\n")
        order = {"regression": 0, "improvement": 1, "unchanged": 2, "informational": 3}
        rows = [
            [
                d.verdict.upper() if d.verdict == "regression" else d.verdict,
                d.dataset,
                d.model,
                d.explainer,
                f"{d.metric} {'↑' if d.higher_is_better else '↓'}",
                fmt_value(d.baseline),
                fmt_value(d.new),
                fmt_interval(d.diff, d.ci_low, d.ci_high),
                fmt_value(d.p_holm, 3),
                "" if d.tolerance is None else fmt_value(d.tolerance),
                d.n_paired,
                d.reason,
            ]
            for d in sorted(self.diffs, key=lambda d: (order[d.verdict], d.dataset, d.model, d.explainer, d.metric))
        ]
        headers = [
            "verdict",
            "dataset",
            "model",
            "explainer",
            "metric",
            "baseline",
            "new",
            "diff [95% CI]",
            "p (Holm)",
            "tolerance",
            "n",
            "note",
        ]
        lines.append("## Paired verdicts\n")
        lines.append(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
        if self.missing:
            lines.append("\n## Not compared\n")
            lines.append(
                tabulate(
                    [list(asdict(m).values()) for m in self.missing],
                    headers=list(asdict(self.missing[0])),
                    tablefmt="github",
                    disable_numparse=True,
                )
            )
        return "\n".join(lines) + "\n"


def _tolerance(metric: str, cards: Cards, tolerance: float, per_metric: dict[str, float]) -> float | None:
    if metric in per_metric:
        return per_metric[metric]
    output = cards.output(metric)
    cost = output is not None and not output.is_score
    base = metric.split(".", 1)[0]
    if base in per_metric and not cost:
        return per_metric[base]
    return None if cost else tolerance  # machine-dependent costs: informational unless asked for


def changes(
    baseline: Results, new: Results, base_manifest: Any = None, new_manifest: Any = None
) -> list[tuple[str, str, str]]:
    """What differs between two runs: component params and versions (from the rows), suite settings and
    package versions (from the manifests, when both have one)."""
    out: list[tuple[str, str, str]] = []
    for kind, key, columns in (
        ("explainer", "explainer", ["explainer_name", "explainer_version", "explainer_params"]),
        ("metric", "metric", ["metric_name", "metric_version", "metric_params"]),
    ):
        b = baseline.rows.drop_duplicates(key).set_index(key)
        n = new.rows.drop_duplicates(key).set_index(key)
        for ident in sorted(set(b.index) & set(n.index)):
            for column in [c for c in columns if c in b.columns and c in n.columns]:
                if str(b.loc[ident, column]) != str(n.loc[ident, column]):
                    what = column.split("_", 1)[1]
                    out.append((f"{kind} {ident}: {what}", str(b.loc[ident, column]), str(n.loc[ident, column])))
    if base_manifest is not None and new_manifest is not None:
        for setting in SETTINGS:
            before, after = base_manifest.suite.get(setting), new_manifest.suite.get(setting)
            if before != after:
                out.append((f"suite setting {setting}", json.dumps(before), json.dumps(after)))
        for section in ("datasets", "models"):
            b = {r.get("id") or r["name"]: r for r in base_manifest.suite.get(section, [])}
            n = {r.get("id") or r["name"]: r for r in new_manifest.suite.get(section, [])}
            for ident in sorted(set(b) & set(n)):
                if b[ident] != n[ident]:
                    out.append((f"{section[:-1]} {ident}", json.dumps(b[ident]), json.dumps(n[ident])))
        bp = base_manifest.environment.get("packages", {})
        np_ = new_manifest.environment.get("packages", {})
        for package in sorted(set(bp) | set(np_)):
            if bp.get(package) != np_.get(package):
                out.append((f"package {package}", str(bp.get(package)), str(np_.get(package))))
        br, nr = base_manifest.environment.get("git_revision"), new_manifest.environment.get("git_revision")
        if br != nr:
            out.append(("git revision", str(br), str(nr)))
    return out


def compare(
    baseline: Results,
    new: Results,
    tolerance: float = 0.0,
    per_metric: dict[str, float] | None = None,
    policy: str = "declared",
    manifests: tuple[Any, Any] = (None, None),
) -> Comparison:
    """Compare two runs' results (see the module docstring)."""
    per_metric = per_metric or {}
    cards = baseline.cards.merge(new.cards)
    result = Comparison(changes=changes(baseline, new, *manifests))
    base_groups = dict(iter(baseline.rows.assign(scored=scored_values(baseline.rows, policy)).groupby(ENTRY)))
    new_groups = dict(iter(new.rows.assign(scored=scored_values(new.rows, policy)).groupby(ENTRY)))
    keys = sorted(set(base_groups) & set(new_groups))
    for key in sorted(set(base_groups) ^ set(new_groups)):
        side = "baseline only" if key in base_groups else "new only"
        other = new.rows if key in base_groups else baseline.rows
        result.missing.append(Missing(*_entry(key), where=side, reason=_why_absent(key, other)))
    pending = []
    for key in keys:
        b, n = base_groups[key], new_groups[key]
        vb = b.dropna(subset=["scored"]).drop_duplicates("sample_id").set_index("sample_id")["scored"]
        vn = n.dropna(subset=["scored"]).drop_duplicates("sample_id").set_index("sample_id")["scored"]
        if vb.empty and vn.empty and not (b["status"] == "error").any() and not (n["status"] == "error").any():
            continue  # nothing scored on either side by design (e.g. peak memory on a CPU): nothing to judge
        common = vb.index.intersection(vn.index)
        one_side = len(vb.index.symmetric_difference(vn.index))
        if one_side:
            result.missing.append(
                Missing(
                    *_entry(key),
                    where="samples on one side" if len(common) else "no paired samples",
                    reason=_why_samples(vb, vn, b, n),
                )
            )
        pending.append((key, b, n, vb.loc[common].to_numpy(float), vn.loc[common].to_numpy(float)))
    tests = [
        paired_t(nv - bv) if len(bv) else (np.array([np.nan]),) * 3 + (np.array([1.0]),) for _, _, _, bv, nv in pending
    ]
    tolerances = [_tolerance(key[3], cards, tolerance, per_metric) for key, *_ in pending]
    p = np.array([float(t[3][0]) for t in tests])
    judged = [i for i, tol in enumerate(tolerances) if tol is not None]
    adjusted = np.ones(len(p))
    adjusted[judged] = holm(p[judged]) if judged else []
    for i, (key, b, n, bv, nv) in enumerate(pending):
        mean, lo, hi = (float(x[0]) for x in tests[i][:3])
        result.diffs.append(_verdict(key, b, n, bv, nv, mean, lo, hi, float(adjusted[i]), tolerances[i]))
    return result


def _verdict(
    key: tuple[Any, ...],
    b: pd.DataFrame,
    n: pd.DataFrame,
    bv: np.ndarray,
    nv: np.ndarray,
    mean: float,
    lo: float,
    hi: float,
    p: float,
    tol: float | None,
) -> MetricDiff:
    higher = bool(n["higher_is_better"].iloc[0])
    errors_b, errors_n = int((b["status"] == "error").sum()), int((n["status"] == "error").sum())
    significant = len(bv) > 0 and p < ALPHA and abs(mean) > (tol or 0.0)
    worse = mean < 0 if higher else mean > 0
    verdict, reason = "unchanged", ""
    if errors_n > errors_b:
        verdict, reason = "regression", f"error rows {errors_b} -> {errors_n}"
    elif tol is None:
        verdict = "informational"
    elif significant:
        verdict = "regression" if worse else "improvement"
    if not len(bv):
        reason = reason or "no sample scored in both runs"
    dataset, model, explainer, metric = _entry(key)
    return MetricDiff(
        dataset,
        model,
        explainer,
        metric,
        higher_is_better=higher,
        n_paired=len(bv),
        baseline=float(bv.mean()) if len(bv) else np.nan,
        new=float(nv.mean()) if len(nv) else np.nan,
        diff=mean,
        ci_low=lo,
        ci_high=hi,
        p_holm=p,
        tolerance=tol,
        errors_baseline=errors_b,
        errors_new=errors_n,
        verdict=verdict,
        reason=reason,
    )


def _entry(key: tuple[Any, ...]) -> tuple[str, str, str, str]:
    """A (dataset, model, explainer, metric) group key as strings."""
    dataset, model, explainer, metric = key
    return str(dataset), str(model), str(explainer), str(metric)


def _why_absent(key: tuple[Any, ...], other: pd.DataFrame) -> str:
    for column, value in zip(ENTRY, key, strict=True):
        if value not in set(other[column]):
            return f"{column} {value!r} is not in the other run"
    return "the other run has no rows for this combination (excluded, or not planned)"


def _why_samples(vb: pd.Series, vn: pd.Series, b: pd.DataFrame, n: pd.DataFrame) -> str:
    only_b, only_n = vb.index.difference(vn.index), vn.index.difference(vb.index)
    parts = []
    for ids, here, there, name in ((only_b, "baseline", n, "new"), (only_n, "new", b, "baseline")):
        if len(ids):
            statuses = there[there["sample_id"].isin(ids)]["status"].value_counts().to_dict()
            detail = ", ".join(f"{k} ×{v}" for k, v in statuses.items()) or "not sampled"
            parts.append(f"{len(ids)} scored in the {here} only (the {name} run: {detail}; e.g. {ids[0]})")
    return "; ".join(parts)


def write_json(comparison: Comparison, dest: Path) -> None:
    from bench import atomic

    atomic.write_text(dest, json.dumps(comparison.to_json(), indent=2, default=str) + "\n")
