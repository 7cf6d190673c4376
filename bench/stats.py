"""Statistics for leaderboards and comparisons: bootstrap intervals and significance-aware ranks.

Everything random here is seeded from the data's identity, so the same table
always gives the same intervals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
LEVEL = 0.95


def bootstrap_ci(
    values: np.ndarray, seed: int, resamples: int = BOOTSTRAP_RESAMPLES, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan")
    if len(values) == 1:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def paired_bootstrap(
    before: np.ndarray, after: np.ndarray, seed: int, resamples: int = BOOTSTRAP_RESAMPLES, level: float = LEVEL
) -> tuple[float, float, float]:
    """Mean of ``after - before`` over paired samples and its percentile bootstrap interval.

    Resampling whole pairs keeps the pairing: the interval reflects how much the
    difference varies across samples, not the spread of each run.
    """
    diff = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    lo, hi = bootstrap_ci(diff, seed, resamples, level)
    return (float(diff.mean()) if len(diff) else float("nan")), lo, hi


def significance_ranks(
    means: Sequence[float], lows: Sequence[float], highs: Sequence[float], higher_is_better: bool
) -> list[float]:
    """Rank = 1 + the number of entries that are *significantly* better (their interval lies
    entirely on the better side of this entry's interval). Entries whose intervals overlap
    share a rank, so ties within confidence intervals are shown as ties. NaN means stay NaN."""
    ranks = []
    for i, mean in enumerate(means):
        if mean != mean:
            ranks.append(float("nan"))
            continue
        better = 0
        for j in range(len(means)):
            if j == i or means[j] != means[j]:
                continue
            if (higher_is_better and lows[j] > highs[i]) or (not higher_is_better and highs[j] < lows[i]):
                better += 1
        ranks.append(float(1 + better))
    return ranks
