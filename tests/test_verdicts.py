"""Paired verdicts, corrections, controls and reliability on analytic cases (issue: verdicts users can trust)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench.reliability import metric_reliability, rank_agreement
from bench.stats import bootstrap_ci, holm, paired_t, samples_needed, significance_ranks
from bench.verdicts import compare_entries


def _frame(**columns: list[float] | np.ndarray) -> pd.DataFrame:
    n = max(len(v) for v in columns.values())
    return pd.DataFrame({k: list(v) + [np.nan] * (n - len(v)) for k, v in columns.items()},
                        index=[f"s{i}" for i in range(n)])  # fmt: skip


def test_paired_test_separates_what_unpaired_intervals_tie() -> None:
    """Two explainers whose per-sample scores differ by a small constant (plus tiny noise): the image-to-image
    spread swamps the difference in their own intervals, the paired test sees it at once."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 100)
    better = base + 0.02 + rng.normal(0, 0.002, 100)
    verdict = compare_entries(_frame(a=better, b=base), higher_is_better=True)
    lo_a, hi_a = bootstrap_ci(better, 1)
    lo_b, hi_b = bootstrap_ci(base, 1)
    assert lo_a < hi_b and lo_b < hi_a, "the unpaired intervals overlap: an unpaired rule ties them"
    assert verdict.rank.tolist() == [1.0, 2.0] and verdict.better[0, 1] and not verdict.better[1, 0]
    assert verdict.diff[0, 1] == pytest.approx(0.02, abs=1e-3) and verdict.p_holm[0, 1] < 1e-10
    lower = compare_entries(_frame(a=better, b=base), higher_is_better=False)
    assert lower.rank.tolist() == [2.0, 1.0]


def test_paired_t_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.5, 0.2, 40), rng.normal(0.45, 0.2, 40)
    mean, lo, hi, p = paired_t(a - b)
    reference = sps.ttest_rel(a, b)
    assert p[0] == pytest.approx(reference.pvalue, rel=1e-10)
    ci = reference.confidence_interval(0.95)
    assert (lo[0], hi[0]) == pytest.approx((ci.low, ci.high), rel=1e-10) and mean[0] == pytest.approx((a - b).mean())


def test_paired_t_degenerate_columns() -> None:
    _, lo, hi, p = paired_t(np.array([[0.1, 0.0], [0.1, 0.0], [0.1, 0.0]]))
    assert (
        p.tolist() == [0.0, 1.0]
        and lo.tolist() == pytest.approx([0.1, 0.0])
        and hi.tolist() == pytest.approx([0.1, 0.0])
    )
    assert paired_t(np.array([[0.3]]))[3].tolist() == [1.0]


def test_holm_on_a_known_set() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone: 0.02, 0.03, 0.06, 0.06
    assert holm(np.array([0.01, 0.04, 0.03, 0.005])).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm(np.array([0.5, 0.9])).tolist() == pytest.approx([1.0, 1.0])  # 0.5*2 = 1 carries over
    assert holm(np.array([])).tolist() == []


def test_holm_ties_what_one_uncorrected_test_would_separate() -> None:
    """The pairs of a metric are corrected together: among four explainers (six pairs), a difference at
    p = 0.028 on its own is no longer significant."""
    rng = np.random.default_rng(3)
    base = rng.normal(0, 1, 60)
    noise = rng.normal(0, 1, 60)
    noise = (noise - noise.mean()) / noise.std(ddof=1)
    shift = 2.25 / math.sqrt(60)  # t = 2.25 on 59 degrees of freedom: p = 0.028 for (a, b)
    frame = _frame(a=base + shift + noise, b=base, c=base + rng.normal(0, 0.01, 60), d=base + rng.normal(0, 0.01, 60))
    assert paired_t((base + shift + noise - base)[:, None])[3][0] == pytest.approx(0.028, abs=0.002)
    verdict = compare_entries(frame, higher_is_better=True)
    assert verdict.p_holm[0, 1] > 0.05 and not verdict.better.any() and verdict.rank.tolist() == [1.0] * 4


def test_ranking_uses_the_samples_every_entry_scored() -> None:
    """A scored all 190 images; B only 159 (31 failures). On the shared 159, B is better; A's own mean is higher
    only because of the images B failed on. The ranking compares them on the 159."""
    rng = np.random.default_rng(2)
    shared = rng.uniform(0.2, 0.6, 159)
    a = np.concatenate([shared, np.ones(31)])
    b = shared + 0.05 + rng.normal(0, 0.01, 159)
    verdict = compare_entries(_frame(a=a, b=b), higher_is_better=True)
    assert verdict.mean[0] > verdict.mean[1], "own means favour A"
    assert len(verdict.common) == 159 and verdict.n.tolist() == [190, 159] and verdict.n_total == 190
    assert verdict.rank.tolist() == [2.0, 1.0] and verdict.common_mean[1] > verdict.common_mean[0]


def test_control_verdicts() -> None:
    rng = np.random.default_rng(4)
    centre = rng.uniform(0.3, 0.7, 80)
    frame = _frame(
        good=centre + 0.1 + rng.normal(0, 0.02, 80),
        same=centre + rng.normal(0, 0.02, 80),
        worse=centre - 0.05 + rng.normal(0, 0.02, 80),
        centre=centre,
    )
    verdict = compare_entries(frame, higher_is_better=True, controls=["centre"])
    assert verdict.control_verdict("good") == ("beats controls", [])
    assert verdict.control_verdict("same") == ("not better than a control", ["centre"])
    assert verdict.control_verdict("worse") == ("worse than a control", ["centre"])
    assert verdict.control_verdict("centre") == ("", [])


def test_entries_without_a_score_are_left_out_of_the_comparison() -> None:
    verdict = compare_entries(_frame(a=[0.5, 0.6, 0.7], b=[np.nan] * 3), higher_is_better=True)
    assert verdict.rank[0] == 1.0 and math.isnan(verdict.rank[1]) and len(verdict.common) == 3


def test_significance_ranks_count_the_entries_that_beat_one() -> None:
    better = np.array([[False, True, True], [False, False, True], [False, False, False]])
    assert significance_ranks(better).tolist() == [1.0, 2.0, 3.0]


def test_samples_needed_follows_the_normal_power_formula() -> None:
    d = np.array([0.2, -0.1, 0.3, 0.0, 0.1, 0.2, -0.2, 0.3])
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    assert samples_needed(d) == math.ceil((z * d.std(ddof=1) / d.mean()) ** 2)
    assert samples_needed(np.zeros(5)) == math.inf


def test_reliability_of_a_clear_winner_and_of_a_coin_flip() -> None:
    rng = np.random.default_rng(5)
    base = rng.uniform(0, 1, 200)
    clear = _frame(a=base + 0.3, b=base, c=base - 0.3)
    verdict = compare_entries(clear, True)
    r = metric_reliability(clear, verdict, seed=0)
    assert (r.top, r.second, r.p_top_stays, r.rank_change, r.top2_separated) == ("a", "b", 1.0, 0.0, True)
    noise = rng.normal(0, 0.1, 200)
    flip = _frame(a=base + noise, b=base - noise)
    r = metric_reliability(flip, compare_entries(flip, True), seed=0)
    assert 0.1 < r.p_top_stays < 0.9 and not r.top2_separated and r.samples_needed > 200


def test_rank_agreement_between_metrics() -> None:
    base = np.linspace(0, 1, 30)
    frame = _frame(a=base + 0.2, b=base + 0.1, c=base)
    same = compare_entries(frame, True, metric="iou")
    reversed_ = compare_entries(frame, False, metric="deletion")  # lower is better: the order flips
    tau = rank_agreement({"iou": same, "deletion": reversed_, "iou2": compare_entries(frame, True)})
    assert tau.loc["iou", "iou2"] == pytest.approx(1.0) and tau.loc["iou", "deletion"] == pytest.approx(-1.0)
