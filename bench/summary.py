"""Summary statistics of a long-form results table.

One row per (dataset, model, explainer, metric) and split: all samples, samples
the model classified correctly and incorrectly, and each class. Each row has n,
mean, median, standard deviation, a seeded 95 % bootstrap interval of the mean,
and the counts of degenerate, error, NaN and skipped samples, so nothing that
failed or gave no answer disappears from a summary.

What counts as scored follows the ``nan_policy``: ``declared`` (the default) counts
a degenerate sample (an attribution that gives no answer) at its metric's declared
value; ``exclude`` leaves degenerate samples out of the mean (they stay counted in
``n_degenerate``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd

from bench.seeding import stable_hash
from bench.stats import bootstrap_means, percentile_interval

POLICIES = ("declared", "exclude")
KEY = ["dataset", "model", "explainer", "metric"]
COLUMNS = [
    *KEY,
    "split",
    "group",
    "metric_name",
    "higher_is_better",
    "n",
    "mean",
    "median",
    "std",
    "ci_low",
    "ci_high",
    "n_degenerate",
    "n_error",
    "n_nan",
    "n_skipped",
]


def scored_statuses(policy: str = "declared") -> tuple[str, ...]:
    """The row statuses whose values count under ``policy``."""
    if policy not in POLICIES:
        raise ValueError(f"unknown nan_policy {policy!r}; one of {', '.join(POLICIES)}")
    return ("ok", "degenerate") if policy == "declared" else ("ok",)


def scored_values(results: pd.DataFrame, policy: str = "declared") -> pd.Series:
    """Each row's value where it counts under ``policy``, else NaN."""
    counts = results["status"].isin(scored_statuses(policy)) & results["value"].notna()
    return results["value"].where(counts)


def _splits(frame: pd.DataFrame, class_names: dict[tuple[str, int], str]) -> Iterator[tuple[str, str, np.ndarray]]:
    """(split, group, row mask over the frame's samples) for all, correct/incorrect and each class."""
    yield "all", "all", np.ones(len(frame), dtype=bool)
    correct = frame["correct"].astype("boolean")
    if correct.notna().any():
        for flag in (True, False):
            mask = (correct.fillna(not flag) == flag).to_numpy(dtype=bool)
            if mask.any():
                yield "correct", str(flag).lower(), mask
    dataset = frame["dataset"].iloc[0]
    for label in sorted(frame["label"].dropna().unique()):
        name = class_names.get((dataset, int(label)), str(int(label)))
        yield "class", name, (frame["label"] == label).to_numpy(dtype=bool)


def _stats(values: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """n, mean, median, std and bootstrap interval of every column of ``values`` (n, k) with NaN for
    samples a column did not score; all columns on the same resamples (``stats.bootstrap_means``)."""
    k = values.shape[1]
    scored = ~np.isnan(values)
    n = scored.sum(0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # columns without a scored sample are NaN, on purpose
        out = {
            "n": n.astype(float),
            "mean": np.nanmean(values, 0) if len(values) else np.full(k, np.nan),
            "median": np.nanmedian(values, 0) if len(values) else np.full(k, np.nan),
            "std": np.nanstd(values, 0, ddof=1) if len(values) else np.full(k, np.nan),
        }
        out["std"] = np.where(n > 1, out["std"], np.nan)
        out["ci_low"], out["ci_high"] = np.full(k, np.nan), np.full(k, np.nan)
        rows = scored.any(1)
        if rows.sum() > 1:
            lo, hi = percentile_interval(bootstrap_means(values[rows], seed))
            out["ci_low"], out["ci_high"] = np.where(n > 1, lo, out["mean"]), np.where(n > 1, hi, out["mean"])
        elif rows.sum() == 1:
            out["ci_low"], out["ci_high"] = out["mean"].copy(), out["mean"].copy()
    return out


def _group_rows(part: pd.DataFrame, class_names: dict[tuple[str, int], str], policy: str) -> list[dict[str, object]]:
    """Summary rows of one (dataset, model): every (explainer, metric) column over every split."""
    part = part.assign(scored=scored_values(part, policy))
    wide = part.pivot_table(
        index="sample_id", columns=["explainer", "metric"], values="scored", aggfunc="first", dropna=False
    )
    samples = part.drop_duplicates("sample_id").set_index("sample_id").reindex(wide.index).reset_index()
    counts = part.groupby(["explainer", "metric"])["status"].value_counts().unstack(fill_value=0)
    facts = part.drop_duplicates(["explainer", "metric"]).set_index(["explainer", "metric"])
    dataset, model = part["dataset"].iloc[0], part["model"].iloc[0]
    values = wide.to_numpy(dtype=float)
    rows = []
    for split, group, mask in _splits(samples, class_names):
        stats = _stats(values[mask], stable_hash("bootstrap", dataset, model, split, group))
        for j, (explainer, metric) in enumerate(wide.columns):
            c = counts.loc[(explainer, metric)] if (explainer, metric) in counts.index else {}
            rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "explainer": explainer,
                    "metric": metric,
                    "split": split,
                    "group": group,
                    "metric_name": facts.loc[(explainer, metric), "metric_name"],
                    "higher_is_better": bool(facts.loc[(explainer, metric), "higher_is_better"]),
                    **{k: v[j] for k, v in stats.items()},
                    "n_degenerate": int(c.get("degenerate", 0)) if split == "all" else 0,
                    "n_error": int(c.get("error", 0)) if split == "all" else 0,
                    "n_nan": int(c.get("nan", 0)) if split == "all" else 0,
                    "n_skipped": int(c.get("skipped", 0)) if split == "all" else 0,
                }
            )
    return rows


def summarise(
    results: pd.DataFrame, class_names: dict[tuple[str, int], str] | None = None, policy: str = "declared"
) -> pd.DataFrame:
    """Summary rows for every (dataset, model, explainer, metric) and split.

    ``class_names`` maps (dataset, label) to a name for the per-class rows (default: the label
    index); ``policy`` is the nan_policy (see the module docstring). Status counts are given on
    the ``all`` split.
    """
    if results.empty:
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for _, part in results.groupby(["dataset", "model"], sort=True):
        rows += _group_rows(part, class_names or {}, policy)
    frame = pd.DataFrame.from_records(rows, columns=COLUMNS)
    frame["n"] = frame["n"].astype(int)
    return frame.sort_values([*KEY, "split", "group"], kind="stable").reset_index(drop=True)


def overall(summary: pd.DataFrame) -> pd.DataFrame:
    """The rows over all samples only."""
    return summary[summary["split"] == "all"].drop(columns=["split", "group"]).reset_index(drop=True)
