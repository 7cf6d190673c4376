"""Report figures (matplotlib, headless): each function returns PNG bytes, or None when there is
nothing to draw."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

DPI = 110


def _png(fig: plt.Figure, dpi: int = DPI) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def curves(curve_rows: pd.DataFrame, title: str) -> bytes | None:
    """Mean curve per explainer with a 95 % band (normal approximation over samples), one panel
    per curve metric (deletion, insertion, ...). ``curve_rows``: explainer, metric, curve."""
    if curve_rows.empty:
        return None
    metrics = sorted(curve_rows["metric"].unique())[:4]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        part = curve_rows[curve_rows["metric"] == metric]
        for explainer, group in part.groupby("explainer", sort=True):
            stack = np.stack([np.asarray(c, dtype=float) for c in group["curve"]])
            mean = stack.mean(0)
            sem = stack.std(0, ddof=1) / math.sqrt(len(stack)) if len(stack) > 1 else np.zeros_like(mean)
            x = np.linspace(0, 1, len(mean))
            ax.plot(x, mean, label=explainer, lw=1.6)
            ax.fill_between(x, mean - 1.96 * sem, mean + 1.96 * sem, alpha=0.2)
        ax.set_title(metric)
        ax.set_xlabel("fraction of pixels")
        ax.set_ylabel("target score")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle(title)
    return _png(fig)


def gallery(images: pd.DataFrame, maps: dict[str, dict[str, np.ndarray]], title: str) -> bytes | None:
    """The same images across explainers: positive attribution over the image, the mask outline
    in cyan, ✓ / ✗ for correct / incorrect predictions."""
    if images.empty or not maps:
        return None
    explainers = sorted(maps)
    rows, cols = len(images), 1 + len(explainers)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows + 0.4), squeeze=False, layout="constrained")
    for r, img in enumerate(images.itertuples()):
        picture = np.asarray(img.image, dtype=np.uint8).reshape(img.height, img.width, 3)
        mask = None if img.mask is None else np.asarray(img.mask, dtype=np.uint8).reshape(img.height, img.width)
        mark = "?" if pd.isna(img.correct) else ("✓" if img.correct else "✗")
        axes[r][0].imshow(picture)
        axes[r][0].set_title(f"{mark} {img.label_name} → {img.prediction_name}"[:34], fontsize=7)
        for c, explainer in enumerate(explainers, start=1):
            ax = axes[r][c]
            ax.imshow(picture)
            attribution = maps[explainer].get(img.sample_id)
            if attribution is not None:
                positive = np.clip(attribution, 0, None)
                peak = positive.max()
                ax.imshow(positive / peak if peak > 0 else positive, cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            if mask is not None and (mask == 1).any():
                ax.contour(mask == 1, levels=[0.5], colors="cyan", linewidths=0.8)
            if r == 0:
                ax.set_title(explainer, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    return _png(fig, dpi=80)


def class_bars(summary: pd.DataFrame, metric: str, title: str) -> bytes | None:
    """Per-class mean of ``metric`` for each explainer (summary rows of split 'class')."""
    part = summary[(summary["split"] == "class") & (summary["metric"] == metric) & (summary["n"] > 0)]
    if part.empty:
        return None
    wide = part.pivot_table(index="group", columns="explainer", values="mean")
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(wide) * max(1, len(wide.columns) / 2)), 3.6))
    wide.plot.bar(ax=ax, width=0.8)
    ax.set_ylabel(metric)
    ax.set_xlabel("class")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _png(fig)


def cost_scatter(summary: pd.DataFrame, title: str) -> bytes | None:
    """Seconds per image (log scale) against deletion and insertion AUC, one point per (model, explainer)."""
    wide = summary.pivot_table(index=["model", "explainer"], columns="metric", values="mean")
    present = [m for m in ("deletion", "insertion") if m in wide.columns]
    if "runtime" not in wide.columns or not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], present, strict=True):
        for (model, explainer), row in wide.iterrows():
            ax.scatter(max(row["runtime"], 1e-7), row[metric], s=30)
            ax.annotate(f"{explainer}\n({model})", (max(row["runtime"], 1e-7), row[metric]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("seconds per image")
        ax.set_ylabel(f"{metric} AUC ({'lower' if metric == 'deletion' else 'higher'} is better)")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _png(fig)


def confusion(predictions: pd.DataFrame, class_names: list[str], title: str) -> bytes | None:
    """Confusion matrix of the explained images (rows: true class; columns: predicted class,
    mapped into the dataset's classes; 'other' for predictions outside them)."""
    scored = predictions[predictions["correct"].notna()]
    if scored.empty:
        return None
    k = len(class_names)
    matrix = np.zeros((k, k + 1), dtype=int)
    for label, pred in zip(scored["label"], scored["predicted_class"], strict=True):
        matrix[int(label), int(pred) if 0 <= int(pred) < k else k] += 1
    show_other = matrix[:, k].sum() > 0
    shown = matrix if show_other else matrix[:, :k]
    columns = [*class_names, "other"] if show_other else class_names
    size = max(4.0, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    ax.imshow(shown, cmap="Blues")
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    for (i, j), v in np.ndenumerate(shown):
        if v:
            ax.text(
                j, i, str(v), ha="center", va="center", fontsize=6, color="white" if v > shown.max() / 2 else "black"
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _png(fig)


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
