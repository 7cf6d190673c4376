"""Leaderboards: the views users decide with, built from the result rows and their cards.

- explainers: per (dataset, model), every explainer across metrics: its mean and
  interval, its paired rank (``bench.verdicts``), its coverage where it differs, its
  verdict against the controls, and the mean rank ("which explainer is faithful to
  this model"); then the paired difference of each explainer to the best one, and,
  in words, every explainer that fails to beat a control;
- models: per (dataset, explainer), with several models, the models compared paired
  on the localisation metrics beside their accuracy ("which model's explanations land
  on the object");
- cost: time and passes per image beside the faithfulness metrics;
- reliability: how stable each ranking is and whether the metrics agree.

Views read the cards stored with the results, never metric ids or the registry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.cards import Cards, OutputCard
from bench.reliability import metric_reliability, rank_agreement, reliability_tables
from bench.seeding import stable_hash
from bench.store import RunStore, read_manifest, read_predictions, read_run
from bench.summary import scored_values, summarise
from bench.tables import Leaderboard, Table, fmt_count, fmt_interval, fmt_value
from bench.verdicts import Verdict, compare_entries, verdict_frame


@dataclass
class Verdicts:
    """The paired verdicts of one table: by metric column, with the values they came from."""

    title: str
    keys: dict[str, str]  # e.g. {"dataset": ..., "model": ...}
    by_metric: dict[str, Verdict] = field(default_factory=dict)
    values: dict[str, pd.DataFrame] = field(default_factory=dict)
    outputs: dict[str, OutputCard] = field(default_factory=dict)
    not_applicable: set[tuple[str, str]] = field(default_factory=set)  # (entry, metric) by design
    accuracy: Verdict | None = None  # models view: the models' correctness on the same images, compared paired

    @property
    def ranked(self) -> list[str]:
        """Ranked score metrics that apply to every entry (they make the mean rank)."""
        entries = {e for v in self.by_metric.values() for e in v.entries}
        return [
            m for m, o in self.outputs.items() if o.ranked and not any((e, m) in self.not_applicable for e in entries)
        ]

    def mean_rank(self, entry: str) -> float:
        ranks = []
        for metric in self.ranked:
            v = self.by_metric[metric]
            ranks.append(v.rank[v.index(entry)] if entry in v.entries else math.nan)
        return float(np.mean(ranks)) if ranks and all(r == r for r in ranks) else math.nan


def _score_columns(part: pd.DataFrame, cards: Cards) -> dict[str, OutputCard]:
    outputs = cards.outputs()
    present = sorted(set(part["metric"].unique()))
    return {m: outputs[m] for m in present if m in outputs and outputs[m].is_score}


def _not_applicable(part: pd.DataFrame, entry_column: str) -> set[tuple[str, str]]:
    """(entry, metric) whose rows are all NaN or skipped by design (no errors): e.g. consistency of a
    deterministic method."""
    by_design = part["status"].isin(["nan", "skipped"]).groupby([part[entry_column], part["metric"]]).all()
    return {(str(e), str(m)) for (e, m), flag in by_design.items() if flag}


def table_verdicts(
    part: pd.DataFrame,
    cards: Cards,
    entry_column: str,
    title: str,
    keys: dict[str, str],
    controls: list[str],
    metrics: list[str] | None = None,
) -> Verdicts:
    """Paired verdicts of the entries (``entry_column``: explainer or model) of one table, per metric."""
    out = Verdicts(title, keys, not_applicable=_not_applicable(part, entry_column))
    columns = _score_columns(part, cards)
    entries = sorted(set(part[entry_column].unique()))
    for metric, card in columns.items():
        if metrics is not None and metric not in metrics:
            continue
        rows = part[part["metric"] == metric]
        values = rows.pivot_table(
            index="sample_id", columns=entry_column, values="scored", aggfunc="first", dropna=False
        )
        values = values.reindex(columns=entries)
        seed = stable_hash("verdict", *keys.values(), metric)
        out.by_metric[metric] = compare_entries(values, card.higher_is_better, controls, metric, seed)
        out.values[metric] = values
        out.outputs[metric] = card
    return out


def _cell(v: Verdict, entry: str, ranked: bool, na: bool) -> str:
    if entry not in v.entries or v.n[v.index(entry)] == 0:
        return "n/a" if na else ""
    i = v.index(entry)
    text = fmt_interval(v.mean[i], v.ci_low[i], v.ci_high[i])
    if ranked:
        text += f" ({int(v.rank[i])})"
    if v.n[i] != v.n_total:
        text += f" ({int(v.n[i])}/{v.n_total})"
    return text


def _vs_controls(t: Verdicts, entry: str) -> str:
    if not any(v.controls for v in t.by_metric.values()) or any(entry in v.controls for v in t.by_metric.values()):
        return ""
    failed = [m for m in t.ranked if t.by_metric[m].control_verdict(entry)[0] not in ("beats controls", "")]
    return f"✗ {', '.join(failed)}" if failed else f"✓ all {len(t.ranked)}"


def _order(t: Verdicts, entries: list[str], controls: set[str]) -> list[str]:
    return sorted(
        entries, key=lambda e: (e in controls, math.inf if t.mean_rank(e) != t.mean_rank(e) else t.mean_rank(e), e)
    )


def explainer_table(t: Verdicts, cards: Cards, compact: bool = False) -> Table:
    entries = sorted({e for v in t.by_metric.values() for e in v.entries})
    controls = {e for e in entries if cards.is_control(e)}
    metrics = t.ranked if compact else list(t.outputs)
    headers = [
        "explainer",
        "mean rank",
        "vs controls",
        *[f"{m} {'↑' if t.outputs[m].higher_is_better else '↓'}" for m in metrics],
    ]
    rows = []
    for entry in _order(t, entries, controls):
        cells = []
        for m in metrics:
            v, na = t.by_metric[m], (entry, m) in t.not_applicable
            if compact:
                i = v.index(entry) if entry in v.entries else -1
                cell = "" if i < 0 or v.n[i] == 0 else f"{fmt_value(v.mean[i], 3)} ({int(v.rank[i])})"
                cells.append(cell + (f" ({int(v.n[i])}/{v.n_total})" if i >= 0 and 0 < v.n[i] != v.n_total else ""))
            else:
                cells.append(_cell(v, entry, m in t.ranked, na))
        name = f"{entry} (control)" if entry in controls else entry
        rows.append([name, fmt_value(t.mean_rank(entry), 2), _vs_controls(t, entry), *cells])
    note = (
        "mean [95% bootstrap CI] (paired rank); ranks count the entries significantly better in a paired t-test on "
        "the images every explainer scored, Holm-corrected over the pairs of each metric; (n/N) marks an explainer "
        "that scored fewer images than the table; vs controls: ✓ significantly better than every control on every "
        "ranked metric, ✗ the metrics where it is not. The mean rank counts each ranked metric once (not cost or "
        "descriptive outputs, nor metrics that do not apply to every explainer)."
    )
    return Table(t.title, headers, rows, "" if compact else note)


def difference_table(t: Verdicts) -> Table:
    entries = sorted({e for v in t.by_metric.values() for e in v.entries})
    rows = []
    for entry in entries:
        cells = []
        for m in t.ranked:
            v = t.by_metric[m]
            best = v.best
            if entry not in v.entries or v.n[v.index(entry)] == 0 or best < 0:
                cells.append("")
            elif v.index(entry) == best:
                cells.append("best")
            else:
                i = v.index(entry)
                cells.append(
                    f"{fmt_interval(v.diff[i, best], v.diff_low[i, best], v.diff_high[i, best])} "
                    f"p={fmt_value(v.p_holm[i, best], 3)}"
                )
        rows.append([entry, *cells])
    note = (
        "mean paired difference to the best explainer of each metric (this one minus the best) on the images "
        "both scored, its 95 % t interval and the Holm-adjusted p-value"
    )
    return Table(f"{t.title}: paired differences to the best", ["explainer", *t.ranked], rows, note)


def control_sentences(t: Verdicts) -> list[str]:
    """Every explainer that fails to beat a control on a ranked metric, in words, with the numbers."""
    out = []
    for m in t.ranked:
        v = t.by_metric[m]
        for entry in v.entries:
            _, missed = v.control_verdict(entry)
            for control in missed:
                i, c = v.index(entry), v.index(control)
                worse = v.better[c, i]
                out.append(
                    f"{t.title}: {entry} is {'significantly worse than' if worse else 'not better than'} the control "
                    f"{control} on {m}: difference {fmt_interval(v.diff[i, c], v.diff_low[i, c], v.diff_high[i, c])}"
                    f" (paired, {len(v.common)} images, Holm p={fmt_value(v.p_holm[i, c], 3)})."
                )
    return out


def accuracy_verdict(part: pd.DataFrame, keys: dict[str, str]) -> Verdict | None:
    """The models' accuracy on the images they explained, compared paired like a metric: per image, 1 when the
    top-1 is the target class (or in its class set), 0 when not; images without a known answer are left out."""
    rows = part.drop_duplicates(["model", "sample_id"])[["model", "sample_id", "correct"]]
    if rows["correct"].isna().all():
        return None
    values = rows.assign(hit=rows["correct"].astype("float")).pivot_table(
        index="sample_id", columns="model", values="hit", aggfunc="first", dropna=False
    )
    return compare_entries(values, True, metric="accuracy", seed=stable_hash("accuracy", *keys.values()))


def model_table(t: Verdicts, accuracy: pd.DataFrame, compact: bool = False) -> Table:
    """Models compared paired on the localisation metrics, with their accuracy on the explained images
    (paired too: the same images)."""
    entries = sorted({e for v in t.by_metric.values() for e in v.entries})
    acc = accuracy.set_index(["dataset", "model"]) if not accuracy.empty else pd.DataFrame()
    dataset = t.keys["dataset"]
    headers = [
        "model",
        "accuracy ↑",
        "mean rank",
        *[f"{m} {'↑' if t.outputs[m].higher_is_better else '↓'}" for m in t.outputs],
    ]
    rows = []
    for entry in _order(t, entries, set()):
        if t.accuracy is not None and entry in t.accuracy.entries:
            accuracy_cell = (
                _cell(t.accuracy, entry, True, False)
                if not compact
                else fmt_value(t.accuracy.mean[t.accuracy.index(entry)], 3)
            )
        else:
            a = acc.loc[(dataset, entry)] if (dataset, entry) in acc.index else {}
            accuracy_cell = fmt_value(a.get("accuracy", math.nan))
        cells = []
        for m in t.outputs:
            v = t.by_metric[m]
            i = v.index(entry) if entry in v.entries else -1
            if compact:
                cells.append("" if i < 0 or v.n[i] == 0 else f"{fmt_value(v.mean[i], 3)} ({int(v.rank[i])})")
            else:
                cells.append(_cell(v, entry, t.outputs[m].ranked, False))
        rows.append([entry, accuracy_cell, fmt_value(t.mean_rank(entry), 2), *cells])
    note = (
        "mean [95% bootstrap CI] (paired rank across models, on the images every model scored; Holm-corrected); "
        "accuracy: the share of those images whose top-1 is the target class (in its class set for mapped "
        "targets), compared paired in the same way; the mean rank counts the localisation metrics only"
    )
    return Table(t.title, headers, rows, "" if compact else note)


def cost_table(dataset: str, part: pd.DataFrame, cards: Cards) -> Table | None:
    """Time and passes per image (plain numbers) beside the faithfulness metrics' means."""
    outputs = cards.outputs()
    present = set(part["metric"].unique())
    costs = [m for m in sorted(present) if m in outputs and not outputs[m].is_score and outputs[m].unit != "megabytes"]
    faithful = [
        m
        for m in sorted(present)
        if m in outputs and outputs[m].ranked and outputs[m].is_score and cards.family_of(m) == "faithfulness"
    ]
    if not costs:
        return None
    means = part[part["metric"].isin(costs + faithful)].groupby(["model", "explainer", "metric"])["scored"].mean()
    wide = means.unstack("metric")
    seconds = next((m for m in costs if outputs[m].unit == "seconds"), costs[0])
    rows = []
    for model, explainer in sorted(wide.index, key=lambda k: (k[0], wide.loc[k].get(seconds, math.inf))):
        row = wide.loc[(model, explainer)]
        rows.append(
            [
                model,
                explainer,
                *[
                    fmt_count(row.get(m, math.nan)) if outputs[m].unit == "images" else fmt_value(row.get(m, math.nan))
                    for m in costs
                ],
                *[fmt_value(row.get(m, math.nan)) for m in faithful],
            ]
        )
    units = {"seconds": "s/image", "images": "images/image"}
    headers = [
        "model",
        "explainer",
        *[f"{m} ({units.get(outputs[m].unit, outputs[m].unit)})" for m in costs],
        *faithful,
    ]
    return Table(f"{dataset}: cost and faithfulness", headers, rows, "means over the images; costs measured per image")


# ---------------------------------------------------------------------------------------------- the board


@dataclass
class Board:
    """Everything the leaderboard shows, computed once: verdict tables and the rendered board."""

    explainers: list[Verdicts]
    models: list[Verdicts]
    board: Leaderboard
    frame: pd.DataFrame  # entry-level verdict rows (leaderboard.parquet)
    reliability: pd.DataFrame


def model_quality(run_dir: Path) -> pd.DataFrame:
    """Accuracy (and macro-F1 where known) of every (dataset, model) on the explained images."""
    path = Path(run_dir) / "models.parquet"
    if path.exists():
        return pd.read_parquet(path)
    preds = read_predictions(run_dir) if Path(run_dir).is_dir() else pd.DataFrame()
    if preds.empty:
        return pd.DataFrame(columns=["dataset", "model", "accuracy", "n"])
    return preds.groupby(["dataset", "model"]).agg(accuracy=("correct", "mean"), n=("correct", "size")).reset_index()


def class_names(run_dir: Path) -> dict[tuple[str, int], str]:
    preds = read_predictions(run_dir) if Path(run_dir).is_dir() else pd.DataFrame()
    if preds.empty or "label_name" not in preds:
        return {}
    pairs = preds[["dataset", "label", "label_name"]].drop_duplicates()
    return {(r.dataset, int(r.label)): r.label_name for r in pairs.itertuples()}


def build(
    results: pd.DataFrame,
    cards: Cards,
    accuracy: pd.DataFrame,
    policy: str = "declared",
    model_metrics: list[str] | None = None,
) -> Board:
    """All views of a results table (see the module docstring)."""
    results = results.assign(scored=scored_values(results, policy))
    board, frames, reliability = Leaderboard(), [], []
    explainer_tables, model_tables = [], []
    for (dataset, model), part in results.groupby(["dataset", "model"], sort=True):
        controls = sorted(e for e in set(part["explainer"].unique()) if cards.is_control(e))
        t = table_verdicts(
            part, cards, "explainer", f"{dataset} / {model}", {"dataset": dataset, "model": model}, controls
        )
        explainer_tables.append(t)
        board.add("Explainers", explainer_table(t, cards))
        if t.ranked:
            board.add("Explainers", difference_table(t))
        for sentence in control_sentences(t):
            board.add("Against the controls", sentence)
        frames.append(_frame(t, "explainers"))
        rows = [metric_reliability(t.values[m], t.by_metric[m], stable_hash(dataset, model)) for m in t.ranked]
        reliability += [{"dataset": dataset, "model": model, **r.__dict__} for r in rows]
        for table in reliability_tables(
            f"{dataset} / {model}", rows, rank_agreement({m: t.by_metric[m] for m in t.ranked})
        ):
            board.add("Reliability", table)
    localisation = [
        o.column
        for o in cards.outputs().values()
        if o.ranked and o.is_score and cards.family_of(o.column) == "localisation"
    ]
    wanted = model_metrics or localisation
    for (dataset, explainer), part in results.groupby(["dataset", "explainer"], sort=True):
        if part["model"].nunique() < 2 or not set(part["metric"].unique()) & set(wanted):
            continue
        if cards.is_control(explainer):  # a reference line ignores the model: ranking models by it means nothing
            continue
        t = table_verdicts(
            part,
            cards,
            "model",
            f"{dataset} / {explainer}: models by localisation",
            {"dataset": dataset, "explainer": explainer},
            [],
            wanted,
        )
        t.accuracy = accuracy_verdict(part, t.keys)
        model_tables.append(t)
        board.add("Models by localisation", model_table(t, accuracy))
        frames.append(_frame(t, "models"))
    for dataset, part in results.groupby("dataset", sort=True):
        cost = cost_table(str(dataset), part, cards)
        if cost is not None:
            board.add("Cost and faithfulness", cost)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return Board(explainer_tables, model_tables, board, frame, pd.DataFrame(reliability))


def _frame(t: Verdicts, view: str) -> pd.DataFrame:
    parts = [
        verdict_frame(v).assign(
            view=view, **t.keys, mean_rank=[t.mean_rank(e) for e in v.entries], ranked=m in t.ranked
        )
        for m, v in t.by_metric.items()
    ]
    if t.accuracy is not None:
        v = t.accuracy
        parts.append(
            verdict_frame(v).assign(view=view, **t.keys, mean_rank=[t.mean_rank(e) for e in v.entries], ranked=False)
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def terminal(board: Board, cards: Cards, accuracy: pd.DataFrame) -> str:
    """What `xbench run` prints: per (dataset, model) the explainers by mean rank with the verdict against the
    controls, the explainers that fail a control in words, then the model selection when there are several."""
    out = []
    for t in board.explainers:
        out.append(explainer_table(t, cards, compact=True))
    sentences = [s for t in board.explainers for s in control_sentences(t)]
    models = [model_table(t, accuracy, compact=True) for t in board.models]
    text = Leaderboard({"Explainers (mean, paired rank)": list(out)}).render("md")
    if sentences:
        text += "\n" + "\n".join(f"- {s}" for s in sentences) + "\n"
    if models:
        text += "\n" + Leaderboard({"Models by localisation": list(models)}).render("md")
    return text


def build_leaderboard(
    run_dir: Path | str, write: bool = True, model_metrics: list[str] | None = None, policy: str | None = None
) -> tuple[pd.DataFrame, str]:
    """Summarise a run directory; write leaderboard.{md,html,tex,parquet}, reliability.parquet and
    summary.parquet into it. Returns the summary and the terminal text."""
    run_dir = Path(run_dir)
    data = read_run(run_dir)
    manifest = read_manifest(run_dir)
    policy = policy or (manifest.suite.get("nan_policy", "declared") if manifest else "declared")
    accuracy = model_quality(run_dir)
    summary = summarise(data.rows, class_names(run_dir), policy)
    board = build(data.rows, data.cards, accuracy, policy, model_metrics)
    text = "# Leaderboard\n\n" + board.board.render("md") if board.board.sections else "# Leaderboard\n\nNo results.\n"
    if write:
        store = RunStore(run_dir)
        store.write_view("leaderboard.md", text)
        store.write_view("leaderboard.html", "<h1>Leaderboard</h1>\n" + board.board.render("html"))
        store.write_view("leaderboard.tex", board.board.render("tex"))
        store.write_view("leaderboard.parquet", board.frame)
        store.write_view("reliability.parquet", board.reliability)
        store.write_view("summary.parquet", summary)
    return summary, terminal(board, data.cards, accuracy) if board.board.sections else "No results.\n"
