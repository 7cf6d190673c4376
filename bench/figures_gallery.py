"""Galleries of attribution maps for reports (JPEG bytes, small enough to embed).

- ``comparative``: the same images across explainers (and, one gallery per model, across models): the
  image with its true class and the model's prediction in readable text, then each explainer's positive
  attribution over it, the object's mask outlined, and that image's scores under each map below it.
- ``picks``: per explainer, the best, the median and the worst image of the gallery by one metric, so a
  reader sees what a high and a low score look like for that explainer.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from bench.figures import png

Values = dict[tuple[str, str], str]  # (explainer, sample id) -> caption of that image's scores


MAX_PANELS = 60  # panels of a comparative gallery; more explainers mean fewer image rows


def _picture(row: pd.Series) -> np.ndarray:
    return np.asarray(row["image"], dtype=np.uint8).reshape(int(row["height"]), int(row["width"]), 3)


def _mask(row: pd.Series) -> np.ndarray | None:
    if row.get("mask") is None or (isinstance(row["mask"], float) and row["mask"] != row["mask"]):
        return None
    return np.asarray(row["mask"], dtype=np.uint8).reshape(int(row["height"]), int(row["width"]))


def _overlay(ax: Axes, row: pd.Series, attribution: np.ndarray | None) -> None:
    picture = _picture(row)
    ax.imshow(picture)
    if attribution is not None:
        positive = np.clip(attribution, 0, None)
        peak = positive.max()
        ax.imshow(positive / peak if peak > 0 else positive, cmap="inferno", alpha=0.6, vmin=0, vmax=1)
    mask = _mask(row)
    if mask is not None and (mask == 1).any():
        ax.contour(mask == 1, levels=[0.5], colors="cyan", linewidths=0.9)
    ax.set_xticks([])
    ax.set_yticks([])


def _label(row: pd.Series) -> str:
    mark = "?" if pd.isna(row["correct"]) else ("✓" if row["correct"] else "✗")
    return f"true: {row['label_name']}\npredicted: {str(row['prediction_name'])[:22]} {mark}"


def comparative(
    images: pd.DataFrame,
    maps: dict[str, dict[str, np.ndarray]],
    values: Values,
    explainers: list[str],
    title: str,
    rows: int = 6,
) -> bytes | None:
    """The first ``rows`` gallery images across ``explainers`` (see the module docstring). With many
    explainers (a layer sweep: 20 columns) fewer rows, at most about 60 panels, so the report stays small."""
    shown = [e for e in explainers if maps.get(e)]
    if images.empty or not shown:
        return None
    images = images.head(max(2, min(rows, MAX_PANELS // (1 + len(shown)))))
    fig, axes = plt.subplots(
        len(images),
        1 + len(shown),
        figsize=(2.1 * (1 + len(shown)), 2.45 * len(images) + 0.5),
        squeeze=False,
        layout="constrained",
    )
    for r, (_, row) in enumerate(images.iterrows()):
        _overlay(axes[r][0], row, None)
        axes[r][0].set_xlabel(_label(row), fontsize=8)
        for c, explainer in enumerate(shown, start=1):
            ax = axes[r][c]
            _overlay(ax, row, maps[explainer].get(row["sample_id"]))
            ax.set_xlabel(values.get((explainer, row["sample_id"]), ""), fontsize=8)
            if r == 0:
                ax.set_title(explainer, fontsize=9)
    axes[0][0].set_title("image", fontsize=9)
    fig.suptitle(title, fontsize=11)
    return png(fig, dpi=72, fmt="jpeg")


def picks(
    images: pd.DataFrame,
    maps: dict[str, dict[str, np.ndarray]],
    scores: pd.DataFrame,
    metric: str,
    higher_is_better: bool,
    title: str,
    order: list[str] | None = None,
) -> bytes | None:
    """Per explainer, its best, median and worst gallery image by ``metric``. ``scores``: explainer,
    sample_id, value (of ``metric``, on the gallery images)."""
    by_id = images.set_index("sample_id") if not images.empty else images
    rows = []
    scored = scores.dropna(subset=["value"])
    for explainer in order or sorted(set(scored["explainer"])):
        part = scored[scored["explainer"] == explainer]
        part = part[part["sample_id"].isin(by_id.index) & part["sample_id"].isin(list(maps.get(explainer, {})))]
        if len(part) < 3:
            continue
        ordered = part.sort_values("value", ascending=not higher_is_better, kind="stable")
        chosen = [("best", ordered.iloc[0]), ("median", ordered.iloc[len(ordered) // 2]), ("worst", ordered.iloc[-1])]
        rows.append((explainer, chosen))
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 3, figsize=(6.6, 2.5 * len(rows) + 0.5), squeeze=False, layout="constrained")
    for r, (explainer, chosen) in enumerate(rows):
        for c, (role, score) in enumerate(chosen):
            row = by_id.loc[score["sample_id"]]
            ax = axes[r][c]
            _overlay(ax, row, maps[explainer].get(score["sample_id"]))
            ax.set_xlabel(f"{role}: {metric} {score['value']:.3g}\ntrue {row['label_name']}", fontsize=8)
            if c == 0:
                ax.set_ylabel(str(explainer), fontsize=9)
    fig.suptitle(title, fontsize=11)
    return png(fig, dpi=72 if len(rows) <= 10 else 54, fmt="jpeg")  # a sweep's 20 rows at a smaller scale
