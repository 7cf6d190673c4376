"""Report charts (matplotlib, headless): each function returns PNG bytes, or None when there is nothing to draw.

Galleries of attribution maps are in ``bench.figures_gallery``.
"""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bench.cards import Cards
from bench.png import paletted

DPI = 96
CONTROL_COLOUR = "#888888"


def png(fig: Figure, dpi: int = DPI, fmt: str = "png") -> bytes:
    """The figure encoded (and closed): charts as palette PNGs (``bench.png.paletted``), photographs
    (``fmt="jpeg"``) as JPEG."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        fig.savefig(buf, format="jpeg", dpi=dpi, bbox_inches="tight", pil_kwargs={"quality": 82, "optimize": True})
        plt.close(fig)
        return buf.getvalue()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return paletted(buf.getvalue())


def _grid(n: int, width: float = 4.4, height: float = 3.2, cols: int = 3) -> tuple[Figure, list[Axes]]:
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def curves(curve_rows: pd.DataFrame, cards: Cards, controls: set[str]) -> bytes | None:
    """Mean curve per explainer with a 95 % band (normal approximation over images), one panel per curve
    the metrics' cards say how to draw (axis labels, x positions). ``curve_rows``: explainer, metric, curve."""
    drawable = [m for m in sorted(set(curve_rows["metric"])) if cards.curve(m) is not None] if len(curve_rows) else []
    if not drawable:
        return None
    fig, axes = _grid(len(drawable))
    for ax, metric in zip(axes, drawable, strict=True):
        card = cards.curve(metric)
        assert card is not None
        part = curve_rows[curve_rows["metric"] == metric]
        for explainer, group in part.groupby("explainer", sort=True):
            stack = np.stack([np.asarray(c, dtype=float) for c in group["curve"]])
            mean = np.nanmean(stack, 0)
            count = np.isfinite(stack).sum(0)
            sem = np.nanstd(stack, 0, ddof=1) / np.sqrt(np.maximum(count, 1)) if len(stack) > 1 else 0 * mean
            x = np.asarray(card.x, dtype=float) if len(card.x) == len(mean) else np.linspace(0, 1, len(mean))
            style: dict[str, Any] = {"color": CONTROL_COLOUR, "ls": "--"} if explainer in controls else {}
            ax.plot(x, mean, label=str(explainer), lw=1.6, **style)
            ax.fill_between(x, mean - 1.96 * sem, mean + 1.96 * sem, alpha=0.18, color=style.get("color"))
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel(card.x_label, fontsize=9)
        ax.set_ylabel(card.y_label, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return png(fig)


def forest(rows: pd.DataFrame, title: str) -> bytes | None:
    """Each explainer's mean with its 95 % interval, one panel per ranked metric, best first; the controls'
    means are dashed reference lines. ``rows``: verdict rows (entry, metric, mean, ci_low, ci_high, control,
    higher_is_better, rank)."""
    metrics = list(dict.fromkeys(rows["metric"]))
    if not metrics:
        return None
    fig, axes = _grid(len(metrics), width=4.2, height=0.45 * rows["entry"].nunique() + 1.2)
    for ax, metric in zip(axes, metrics, strict=True):
        part = rows[rows["metric"] == metric].sort_values(["control", "rank", "mean"], na_position="last")
        part = part[part["mean"].notna()]
        y = np.arange(len(part))[::-1]
        colours = [CONTROL_COLOUR if c else "#1f77b4" for c in part["control"]]
        low = (part["mean"] - part["ci_low"]).clip(lower=0).fillna(0)
        high = (part["ci_high"] - part["mean"]).clip(lower=0).fillna(0)
        for yi, mean, lo, hi, colour in zip(y, part["mean"], low, high, colours, strict=True):
            ax.errorbar([mean], [yi], xerr=[[lo], [hi]], fmt="o", color=colour, ms=4, elinewidth=1.4, capsize=3)
        for _, control in part[part["control"]].iterrows():
            ax.axvline(control["mean"], color=CONTROL_COLOUR, ls="--", lw=1)
        ax.set_yticks(
            y,
            [f"{e} ({int(r)})" if r == r else str(e) for e, r in zip(part["entry"], part["rank"], strict=True)],
            fontsize=8,
        )
        better = "higher" if bool(part["higher_is_better"].iloc[0]) else "lower"
        ax.set_title(f"{metric} ({better} is better)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return png(fig)


def model_selection(rows: pd.DataFrame, title: str) -> bytes | None:
    """Per (explainer, localisation metric): each model's score with its 95 % interval against its accuracy
    with its interval, on the same explained images. ``rows``: model-view verdict rows (explainer, entry =
    model, metric, mean, ci_low, ci_high), the accuracy among them as metric "accuracy"."""
    accuracy = rows[rows["metric"] == "accuracy"]
    scores = rows[rows["metric"] != "accuracy"]
    if scores.empty or accuracy.empty:
        return None
    panels = list(scores.groupby(["explainer", "metric"], sort=True))
    fig, axes = _grid(len(panels), width=4.0, height=3.4)
    for ax, ((explainer, metric), part) in zip(axes, panels, strict=True):
        acc = accuracy[accuracy["explainer"] == explainer].set_index("entry")
        part = part[part["entry"].isin(acc.index)]
        x = acc.loc[part["entry"], "mean"].to_numpy(dtype=float)
        x_err = [
            np.clip(x - acc.loc[part["entry"], "ci_low"].to_numpy(dtype=float), 0, None),
            np.clip(acc.loc[part["entry"], "ci_high"].to_numpy(dtype=float) - x, 0, None),
        ]
        y_err = [
            (part["mean"] - part["ci_low"]).clip(lower=0).fillna(0),
            (part["ci_high"] - part["mean"]).clip(lower=0).fillna(0),
        ]
        ax.errorbar(x, part["mean"], xerr=x_err, yerr=y_err, fmt="o", capsize=3)
        for xi, yi, name in zip(x, part["mean"], part["entry"], strict=True):
            ax.annotate(str(name), (xi, yi), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel("accuracy on the explained images", fontsize=9)
        ax.set_ylabel(str(metric), fontsize=9)
        ax.set_title(str(explainer), fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return png(fig)


def class_bars(summary: pd.DataFrame, metric: str, title: str) -> bytes | None:
    """Per-class mean of ``metric`` for each explainer (summary rows of split 'class')."""
    part = summary[(summary["split"] == "class") & (summary["metric"] == metric) & (summary["n"] > 0)]
    if part.empty:
        return None
    wide = part.pivot_table(index="group", columns="explainer", values="mean")
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(wide) * max(1, len(wide.columns) / 2)), 3.6))
    wide.plot.bar(ax=ax, width=0.8)
    ax.set_ylabel(f"mean {metric}")
    ax.set_xlabel("class")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return png(fig)


def cost_scatter(means: pd.DataFrame, seconds: str, faithful: list[str], title: str) -> bytes | None:
    """Seconds per image (log scale) against each faithfulness metric, one point per (model, explainer).
    ``means``: index (model, explainer), columns metrics."""
    present = [m for m in faithful if m in means.columns]
    if seconds not in means.columns or not present:
        return None
    fig, axes = _grid(len(present), width=4.8, height=3.6)
    for ax, metric in zip(axes, present, strict=True):
        for (model, explainer), row in means.iterrows():
            x = max(float(row[seconds]), 1e-7)
            ax.scatter(x, row[metric], s=28)
            ax.annotate(f"{explainer}\n({model})", (x, row[metric]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("explainer seconds per image (log)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return png(fig)


def confusion(predictions: pd.DataFrame, class_names: list[str], title: str) -> bytes | None:
    """Confusion matrix of the explained images (rows: true class; columns: predicted class, mapped into the
    dataset's classes; 'other' for predictions outside them). Classes without images are left out."""
    scored = predictions[predictions["correct"].notna()]
    if scored.empty:
        return None
    k = len(class_names)
    matrix = np.zeros((k, k + 1), dtype=int)
    for label, pred in zip(scored["label"], scored["predicted_class"], strict=True):
        matrix[int(label), int(pred) if 0 <= int(pred) < k else k] += 1
    used = [i for i in range(k) if matrix[i].sum() or matrix[:, i].sum()]
    show_other = matrix[:, k].sum() > 0
    shown = matrix[np.ix_(used, [*used, k] if show_other else used)]
    rows = [class_names[i] for i in used]
    columns = [*rows, "other"] if show_other else rows
    size = max(4.0, 0.42 * len(used) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    ax.imshow(shown, cmap="Blues")
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for (i, j), v in np.ndenumerate(shown):
        if v:
            colour = "white" if v > shown.max() / 2 else "black"
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xlabel("predicted (mapped into the dataset's classes)")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    return png(fig)


def per_class_quality(predictions: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per class of the explained images."""
    scored = predictions[predictions["correct"].notna()]
    rows = []
    for index, name in enumerate(class_names):
        truth = scored["label"] == index
        pred = scored["predicted_class"] == index
        tp = int((truth & pred).sum())
        precision = tp / pred.sum() if pred.sum() else float("nan")
        recall = tp / truth.sum() if truth.sum() else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else float("nan")
        if truth.sum() or pred.sum():
            rows.append(
                {"class": name, "precision": precision, "recall": recall, "f1": f1, "support": int(truth.sum())}
            )
    return pd.DataFrame(rows)
