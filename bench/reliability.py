"""How much to trust each ranking of a run, computed from the stored rows (no model pass).

Per (dataset, model) and ranked metric:

- ranking stability: the images are resampled (bootstrap, the same resamples for every
  explainer) and the explainers re-ordered by their means; reported are the probability
  that the top explainer stays on top and the expected change of an explainer's place
  (mean |place in a resample - place in the data|, places 1..E);
- the top two: their paired difference with its interval, and the number of images a
  paired test would need to separate them at 95 % with 80 % power (``stats.samples_needed``);

and between metrics, Kendall's tau-b of the explainers' orders (each metric oriented so
that a higher value is better): metrics that disagree (tau near 0 or negative) answer
different questions, as LATEC (Klein et al., NeurIPS 2024) and MetaQuantus (Hedström et
al., TMLR 2023) found across faithfulness metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.seeding import stable_hash
from bench.stats import bootstrap_means, kendall_tau, samples_needed
from bench.tables import Table, fmt_interval, fmt_value
from bench.verdicts import Verdict

RESAMPLES = 1000


@dataclass
class MetricReliability:
    """The stability of one metric's ranking and the separation of its top two (NaN/"" when undefined)."""

    metric: str
    n_common: int
    entries: int
    top: str = ""
    second: str = ""
    p_top_stays: float = float("nan")
    rank_change: float = float("nan")
    top2_diff: float = float("nan")
    top2_low: float = float("nan")
    top2_high: float = float("nan")
    top2_separated: bool = False
    samples_needed: float = float("nan")


def metric_reliability(values: pd.DataFrame, verdict: Verdict, seed: int) -> MetricReliability:
    """See the module docstring. ``values``: sample x entry (the verdict's common samples are used)."""
    active = [e for i, e in enumerate(verdict.entries) if verdict.rank[i] == verdict.rank[i]]
    out = MetricReliability(verdict.metric, len(verdict.common), len(active))
    if len(active) < 2 or len(verdict.common) < 2:
        return out
    block = values.loc[verdict.common, active].to_numpy(dtype=float)
    sign = 1.0 if verdict.higher_is_better else -1.0
    means = sign * bootstrap_means(block, stable_hash("reliability", seed, verdict.metric), RESAMPLES)
    observed = sign * block.mean(0)
    places = (-means).argsort(1, kind="stable").argsort(1, kind="stable") + 1  # 1 = best
    observed_places = (-observed).argsort(kind="stable").argsort(kind="stable") + 1
    top = active.index(verdict.entries[verdict.best])
    second = next(int(k) for k in np.argsort(-observed, kind="stable") if k != top)
    i, j = verdict.index(active[top]), verdict.index(active[second])
    out.top, out.second = active[top], active[second]
    out.p_top_stays = float((places[:, top] == 1).mean())
    out.rank_change = float(np.abs(places - observed_places[None, :]).mean())
    out.top2_diff, out.top2_low, out.top2_high = (
        float(verdict.diff[i, j]),
        float(verdict.diff_low[i, j]),
        float(verdict.diff_high[i, j]),
    )
    out.top2_separated = bool(verdict.better[i, j])
    out.samples_needed = samples_needed(block[:, top] - block[:, second])
    return out


def rank_agreement(verdicts: dict[str, Verdict]) -> pd.DataFrame:
    """Kendall's tau-b between the explainer orders of every two metrics (oriented: higher = better)."""
    names = sorted(verdicts)
    tau = pd.DataFrame(np.nan, index=names, columns=names)
    for a in names:
        for b in names:
            va, vb = verdicts[a], verdicts[b]
            shared = [e for e in va.entries if e in vb.entries]
            x = [(1 if va.higher_is_better else -1) * va.common_mean[va.index(e)] for e in shared]
            y = [(1 if vb.higher_is_better else -1) * vb.common_mean[vb.index(e)] for e in shared]
            tau.loc[a, b] = 1.0 if a == b else kendall_tau(np.array(x), np.array(y))
    return tau


def _images(need: float) -> str:
    return "∞" if need == float("inf") else ("" if need != need else f"{need:,.0f}")


def reliability_tables(title: str, rows: list[MetricReliability], tau: pd.DataFrame) -> list[Table]:
    headers = [
        "metric",
        "images",
        "top",
        "P(top stays top)",
        "mean place change",
        "top two: difference [95% CI]",
        "separated",
        "images to separate",
    ]
    body = []
    for r in rows:
        if not r.top:
            body.append([r.metric, str(r.n_common), "", "", "", "", "", ""])
            continue
        difference = f"{r.top} − {r.second}: {fmt_interval(r.top2_diff, r.top2_low, r.top2_high)}"
        body.append(
            [
                r.metric,
                str(r.n_common),
                r.top,
                fmt_value(r.p_top_stays, 2),
                fmt_value(r.rank_change, 2),
                difference,
                "yes" if r.top2_separated else "no",
                _images(r.samples_needed),
            ]
        )
    note = (
        "How much to trust each ranking here: bootstrap resamples of the images (the same for every explainer), "
        "the share in which the top explainer stays on top, the mean change of an explainer's place, the paired "
        "difference of the top two, and the images a paired test would need to separate them (95 %, power 0.8)."
    )
    tables = [Table(f"{title}: how stable is each ranking", headers, body, note)]
    if len(tau) > 1:
        names = list(tau.index)
        tau_rows = [[a, *[fmt_value(float(tau.loc[a, b]), 2) for b in names]] for a in names]
        tables.append(
            Table(
                f"{title}: do the metrics agree (Kendall's tau of the explainer orders)",
                ["metric", *names],
                tau_rows,
                "1: the same order; 0: unrelated; -1: reversed (each metric oriented so that better "
                "is higher). Blank: fewer than three explainers in common.",
            )
        )
    return tables
