"""Leaderboards: per (dataset, metric), mean with a 95 % bootstrap CI and a direction-aware rank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench import atomic
from bench.seeding import stable_hash
from bench.store import read_predictions, read_results

GROUP = ["dataset", "model", "explainer", "metric"]
BOOTSTRAP_RESAMPLES = 2000


def bootstrap_ci(
    values: np.ndarray, seed: int, resamples: int = BOOTSTRAP_RESAMPLES, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (seeded, so reproducible)."""
    if len(values) == 0:
        return float("nan"), float("nan")
    if len(values) == 1:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model, explainer, metric): n, mean, CI, spread, error and NaN counts."""
    records = []
    for key, group in results.groupby(GROUP, sort=True):
        ok = group[group["status"] == "ok"]["value"].to_numpy(dtype=float)
        lo, hi = bootstrap_ci(ok, stable_hash("bootstrap", *key))
        records.append(
            {
                **dict(zip(GROUP, key, strict=True)),
                "higher_is_better": bool(group["higher_is_better"].iloc[0]),
                "n": len(ok),
                "mean": float(ok.mean()) if len(ok) else float("nan"),
                "ci_low": lo,
                "ci_high": hi,
                "median": float(np.median(ok)) if len(ok) else float("nan"),
                "std": float(ok.std(ddof=1)) if len(ok) > 1 else float("nan"),
                "n_error": int((group["status"] == "error").sum()),
                "n_nan": int((group["status"] == "nan").sum()),
                "n_skipped": int((group["status"] == "skipped").sum()),
            }
        )
    summary = pd.DataFrame.from_records(records)
    if summary.empty:
        return summary
    summary["rank"] = np.nan
    for _, idx in summary.groupby(["dataset", "metric"]).groups.items():
        part = summary.loc[idx]
        ascending = not bool(part["higher_is_better"].iloc[0])
        summary.loc[idx, "rank"] = part["mean"].rank(ascending=ascending, method="min")
    return summary


def model_accuracy(run_dir: Path) -> pd.DataFrame:
    """Accuracy of every (dataset, model) on the images it explained."""
    preds = read_predictions(run_dir)
    if preds.empty:
        return pd.DataFrame(columns=["dataset", "model", "accuracy", "n"])
    return preds.groupby(["dataset", "model"]).agg(accuracy=("correct", "mean"), n=("correct", "size")).reset_index()


def _fmt(x: float, digits: int = 4) -> str:
    return "" if x != x else f"{x:.{digits}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{digits}f}"


def render_markdown(summary: pd.DataFrame, accuracy: pd.DataFrame) -> str:
    """Markdown: per dataset, the models' accuracy, then one ranked table per metric."""
    if summary.empty:
        return "No results yet.\n"
    parts = []
    for dataset, by_dataset in summary.groupby("dataset", sort=True):
        parts.append(f"## {dataset}\n")
        acc = accuracy[accuracy["dataset"] == dataset]
        if not acc.empty:
            rows = [[r.model, _fmt(r.accuracy), int(r.n)] for r in acc.itertuples()]
            parts.append("Model accuracy on the explained images:\n")
            parts.append(tabulate(rows, headers=["model", "accuracy", "n"], tablefmt="github") + "\n")
        for metric, part in by_dataset.groupby("metric", sort=True):
            if (part["n"] == 0).all():
                continue  # nothing measured (e.g. peak memory on a CPU)
            arrow = "higher is better" if part["higher_is_better"].iloc[0] else "lower is better"
            parts.append(f"### {metric} ({arrow})\n")
            rows = [
                [
                    "" if r.rank != r.rank else int(r.rank),
                    r.model,
                    r.explainer,
                    _fmt(r.mean),
                    f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]",
                    r.n,
                    r.n_error + r.n_nan,
                ]
                for r in part.sort_values(["rank", "model", "explainer"]).itertuples()
            ]
            headers = ["rank", "model", "explainer", "mean", "95% CI", "n", "errors/NaN"]
            parts.append(tabulate(rows, headers=headers, tablefmt="github") + "\n")
    return "\n".join(parts)


def build_leaderboard(run_dir: Path | str, write: bool = True) -> tuple[pd.DataFrame, str]:
    """Summarise a run directory; write leaderboard.md and leaderboard.parquet into it."""
    run_dir = Path(run_dir)
    summary = summarise(read_results(run_dir))
    text = "# Leaderboard\n\n" + render_markdown(summary, model_accuracy(run_dir))
    if write:
        atomic.write_text(run_dir / "leaderboard.md", text)
        atomic.write_with(run_dir / "leaderboard.parquet", lambda p: summary.to_parquet(p, index=False))
    return summary, text
