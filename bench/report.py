"""`xbench report RUN_DIR`: a self-contained HTML report that leads with the answer.

Order: the run's facts (suite, data, models and their accuracy, device, versions);
per (dataset, model) the explainer leaderboard with the verdicts against the
controls and a chart of every explainer's interval beside the controls' reference
lines; with several models, the model selection (localisation beside accuracy);
how reliable each ranking is; then the details: curves with the axes of each curve
type, galleries (the same images across explainers, and each explainer's best,
median and worst image by a metric), per-class scores, the confusion matrix and
the cost of each explainer. A table of contents links every section; every figure
has a caption that says what it shows and how to read it.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench import atomic, figures, figures_gallery
from bench.gallery import read_attributions, read_images
from bench.leaderboard import Board, build, class_names, control_sentences, model_quality
from bench.reliability import rank_agreement, reliability_tables
from bench.store import Manifest, Results, RunStore, read_manifest, read_predictions, read_run
from bench.summary import summarise
from bench.tables import Table, fmt_value, render_table

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1250px; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2.6rem; border-bottom: 1px solid #aaa; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: .86rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1rem 0 1.6rem; } img { max-width: 100%; }
figcaption, .meta { color: #555; font-size: .9rem; } nav ul { columns: 2; } .facts td { text-align: left; }
ul.verdicts li { margin: .2rem 0; }
"""


@dataclass
class Report:
    title: str
    blocks: list[str] = field(default_factory=list)
    toc: list[tuple[int, str, str]] = field(default_factory=list)  # (level, anchor, text)
    images: dict[str, bytes] = field(default_factory=dict)  # file name -> image bytes

    def heading(self, text: str, level: int = 2) -> None:
        anchor = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") + f"-{len(self.toc)}"
        self.toc.append((level, anchor, text))
        self.blocks.append(f'<h{level} id="{anchor}">{html.escape(text)}</h{level}>')

    def text(self, text: str, css: str = "") -> None:
        self.blocks.append(f"<p{f' class={css}' if css else ''}>{html.escape(text)}</p>")

    def items(self, lines: list[str]) -> None:
        if lines:
            self.blocks.append("<ul class=verdicts>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>")

    def figure(self, name: str, data: bytes | None, caption: str) -> None:
        if data is None:
            return
        self.images[name] = data
        mime = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png"
        src = f"data:{mime};base64,{base64.b64encode(data).decode()}"
        self.blocks.append(
            f'<figure><img alt="{html.escape(caption)}" src="{src}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def table(self, table: Table) -> None:
        self.blocks.append(render_table(Table("", table.headers, table.rows, table.note), "html"))

    def html(self) -> str:
        nav = "".join(
            f'<li style="margin-left:{(level - 2) * 1.2}rem"><a href="#{a}">{html.escape(t)}</a></li>'
            for level, a, t in self.toc
        )
        title = html.escape(self.title)
        head = f"<meta charset=utf-8><title>{title}</title><style>{CSS}</style>"
        body = "\n".join(self.blocks)
        return (
            f"<!doctype html><html lang=en><head>{head}</head><body><h1>{title}</h1>"
            f"<nav><strong>Contents</strong><ul>{nav}</ul></nav>\n{body}\n</body></html>\n"
        )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@dataclass
class RunView:
    """Everything a report reads from one run directory."""

    run_dir: Path
    data: Results
    manifest: Manifest | None
    quality: pd.DataFrame
    names: dict[tuple[str, int], str]
    predictions: pd.DataFrame
    summary: pd.DataFrame
    board: Board
    policy: str

    @classmethod
    def read(cls, run_dir: Path) -> RunView:
        data, manifest = read_run(run_dir), read_manifest(run_dir)
        policy = manifest.suite.get("nan_policy", "declared") if manifest else "declared"
        names = class_names(run_dir)
        for key, info in (manifest.models if manifest else {}).items():
            for i, name in enumerate(info.get("dataset_classes", [])):
                names.setdefault((key.split("/", 1)[0], i), name)
        quality = model_quality(run_dir)
        return cls(
            run_dir,
            data,
            manifest,
            quality,
            names,
            read_predictions(run_dir),
            summarise(data.rows, names, policy),
            build(data.rows, data.cards, quality, policy),
            policy,
        )


def _sample_count(samples: object) -> str:
    """The suite's ``samples`` as a phrase: a count per dataset, or every image (``null``)."""
    return "every image of each dataset" if samples is None else f"{samples} per dataset"


def _facts(report: Report, view: RunView) -> None:
    m = view.manifest
    report.heading("The run")
    env = m.environment if m else {}
    packages = env.get("packages", {})
    suite = m.suite if m else {}
    rows = [
        ("suite", f"{m.suite_name} ({m.suite_path})" if m else str(view.run_dir)),
        ("description", str(suite.get("description", "")).strip()),
        ("data", ", ".join(f"{d.get('id') or d['name']} ({d['name']})" for d in suite.get("datasets", []))),
        ("images", f"{_sample_count(suite.get('samples'))}, seed {suite.get('seed')}, target {suite.get('target')}"),
        ("device", str(env.get("device", {}).get("name", "?"))),
        (
            "versions",
            ", ".join(f"{k} {packages.get(k)}" for k in ("xbench", "torch", "captum", "quantus") if packages.get(k)),
        ),
        ("git revision", str(env.get("git_revision"))),
        ("finished", str(m.invocations[-1].finished if m and m.invocations else "")),
        ("no-answer maps", f"nan_policy {view.policy}"),
    ]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows if v)
    report.blocks.append(f"<table class=facts>{body}</table>")
    if not view.quality.empty:
        q = view.quality
        lines = []
        for _, row in q.iterrows():
            scored, n = row.get("n_scored", row.get("n")), row.get("n")
            extra = f" ({int(n - scored)} without a target)" if scored == scored and n == n and n != scored else ""
            lines.append(
                f"{row['dataset']} / {row['model']}: accuracy {fmt_value(row.get('accuracy'))} on the "
                f"{int(scored) if scored == scored else '?'} scored images{extra}"
            )
        report.items(lines)


def _verdicts(report: Report, view: RunView) -> None:
    from bench.leaderboard import explainer_table, model_table

    for t in view.board.explainers:
        report.heading(f"{t.title}: which explainer", 2)
        report.table(explainer_table(t, view.data.cards))
        sentences = control_sentences(t)
        report.items(
            sentences
            or [
                "Every explainer is significantly better than every control on every ranked metric."
                if any(v.controls for v in t.by_metric.values())
                else "No control in this table."
            ]
        )
        rows = view.board.frame
        if rows.empty:  # no ranked metric (a suite of costs only): nothing to draw
            continue
        rows = rows[
            (rows["view"] == "explainers")
            & rows["ranked"]
            & (rows["dataset"] == t.keys["dataset"])
            & (rows["model"] == t.keys["model"])
        ]
        report.figure(
            f"forest__{_safe(t.title)}.png",
            figures.forest(rows, t.title),
            "Each explainer's mean with its 95 % interval per ranked metric (rank in brackets, best at the "
            "top); grey: controls, whose means are the dashed reference lines an explainer should clear.",
        )
    if view.board.models:
        report.heading("Which model's explanations land on the object", 2)
        for t in view.board.models:
            report.table(model_table(t, view.quality))
        rows = view.board.frame[view.board.frame["view"] == "models"]
        for dataset, part in rows.groupby("dataset"):
            report.figure(
                f"models__{_safe(str(dataset))}.png",
                figures.model_selection(part, str(dataset)),
                "Model selection: each model's localisation score against its accuracy on the same explained "
                "images (means with 95 % intervals), one panel per explainer and metric. Up and right is better "
                "on both; the table above says which differences are significant (paired, Holm-corrected).",
            )


def _reliability(report: Report, view: RunView) -> None:
    report.heading("How much to trust these rankings", 2)
    frame = view.board.reliability
    for t in view.board.explainers:
        rows = (
            frame[(frame["dataset"] == t.keys["dataset"]) & (frame["model"] == t.keys["model"])]
            if len(frame)
            else frame
        )
        from bench.reliability import MetricReliability

        items = [
            MetricReliability(**{k: v for k, v in r.items() if k not in ("dataset", "model")})
            for r in rows.to_dict("records")
        ]
        for table in reliability_tables(t.title, items, rank_agreement({m: t.by_metric[m] for m in t.ranked})):
            report.table(table)


def _curve_rows(run_dir: Path, results: pd.DataFrame) -> pd.DataFrame:
    folder = run_dir / "curves"
    cells = set(results["cell_id"].unique()) if len(results) else set()
    files = [f for f in sorted(folder.glob("*.parquet")) if f.stem in cells] if folder.is_dir() else []
    if not files:
        return pd.DataFrame(columns=["dataset", "model", "explainer", "metric", "curve"])
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    keys = results[["cell_id", "dataset", "model", "explainer"]].drop_duplicates()
    return frame.merge(keys, on="cell_id", how="inner")


def _gallery_metric(view: RunView, part: pd.DataFrame) -> tuple[str, bool] | None:
    """The metric galleries rank images by: the first ranked localisation metric, else faithfulness."""
    outputs = view.data.cards.outputs()
    present = [m for m in dict.fromkeys(part["metric"]) if m in outputs and outputs[m].ranked]
    for family in ("localisation", "faithfulness"):
        for metric in present:
            if view.data.cards.family_of(metric) == family:
                return metric, outputs[metric].higher_is_better
    return None


def _captions(view: RunView, part: pd.DataFrame, ids: set[str]) -> dict[tuple[str, str], str]:
    """Per (explainer, image): its scores under that explainer's map, in a few words."""
    outputs = view.data.cards.outputs()
    shown = [m for m in dict.fromkeys(part["metric"]) if m in outputs and outputs[m].ranked][:3]
    rows = part[part["sample_id"].isin(ids) & part["metric"].isin(shown)]
    out: dict[tuple[str, str], list[str]] = {}
    for r in rows.itertuples():
        text = "no answer" if r.status == "degenerate" else (fmt_value(r.value, 2) if r.value == r.value else "—")
        out.setdefault((r.explainer, r.sample_id), []).append(f"{r.metric} {text}")
    return {k: "\n".join(v) for k, v in out.items()}


def _details(report: Report, view: RunView) -> None:
    report.heading("Details", 2)
    results, cards = view.data.rows, view.data.cards
    curves = _curve_rows(view.run_dir, results)
    for (dataset, model), part in results.groupby(["dataset", "model"], sort=True):
        tag = _safe(f"{dataset}__{model}")
        controls = {e for e in set(part["explainer"].unique()) if cards.is_control(e)}
        report.heading(f"{dataset} / {model}", 3)
        mine = curves[(curves["dataset"] == dataset) & (curves["model"] == model)] if len(curves) else curves
        report.figure(
            f"curves__{tag}.png",
            figures.curves(mine, cards, controls),
            "Mean curve per explainer with a 95 % band over the images (controls dashed grey), one panel "
            "per curve metric with its own axes; the areas under these curves are the scores above.",
        )
        explainers = sorted(set(part["explainer"].unique()), key=lambda e: (e in controls, e))
        maps = {
            e: read_attributions(view.run_dir, c)
            for e, c in part[["explainer", "cell_id"]].drop_duplicates().itertuples(index=False)
        }
        images = read_images(view.run_dir, str(dataset), str(model))
        ids = set(images["sample_id"]) if len(images) else set()
        report.figure(
            f"gallery__{tag}.jpg",
            figures_gallery.comparative(images, maps, _captions(view, part, ids), explainers, f"{dataset} / {model}"),
            "The same images for every explainer (and every model of this dataset): the image with its "
            "true class and the model's prediction, then each explainer's positive attribution (bright = "
            "more relevant), the object's mask in cyan, and the image's scores under that map below it.",
        )
        chosen = _gallery_metric(view, part)
        if chosen is not None:
            metric, higher = chosen
            scores = part[(part["metric"] == metric)][["explainer", "sample_id", "value"]]
            report.figure(
                f"picks__{tag}.jpg",
                figures_gallery.picks(images, maps, scores, metric, higher, f"{dataset} / {model}"),
                f"Per explainer, its best, median and worst gallery image by {metric}: what a high and a "
                "low score look like for that explainer.",
            )
        _per_class(report, view, str(dataset), str(model), tag)
    _cost(report, view)


def _per_class(report: Report, view: RunView, dataset: str, model: str, tag: str) -> None:
    sub = view.summary[(view.summary["dataset"] == dataset) & (view.summary["model"] == model)]
    outputs = view.data.cards.outputs()
    for metric in [
        m for m in dict.fromkeys(sub["metric"]) if view.data.cards.family_of(m) == "localisation" and outputs[m].ranked
    ][:2]:
        report.figure(
            f"classes__{_safe(metric)}__{tag}.png",
            figures.class_bars(sub, metric, f"{metric} per class"),
            f"Mean {metric} per true class and explainer: where an explainer localises well and where not.",
        )
    preds = view.predictions
    preds = preds[(preds["dataset"] == dataset) & (preds["model"] == model)] if not preds.empty else preds
    n = max((i for ds, i in view.names if ds == dataset), default=-1) + 1
    labels = [view.names.get((dataset, i), str(i)) for i in range(n)]
    if not preds.empty and labels:
        scored = int(preds["correct"].notna().sum())
        report.figure(
            f"confusion__{tag}.png",
            figures.confusion(preds, labels, f"{dataset} / {model}"),
            f"Confusion matrix of the {scored} scored images: true class (rows) against the model's "
            "prediction mapped into the dataset's classes (columns); the diagonal is correct.",
        )
        per_class = figures.per_class_quality(preds, labels)
        if not per_class.empty:
            rows = [
                [r["class"], fmt_value(r["precision"]), fmt_value(r["recall"]), fmt_value(r["f1"]), str(r["support"])]
                for _, r in per_class.iterrows()
            ]
            report.table(Table("", ["class", "precision", "recall", "F1", "images"], rows))


def _cost(report: Report, view: RunView) -> None:
    results, cards = view.data.rows, view.data.cards
    outputs = cards.outputs()
    seconds = next((m for m, o in outputs.items() if o.unit == "seconds"), None)
    faithful = [m for m, o in outputs.items() if o.ranked and cards.family_of(m) == "faithfulness"]
    if seconds is None or results.empty:
        return
    from bench.summary import scored_values

    scored = results.assign(scored=scored_values(results, view.policy))
    for dataset, part in scored.groupby("dataset", sort=True):
        means = part[part["metric"].isin([seconds, *faithful])].groupby(["model", "explainer", "metric"])["scored"]
        wide = means.mean().unstack("metric")
        report.figure(
            f"cost__{_safe(str(dataset))}.png",
            figures.cost_scatter(wide, seconds, faithful, f"{dataset}: cost and faithfulness"),
            "Explainer seconds per image (log scale) against each faithfulness metric, one point per "
            "(model, explainer): cheaper is left; better is up for higher-is-better metrics.",
        )


def build_report(run_dir: Path | str) -> Report:
    view = RunView.read(Path(run_dir))
    m = view.manifest
    report = Report(f"xbench report: {m.suite_name if m else Path(run_dir).name} (run {m.run_id if m else ''})")
    _facts(report, view)
    _verdicts(report, view)
    _reliability(report, view)
    _details(report, view)
    return report


def write_report(run_dir: Path | str, output: Path | str | None = None) -> Path:
    """Write report.html (self-contained) and its images into ``output`` (default RUN_DIR/report)."""
    run_dir = Path(run_dir)
    report = build_report(run_dir)
    if output is None:  # inside the run directory: through its store
        store = RunStore(run_dir)
        for name, data in report.images.items():
            store.write_view(f"report/{name}", data)
        return store.write_view("report/report.html", report.html())
    folder = Path(output)
    for name, data in report.images.items():
        atomic.write_bytes(folder / name, data)
    atomic.write_text(folder / "report.html", report.html())
    return folder / "report.html"
