"""Summary statistics of a long-form results table.

One row per (dataset, model, explainer, metric) and split: all samples, samples
the model classified correctly and incorrectly, and each class. Each row has
n, mean, median, standard deviation, a seeded 95 % bootstrap interval of the
mean, and the counts of error, NaN and skipped samples, so nothing that failed
disappears from a summary.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.seeding import stable_hash
from bench.stats import bootstrap_ci

KEY = ["dataset", "model", "explainer", "metric"]
COLUMNS = [*KEY, "split", "group", "metric_name", "higher_is_better", "n", "mean", "median", "std", "ci_low", "ci_high",
           "n_error", "n_nan", "n_skipped"]  # fmt: skip


def _row(key: tuple, split: str, group: str, part: pd.DataFrame) -> dict:
    ok = part.loc[part["status"] == "ok", "value"].to_numpy(dtype=float)
    lo, hi = bootstrap_ci(ok, stable_hash("bootstrap", *key, split, group))
    return {
        **dict(zip(KEY, key, strict=True)),
        "split": split,
        "group": group,
        "metric_name": part["metric_name"].iloc[0] if "metric_name" in part else None,
        "higher_is_better": bool(part["higher_is_better"].iloc[0]),
        "n": len(ok),
        "mean": float(ok.mean()) if len(ok) else float("nan"),
        "median": float(np.median(ok)) if len(ok) else float("nan"),
        "std": float(ok.std(ddof=1)) if len(ok) > 1 else float("nan"),
        "ci_low": lo,
        "ci_high": hi,
        "n_error": int((part["status"] == "error").sum()),
        "n_nan": int((part["status"] == "nan").sum()),
        "n_skipped": int((part["status"] == "skipped").sum()),
    }


def summarise(results: pd.DataFrame, class_names: dict[tuple[str, int], str] | None = None) -> pd.DataFrame:
    """Summary rows for every (dataset, model, explainer, metric) and split.

    ``class_names`` maps (dataset, label) to a name for the per-class rows
    (default: the label index).
    """
    rows = []
    if results.empty:
        return pd.DataFrame(columns=COLUMNS)
    for key, part in results.groupby(KEY, sort=True, dropna=False):
        rows.append(_row(key, "all", "all", part))
        correct = part["correct"].astype("boolean")
        for flag in (True, False):
            chosen = part[correct.fillna(not flag) == flag] if correct.notna().any() else part.iloc[0:0]
            if len(chosen):
                rows.append(_row(key, "correct", str(flag).lower(), chosen))
        for label, chosen in part.groupby("label", sort=True):
            name = (class_names or {}).get((key[0], int(label)), str(int(label)))
            rows.append(_row(key, "class", name, chosen))
    return pd.DataFrame.from_records(rows, columns=COLUMNS)


def overall(summary: pd.DataFrame) -> pd.DataFrame:
    """The rows over all samples only."""
    return summary[summary["split"] == "all"].drop(columns=["split", "group"]).reset_index(drop=True)
