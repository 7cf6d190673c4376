"""Statistics for leaderboards, comparisons and reliability: intervals, paired tests, corrections.

Conventions (docs/statistics.md explains each with its reference):

- An entry's own interval: percentile bootstrap of its mean over the samples it scored
  (Efron & Tibshirani 1993), 2000 resamples, seeded from the table's identity.
- Two entries scored on the same samples are compared *paired*, on the samples both
  scored: the paired t-test of the per-sample differences (two-sided), and the t interval
  of the mean difference. With n images the t statistic is what the classical paired
  comparison uses; its interval and its p-value agree by construction (the interval
  excludes 0 exactly when p < 0.05 before correction).
- Several pairs of one table are corrected together with Holm's step-down method (Holm
  1979), which controls the family-wise error rate at 5 % without assuming independence.
- Samples needed to separate two entries: the normal approximation of the paired t-test's
  power, n = ((z_{1-a/2} + z_{power}) sd / |mean difference|)^2 (a = 0.05, power 0.8).

Everything random here is seeded from the data's identity, so the same table always gives
the same intervals.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

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
    means = bootstrap_means(values[:, None], seed, resamples)[:, 0]
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_means(values: np.ndarray, seed: int, resamples: int = BOOTSTRAP_RESAMPLES) -> np.ndarray:
    """Means of each column of ``values`` (n, k) under the same ``resamples`` bootstrap resamples of the
    n rows: (resamples, k). A resample is how often each row was drawn, shared by all columns (what
    paired resampling needs), so the work is one matrix product. A column with NaN (images it did not
    score) takes the mean of its scored rows within each resample: the bootstrap of its own mean, on
    the same draws as the other columns (NaN in the rare resample that drew none of them)."""
    values = np.asarray(values, dtype=float)
    n = values.shape[0]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n)) + (np.arange(resamples) * n)[:, None]
    counts = np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n).astype(float)
    scored = ~np.isnan(values)
    if scored.all():
        return np.asarray(counts @ values / n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray((counts @ np.where(scored, values, 0.0)) / (counts @ scored.astype(float)), dtype=float)


def percentile_interval(means: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval of each column of bootstrap ``means`` (resamples, k)."""
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(means, [alpha, 1 - alpha], axis=0)
    return lo, hi


def paired_t(differences: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, ...]:
    """Paired t-test of each column of ``differences`` (n, k): (mean, ci_low, ci_high, p), each (k,).

    Two-sided p-value of H0: mean difference = 0, and the t interval of the mean. Degenerate columns
    are decided without a test: all differences equal and non-zero is a certain difference (p = 0,
    the interval is that value), all zero is none (p = 1); fewer than two samples cannot be told
    apart (p = 1, no interval)."""
    d = np.asarray(differences, dtype=float)
    if d.ndim == 1:
        d = d[:, None]
    n = d.shape[0]
    k = d.shape[1]
    if n == 0:
        nan = np.full(k, np.nan)
        return nan, nan, nan, np.ones(k)
    mean = d.mean(0)
    if n < 2:
        return mean, np.full(k, np.nan), np.full(k, np.nan), np.ones(k)
    sd = d.std(0, ddof=1)
    se = sd / math.sqrt(n)
    flat = se <= 1e-12 * np.maximum(1.0, np.abs(mean))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(flat, 0.0, mean / np.where(flat, 1.0, se))
    p = 2 * sps.t.sf(np.abs(t), n - 1)
    p = np.where(flat, np.where(mean == 0, 1.0, 0.0), p)
    half = sps.t.ppf(0.5 + level / 2, n - 1) * np.where(flat, 0.0, se)
    return mean, mean - half, mean + half, p


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values: reject H_i at level a exactly when adjusted p_i < a (Holm 1979)."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.maximum.accumulate(scaled)
    out = np.empty(m)
    out[order] = adjusted
    return out


def samples_needed(differences: np.ndarray, alpha: float = 0.05, power: float = 0.8) -> float:
    """Images a paired test needs to detect the observed mean difference (normal approximation);
    inf when the observed difference is zero, the observed count when every difference is equal."""
    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        return float("nan")
    mean, sd = abs(float(d.mean())), float(d.std(ddof=1))
    if mean == 0:
        return float("inf")
    if sd == 0:
        return 2.0
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    return float(math.ceil((z * sd / mean) ** 2))


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b between two orderings of the same entries (NaN with fewer than 3 entries)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        return float("nan")
    return float(sps.kendalltau(x[keep], y[keep]).statistic)


def significance_ranks(better: np.ndarray) -> np.ndarray:
    """Rank = 1 + the number of entries significantly better: ``better[j, i]`` says j beats i."""
    return np.asarray(1.0 + np.asarray(better, dtype=bool).sum(0), dtype=float)
