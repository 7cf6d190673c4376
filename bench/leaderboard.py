"""Leaderboards: the three views users decide with, rendered as Markdown, HTML and LaTeX.

- explainers: per (dataset, model), every explainer across metrics, with a
  significance-aware rank per metric and the mean rank ("which explainer is
  faithful to this model");
- models: per (dataset, explainer), models ranked by a localisation metric
  with their accuracy beside it ("which model's explanations land on the object");
- cost: time and passes per image next to deletion and insertion AUC.

Ranks count how many entries are significantly better (non-overlapping 95 %
bootstrap intervals), so ties within confidence intervals are ties. An entry
missing a metric gets a blank mean rank: it is never averaged over fewer metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from bench import atomic
from bench.stats import significance_ranks
from bench.store import read_predictions, read_results
from bench.summary import overall, summarise

FORMATS = {"md": "github", "html": "html", "tex": "latex_booktabs"}
COST_METRICS = ("runtime", "runtime.forward_images", "runtime.backward_images")
HIDDEN = ("runtime.peak_memory_mb",)  # shown only where measured (CUDA)


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list]
    note: str = ""


@dataclass
class Leaderboard:
    """Titled tables, grouped into sections."""

    sections: dict[str, list[Table]] = field(default_factory=dict)

    def add(self, section: str, table: Table) -> None:
        self.sections.setdefault(section, []).append(table)

    def render(self, fmt: str = "md") -> str:
        """The whole leaderboard as Markdown ("md"), an HTML fragment ("html") or LaTeX ("tex")."""
        tablefmt = FORMATS[fmt]
        out = []
        for section, tables in self.sections.items():
            out.append(_heading(section, 2, fmt))
            for table in tables:
                out.append(_heading(table.title, 3, fmt))
                if table.note:
                    out.append(_paragraph(table.note, fmt))
                out.append(tabulate(table.rows, headers=table.headers, tablefmt=tablefmt, disable_numparse=True))
        return "\n\n".join(out) + "\n"


def _heading(text: str, level: int, fmt: str) -> str:
    if fmt == "html":
        return f"<h{level}>{_escape(text)}</h{level}>"
    if fmt == "tex":
        return ("\\section*{" if level == 2 else "\\subsection*{") + text.replace("_", "\\_") + "}"
    return "#" * level + " " + text


def _paragraph(text: str, fmt: str) -> str:
    if fmt == "html":
        return f"<p>{_escape(text)}</p>"
    if fmt == "tex":
        return text.replace("_", "\\_").replace("%", "\\%")
    return text


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fmt_value(x: float, digits: int = 4) -> str:
    if x is None or x != x:
        return ""
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}f}"


def fmt_interval(row: pd.Series) -> str:
    if row["n"] == 0:
        return ""
    return f"{fmt_value(row['mean'])} [{fmt_value(row['ci_low'])}, {fmt_value(row['ci_high'])}]"


def add_ranks(summary: pd.DataFrame, within: list[str]) -> pd.DataFrame:
    """A ``rank`` column: significance ranks of the entries of each ``within`` group and metric."""
    summary = summary.copy()
    summary["rank"] = math.nan
    for _, idx in summary.groupby([*within, "metric"]).groups.items():
        part = summary.loc[idx]
        summary.loc[idx, "rank"] = significance_ranks(
            part["mean"].tolist(),
            part["ci_low"].tolist(),
            part["ci_high"].tolist(),
            bool(part["higher_is_better"].iloc[0]),
        )
    return summary


def _metric_label(metric: str, higher: bool) -> str:
    return f"{metric} {'↑' if higher else '↓'}"


def _ranked(metric: str, metric_name: str | None) -> bool:
    """Whether a metric counts in the mean rank (descriptive and cost metrics do not)."""
    if metric in COST_METRICS or metric.startswith("runtime."):
        return False
    if not metric_name or metric_name.startswith("quantus:"):
        return True
    from bench.registry import METRICS, load_builtin_components

    load_builtin_components()
    return getattr(METRICS.get(metric_name), "ranked", True) if metric_name in METRICS else True


def _applicable_to_all(part: pd.DataFrame, metric: str) -> bool:
    """True unless some explainer's rows for ``metric`` are all NaN or skipped by design (no errors)."""
    rows = part[part["metric"] == metric]
    by_design = (rows["n"] == 0) & (rows["n_error"] == 0) & (rows["n_nan"] + rows["n_skipped"] > 0)
    return not by_design.any()


def explainer_view(summary: pd.DataFrame) -> list[Table]:
    """Per (dataset, model): explainers x metrics, value [CI] (rank), and the mean rank."""
    board = add_ranks(summary[~summary["metric"].isin(HIDDEN)], ["dataset", "model"])
    tables = []
    for (dataset, model), part in board.groupby(["dataset", "model"], sort=True):
        metrics = sorted(m for m in part["metric"].unique() if part.loc[part["metric"] == m, "n"].sum() > 0)
        directions = part.drop_duplicates("metric").set_index("metric")["higher_is_better"]
        names = part.drop_duplicates("metric").set_index("metric").get("metric_name", pd.Series(dtype=object))
        ranked = [m for m in metrics if _ranked(m, names.get(m)) and _applicable_to_all(part, m)]
        rows = []
        for explainer, by_metric in part.groupby("explainer", sort=True):
            cells, ranks = [], []
            indexed = by_metric.set_index("metric")
            for metric in metrics:
                row = indexed.loc[metric] if metric in indexed.index else None
                if row is not None and row["n"] > 0:
                    cells.append(f"{fmt_interval(row)} ({int(row['rank'])})")
                else:
                    not_applicable = row is not None and row["n_error"] == 0 and row["n_nan"] + row["n_skipped"] > 0
                    cells.append("n/a" if not_applicable else "")
                if metric in ranked:
                    ranks.append(row["rank"] if row is not None and row["n"] > 0 else math.nan)
            mean_rank = sum(ranks) / len(ranks) if ranks and all(r == r for r in ranks) else math.nan
            rows.append([explainer, fmt_value(mean_rank, 2), *cells])
        rows.sort(key=lambda r: (math.inf if r[1] == "" else float(r[1]), r[0]))
        headers = ["explainer", "mean rank", *[_metric_label(m, bool(directions[m])) for m in metrics]]
        note = (
            "mean [95% bootstrap CI] (rank); ranks count significantly better entries, so overlapping "
            "intervals tie; the mean rank leaves out cost and descriptive metrics (runtime, agreement) and "
            "metrics that do not apply to every explainer (n/a, e.g. consistency of deterministic methods), "
            "and is blank when a metric is missing."
        )
        tables.append(Table(f"{dataset} / {model}", headers, rows, note))
    return tables


def model_view(summary: pd.DataFrame, accuracy: pd.DataFrame, metric: str = "iou") -> list[Table]:
    """Per (dataset, explainer): models ranked by ``metric``, with their accuracy."""
    part = summary[summary["metric"] == metric]
    if part.empty:
        return []
    board = add_ranks(part, ["dataset", "explainer"])
    acc = accuracy.set_index(["dataset", "model"]) if not accuracy.empty else pd.DataFrame()
    tables = []
    for (dataset, explainer), group in board.groupby(["dataset", "explainer"], sort=True):
        rows = []
        for row in group.sort_values(
            ["rank", "mean"], ascending=[True, not bool(group["higher_is_better"].iloc[0])]
        ).itertuples():
            a = acc.loc[(dataset, row.model)] if (dataset, row.model) in acc.index else {}
            rank = "" if row.rank != row.rank else int(row.rank)
            quality = [fmt_value(a.get("accuracy", math.nan)), fmt_value(a.get("macro_f1", math.nan))]
            rows.append([rank, row.model, fmt_interval(pd.Series(row._asdict())), *quality, row.n])
        headers = [
            "rank",
            "model",
            _metric_label(metric, bool(group["higher_is_better"].iloc[0])),
            "accuracy",
            "macro-F1",
            "n",
        ]
        tables.append(Table(f"{dataset} / {explainer}: models by {metric}", headers, rows))
    return tables


def cost_view(summary: pd.DataFrame) -> list[Table]:
    """Per dataset: time and passes per image beside deletion and insertion AUC."""
    wanted = [*COST_METRICS, "deletion", "insertion"]
    part = summary[summary["metric"].isin(wanted)]
    if part.empty or "runtime" not in set(part["metric"]):
        return []
    tables = []
    for dataset, group in part.groupby("dataset", sort=True):
        wide = group.pivot_table(index=["model", "explainer"], columns="metric", values="mean", aggfunc="first")
        present = [m for m in wanted if m in wide.columns]
        rows = [[model, explainer, *[fmt_value(wide.loc[(model, explainer), m]) for m in present]]
                for model, explainer in sorted(wide.index, key=lambda k: (k[0], wide.loc[k, "runtime"]))]  # fmt: skip
        headers = [
            "model",
            "explainer",
            *["s/image ↓" if m == "runtime" else m.replace("runtime.", "") for m in present],
        ]
        tables.append(Table(f"{dataset}: cost and faithfulness", headers, rows, "means over samples"))
    return tables


def model_quality(run_dir: Path) -> pd.DataFrame:
    """Accuracy (and macro-F1 where known) of every (dataset, model) on the explained images."""
    path = Path(run_dir) / "models.parquet"
    if path.exists():
        return pd.read_parquet(path)
    preds = read_predictions(run_dir)
    if preds.empty:
        return pd.DataFrame(columns=["dataset", "model", "accuracy", "n"])
    return preds.groupby(["dataset", "model"]).agg(accuracy=("correct", "mean"), n=("correct", "size")).reset_index()


def class_names(run_dir: Path) -> dict[tuple[str, int], str]:
    preds = read_predictions(run_dir)
    if preds.empty or "label_name" not in preds:
        return {}
    pairs = preds[["dataset", "label", "label_name"]].drop_duplicates()
    return {(r.dataset, int(r.label)): r.label_name for r in pairs.itertuples()}


def build(summary: pd.DataFrame, accuracy: pd.DataFrame, localisation_metric: str = "iou") -> Leaderboard:
    board = Leaderboard()
    top = overall(summary)
    for table in explainer_view(top):
        board.add("Explainers", table)
    for table in model_view(top, accuracy, localisation_metric):
        board.add("Models by localisation", table)
    for table in cost_view(top):
        board.add("Cost and faithfulness", table)
    return board


def build_leaderboard(
    run_dir: Path | str, write: bool = True, localisation_metric: str = "iou"
) -> tuple[pd.DataFrame, str]:
    """Summarise a run directory; write leaderboard.{md,html,tex,parquet} and summary.parquet into it."""
    run_dir = Path(run_dir)
    summary = summarise(read_results(run_dir), class_names(run_dir))
    board = build(summary, model_quality(run_dir), localisation_metric)
    text = "# Leaderboard\n\n" + board.render("md") if board.sections else "# Leaderboard\n\nNo results yet.\n"
    if write:
        atomic.write_text(run_dir / "leaderboard.md", text)
        atomic.write_text(run_dir / "leaderboard.html", "<h1>Leaderboard</h1>\n" + board.render("html"))
        atomic.write_text(run_dir / "leaderboard.tex", board.render("tex"))
        top = add_ranks(overall(summary), ["dataset", "model"])
        atomic.write_with(run_dir / "leaderboard.parquet", lambda p: top.to_parquet(p, index=False))
        atomic.write_with(run_dir / "summary.parquet", lambda p: summary.to_parquet(p, index=False))
    return summary, text
