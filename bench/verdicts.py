"""Paired verdicts: which entries of a table are better than which, on the samples they share.

Every explainer of a (dataset, model) scores the same images, and every model of a
(dataset, explainer) explains the same images, so entries are compared *paired*: per
sample differences, on the samples that every compared entry scored (the common set),
with a paired t-test per pair and Holm's correction over all pairs of the metric
(``bench.stats``). An entry's rank is 1 + the number of entries significantly better
than it; its interval is its own mean's (over the samples it scored). Entries whose
coverage differs are ranked on the common set, and say so.

Controls (random, centre, edges, and suite entries marked ``control: true``) are
reference lines: for every other entry and metric, the verdict says whether it is
significantly better than every control.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.seeding import stable_hash
from bench.stats import bootstrap_means, holm, paired_t, percentile_interval, significance_ranks

ALPHA = 0.05


@dataclass
class Verdict:
    """One metric's comparison of the entries of a table."""

    metric: str
    higher_is_better: bool
    entries: list[str]
    controls: list[str]
    n: np.ndarray  # (E,) samples each entry scored
    n_total: int  # samples any entry scored
    common: list[str]  # sample ids every compared entry scored
    mean: np.ndarray  # (E,) own mean
    ci_low: np.ndarray
    ci_high: np.ndarray
    common_mean: np.ndarray  # (E,) mean over the common set
    diff: np.ndarray  # (E, E) mean of (i - j) over the common set
    diff_low: np.ndarray
    diff_high: np.ndarray
    p_holm: np.ndarray  # (E, E) Holm-adjusted p-value of the pair (i, j)
    better: np.ndarray  # (E, E) bool: i significantly better than j
    rank: np.ndarray  # (E,) 1 + entries significantly better; NaN for entries without a score
    differences: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    def index(self, entry: str) -> int:
        return self.entries.index(entry)

    @property
    def best(self) -> int:
        """The best entry: lowest rank, then the better mean on the common set."""
        sign = 1.0 if self.higher_is_better else -1.0
        order = [i for i in range(len(self.entries)) if self.rank[i] == self.rank[i]]
        return min(order, key=lambda i: (self.rank[i], -sign * self.common_mean[i])) if order else -1

    def beats(self, i: int, j: int) -> bool:
        return bool(self.better[i, j])

    def control_verdict(self, entry: str) -> tuple[str, list[str]]:
        """("beats controls" | "not better than a control" | "worse than a control" | "", the controls it
        does not beat). Empty for controls themselves and tables without controls."""
        if entry in self.controls or not self.controls or self.rank[self.index(entry)] != self.rank[self.index(entry)]:
            return "", []
        i = self.index(entry)
        scored = [c for c in self.controls if self.rank[self.index(c)] == self.rank[self.index(c)]]
        missed = [c for c in scored if not self.better[i, self.index(c)]]
        if not missed:
            return "beats controls", []
        if any(self.better[self.index(c), i] for c in missed):
            return "worse than a control", missed
        return "not better than a control", missed


def compare_entries(
    values: pd.DataFrame, higher_is_better: bool, controls: list[str] | None = None, metric: str = "", seed: int = 0
) -> Verdict:
    """Paired comparison of the columns (entries) of ``values`` (index: sample id; NaN: not scored).

    Entries that scored no sample are kept in the table with rank NaN (n/a); the others are compared
    on the samples all of them scored."""
    entries = [str(c) for c in values.columns]
    matrix = values.to_numpy(dtype=float)
    e = len(entries)
    n = (~np.isnan(matrix)).sum(0)
    active = np.flatnonzero(n > 0)
    common_rows = ~np.isnan(matrix[:, active]).any(1) if len(active) else np.zeros(len(matrix), dtype=bool)
    common = matrix[common_rows]
    mean = np.array([np.nanmean(matrix[:, j]) if n[j] else np.nan for j in range(e)])
    ci_low, ci_high = _own_intervals(matrix, seed)
    common_mean = np.where(n > 0, common.mean(0) if len(common) else np.nan, np.nan)
    diff = np.full((e, e), np.nan)
    diff_low, diff_high, p_holm = diff.copy(), diff.copy(), np.ones((e, e))
    pairs = [(i, j) for a, i in enumerate(active) for j in active[a + 1 :]]
    differences: dict[tuple[int, int], np.ndarray] = {}
    if pairs and len(common):
        d = np.stack([common[:, i] - common[:, j] for i, j in pairs], 1)
        m, lo, hi, p = paired_t(d)
        adjusted = holm(p)
        for k, (i, j) in enumerate(pairs):
            diff[i, j], diff_low[i, j], diff_high[i, j], p_holm[i, j] = m[k], lo[k], hi[k], adjusted[k]
            diff[j, i], diff_low[j, i], diff_high[j, i], p_holm[j, i] = -m[k], -hi[k], -lo[k], adjusted[k]
            differences[(int(i), int(j))] = d[:, k]
    sign = 1.0 if higher_is_better else -1.0
    with np.errstate(invalid="ignore"):
        better = (p_holm < ALPHA) & (sign * diff > 0)
    rank = np.where(n > 0, significance_ranks(better), np.nan)
    return Verdict(
        metric=metric,
        higher_is_better=higher_is_better,
        entries=entries,
        controls=[c for c in (controls or []) if c in entries],
        n=n,
        n_total=int((~np.isnan(matrix)).any(1).sum()),
        common=[str(s) for s in values.index[common_rows]],
        mean=mean,
        ci_low=ci_low,
        ci_high=ci_high,
        common_mean=common_mean,
        diff=diff,
        diff_low=diff_low,
        diff_high=diff_high,
        p_holm=p_holm,
        better=better,
        rank=rank,
        differences=differences,
    )


def _own_intervals(matrix: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each column's percentile bootstrap interval over the samples it scored, all columns on the same
    resamples of the images (``stats.bootstrap_means``)."""
    e = matrix.shape[1]
    n = (~np.isnan(matrix)).sum(0)
    lo, hi = np.full(e, np.nan), np.full(e, np.nan)
    rows = ~np.isnan(matrix).all(1)
    if rows.sum() == 0:
        return lo, hi
    block = matrix[rows]
    means = bootstrap_means(block, stable_hash("own", seed, len(block)))
    with np.errstate(all="ignore"):
        lo, hi = percentile_interval(means)
    single = n == 1
    if single.any():
        value = np.nanmax(np.where(np.isnan(matrix), -np.inf, matrix), 0)
        lo, hi = np.where(single, value, lo), np.where(single, value, hi)
    return np.where(n > 0, lo, np.nan), np.where(n > 0, hi, np.nan)


def verdict_frame(verdict: Verdict) -> pd.DataFrame:
    """The verdict as rows (one per entry): mean and interval, coverage, rank, difference to the best
    entry on the common set with its interval and Holm p-value, and the control verdict."""
    best = verdict.best
    rows = []
    for i, entry in enumerate(verdict.entries):
        control, missed = verdict.control_verdict(entry)
        rows.append(
            {
                "entry": entry,
                "metric": verdict.metric,
                "higher_is_better": verdict.higher_is_better,
                "n": int(verdict.n[i]),
                "n_total": verdict.n_total,
                "n_common": len(verdict.common),
                "mean": verdict.mean[i],
                "ci_low": verdict.ci_low[i],
                "ci_high": verdict.ci_high[i],
                "rank": verdict.rank[i],
                "control": entry in verdict.controls,
                "diff_to_best": verdict.diff[i, best] if best >= 0 and i != best else (0.0 if i == best else np.nan),
                "diff_low": verdict.diff_low[i, best] if best >= 0 and i != best else np.nan,
                "diff_high": verdict.diff_high[i, best] if best >= 0 and i != best else np.nan,
                "p_holm": verdict.p_holm[i, best] if best >= 0 and i != best else np.nan,
                "vs_controls": control,
                "not_beaten": ", ".join(missed),
            }
        )
    return pd.DataFrame(rows)
