"""`xbench report RUN_DIR`: a self-contained HTML report (images embedded) plus the PNGs.

Per (dataset, model): deletion/insertion curves per explainer (mean with a
95 % band), a heatmap gallery of the same images across explainers (mask
outline, correct/incorrect marked), per-class bars of IoU, the confusion matrix
and per-class precision/recall/F1 of the explained images; per dataset a
runtime-versus-faithfulness scatter; then the leaderboards.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench import atomic, figures
from bench.gallery import read_attributions, read_images
from bench.leaderboard import build, class_names, model_quality
from bench.store import RunStore, read_predictions, read_run
from bench.summary import overall, summarise
from bench.tables import fmt_value

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #aaa; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: .85rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; margin: .5rem 0; } .meta { color: #666; font-size: .85rem; }
"""


@dataclass
class Report:
    title: str
    blocks: list[str] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str) -> None:
        self.blocks.append(f"<p>{html.escape(text)}</p>")

    def figure(self, name: str, png: bytes | None, caption: str) -> None:
        if png is None:
            return
        self.images[name] = png
        data = base64.b64encode(png).decode()
        self.blocks.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                           f"<figcaption class=meta>{html.escape(caption)}</figcaption></figure>")  # fmt: skip

    def table(self, frame: pd.DataFrame) -> None:
        shown = frame.copy()
        for column in shown.columns:
            if pd.api.types.is_float_dtype(shown[column]):
                shown[column] = shown[column].map(fmt_value)
        self.blocks.append(shown.to_html(index=False, escape=True, border=0))

    def html(self) -> str:
        body = "\n".join(self.blocks)
        title = html.escape(self.title)
        head = f"<meta charset=utf-8><title>{title}</title><style>{CSS}</style>"
        return f"<!doctype html><html lang=en><head>{head}</head><body><h1>{title}</h1>\n{body}\n</body></html>\n"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def build_report(run_dir: Path | str) -> Report:
    run_dir = Path(run_dir)
    data = read_run(run_dir)
    results = data.rows
    manifest = json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").exists() else {}
    names = class_names(run_dir)
    summary = summarise(results, names)
    predictions = read_predictions(run_dir)
    quality = model_quality(run_dir)
    report = Report(f"xbench report: {manifest.get('suite_name', run_dir.name)} ({manifest.get('run_id', '')})")
    env = manifest.get("environment", {})
    device = env.get("device", {}).get("name", "?")
    facts = {
        "run directory": run_dir,
        "device": device,
        "xbench": env.get("packages", {}).get("xbench"),
        "git": env.get("git_revision"),
    }
    report.blocks.append("<p class=meta>" + "; ".join(f"{k} {html.escape(str(v))}" for k, v in facts.items()) + "</p>")
    curves = _curve_rows(run_dir, results)
    for (dataset, model), part in results.groupby(["dataset", "model"], sort=True):
        report.heading(f"{dataset} / {model}")
        q = quality[(quality["dataset"] == dataset) & (quality["model"] == model)] if not quality.empty else quality
        if not q.empty:
            row = q.iloc[0]
            report.text(
                f"Accuracy on the {int(row['n'])} explained images: {fmt_value(row['accuracy'])}"
                + (
                    f", macro-F1 {fmt_value(row['macro_f1'])}"
                    if "macro_f1" in row and row["macro_f1"] == row["macro_f1"]
                    else ""
                )
                + (f" (target rule: {row['target_rule']})" if "target_rule" in row else "")
            )
        tag = _safe(f"{dataset}__{model}")
        cell_curves = (
            curves[(curves["dataset"] == dataset) & (curves["model"] == model)] if not curves.empty else curves
        )
        report.figure(f"curves__{tag}.png", figures.curves(cell_curves, f"{dataset} / {model}"),
                      "Mean curves per explainer with 95% bands")  # fmt: skip
        maps = {
            explainer: read_attributions(run_dir, cell_id)
            for explainer, cell_id in part[["explainer", "cell_id"]].drop_duplicates().itertuples(index=False)
        }
        picture = figures.gallery(read_images(run_dir, dataset, model), {k: v for k, v in maps.items() if v}, tag)
        caption = "The same images across explainers (✓ correct, ✗ incorrect; cyan: object mask)"
        report.figure(f"gallery__{tag}.png", picture, caption)
        sub = summary[(summary["dataset"] == dataset) & (summary["model"] == model)]
        for metric in [m for m in ("iou", "pointing_game", "energy_pointing_game") if m in set(sub["metric"])]:
            report.figure(f"classes__{metric}__{tag}.png", figures.class_bars(sub, metric, f"{metric} per class"),
                          f"{metric} per class")  # fmt: skip
        preds = (
            predictions[(predictions["dataset"] == dataset) & (predictions["model"] == model)]
            if not predictions.empty
            else predictions
        )
        labels = [names.get((dataset, i), str(i)) for i in range(_n_classes(names, dataset))]
        if not preds.empty and labels:
            report.figure(f"confusion__{tag}.png", figures.confusion(preds, labels, "confusion matrix"),
                          "Confusion matrix of the explained images")  # fmt: skip
            per_class = figures.per_class_quality(preds, labels)
            if not per_class.empty:
                report.table(per_class)
    for dataset, part in overall(summary).groupby("dataset", sort=True):
        report.heading(f"{dataset}: cost versus faithfulness")
        report.figure(f"cost__{_safe(dataset)}.png", figures.cost_scatter(part, dataset), "Runtime versus faithfulness")
    board = build(results, data.cards, quality).board
    report.heading("Leaderboards")
    report.blocks.append(board.render("html"))
    return report


def _n_classes(names: dict[tuple[str, int], str], dataset: str) -> int:
    labels = [label for ds, label in names if ds == dataset]
    return max(labels) + 1 if labels else 0


def _curve_rows(run_dir: Path, results: pd.DataFrame) -> pd.DataFrame:
    folder = run_dir / "curves"
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return pd.DataFrame(columns=["dataset", "model", "explainer", "metric", "curve"])
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    cells = results[["cell_id", "dataset", "model", "explainer"]].drop_duplicates()
    return frame.merge(cells, on="cell_id", how="inner")


def write_report(run_dir: Path | str, output: Path | str | None = None) -> Path:
    """Write report.html (self-contained) and the PNGs into ``output`` (default RUN_DIR/report)."""
    run_dir = Path(run_dir)
    report = build_report(run_dir)
    if output is None:  # inside the run directory: through its store
        store = RunStore(run_dir)
        for name, png in report.images.items():
            store.write_view(f"report/{name}", png)
        return store.write_view("report/report.html", report.html())
    folder = Path(output)
    for name, png in report.images.items():
        atomic.write_bytes(folder / name, png)
    atomic.write_text(folder / "report.html", report.html())
    return folder / "report.html"
