"""How long the verdicts take: leaderboard (paired tests, Holm, controls) + reliability, and the summary,
for 20 explainers x 20 metrics x 1000 images (the issue's size), from synthetic rows.

    python benchmarks/bench_statistics.py [--explainers 20] [--metrics 20] [--samples 1000] [--repeats 3]

Prints the median wall time of each part over the repeats (target: leaderboard + reliability < 10 s on
2 cores).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from bench.cards import Cards, ExplainerCard, MetricCard, OutputCard
from bench.leaderboard import build
from bench.summary import summarise


def synthetic_rows(explainers: int, metrics: int, samples: int, seed: int = 0) -> tuple[pd.DataFrame, Cards]:
    """Long-form rows with realistic structure: per-image difficulty shared by all explainers, a per-explainer
    effect, noise, a few degenerate and NaN rows; explainer 0 is a control."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0, 1, samples)
    frames, cards = [], Cards()
    for m in range(metrics):
        name, higher = f"metric{m}", bool(m % 2)
        family = "localisation" if m < metrics // 2 else "faithfulness"
        cards.metrics[name] = MetricCard(name, name, 1, "{}", family, (), (OutputCard(name, higher, True, 0.0),))
        for e in range(explainers):
            value = np.clip(difficulty * 0.6 + 0.02 * e + rng.normal(0, 0.1, samples), 0, 1)
            status = np.where(rng.random(samples) < 0.02, "degenerate", "ok")
            status = np.where(rng.random(samples) < 0.01, "nan", status)
            value = np.where(status == "nan", np.nan, np.where(status == "degenerate", 0.0, value))
            frames.append(
                pd.DataFrame(
                    {
                        "dataset": "d",
                        "model": "m",
                        "explainer": f"explainer{e}",
                        "metric": name,
                        "metric_name": name,
                        "higher_is_better": higher,
                        "sample_id": [f"s{i}" for i in range(samples)],
                        "label": np.arange(samples) % 10,
                        "correct": rng.random(samples) < 0.8,
                        "value": value,
                        "status": status,
                    }
                )
            )
    for e in range(explainers):
        cards.explainers[f"explainer{e}"] = ExplainerCard(f"explainer{e}", "x", 1, "{}", control=e == 0)
    return pd.concat(frames, ignore_index=True), cards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--explainers", type=int, default=20)
    parser.add_argument("--metrics", type=int, default=20)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows, cards = synthetic_rows(args.explainers, args.metrics, args.samples)
    times: dict[str, list[float]] = {"leaderboard + reliability": [], "summary (all splits)": []}
    for _ in range(args.repeats):
        begin = time.perf_counter()
        board = build(rows, cards, pd.DataFrame())
        times["leaderboard + reliability"].append(time.perf_counter() - begin)
        begin = time.perf_counter()
        summarise(rows)
        times["summary (all splits)"].append(time.perf_counter() - begin)
    print(
        f"{len(rows):,} rows: {args.explainers} explainers x {args.metrics} metrics x {args.samples} images; "
        f"{len(board.reliability)} reliability rows"
    )
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values):.2f} s over {args.repeats} (min {min(values):.2f} s)")


if __name__ == "__main__":
    main()
