"""Reading results: a consistent snapshot of a run directory, of every run below a folder, or of
one exported results file; with the cards that say what each metric and explainer is.

A run directory is read through its manifest: exactly the cell files the manifest
lists as finished, at the moment it is read. Every file is replaced atomically and
the manifest is written after the cells it lists, so a reader never sees a torn
file or a half-written set, even while a run is writing the directory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench import atomic
from bench.cards import Cards, MetricCard, OutputCard
from bench.errors import DataError
from bench.store.manifest import Manifest
from bench.store.schema import RESULT_SCHEMA, SCHEMA_VERSION


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def _snapshot(run_dir: Path) -> list[Path]:
    """The finished cell files of a run directory as its manifest lists them (all cell files when
    there is no readable manifest)."""
    cells = run_dir / "cells"
    path = run_dir / "manifest.json"
    try:
        manifest = Manifest.parse(json.loads(path.read_text())) if path.is_file() else None
    except (OSError, ValueError):
        manifest = None
    if manifest is None:
        return _parquet_files(cells)
    listed = [cells / f"{cell_id}.parquet" for cell_id, state in manifest.cells.items() if state.status != "pending"]
    return sorted(p for p in listed if p.is_file())


def run_dirs(path: Path | str) -> list[Path]:
    """The run directories at or below ``path`` (a folder with a ``cells/`` folder is one)."""
    path = Path(path)
    if (path / "cells").is_dir():
        return [path]
    return sorted(p.parent for p in path.glob("**/cells") if p.is_dir())


def resolve_run(path: Path | str, log: Callable[[str], None] | None = None) -> Path:
    """The one run directory that ``path`` means: itself, or the only run below it (a suite folder of the
    Hive layout with one run). Several runs below it are an error that lists them, never a silent mix."""
    path = Path(path)
    if (path / "cells").is_dir() or (path / "results.parquet").is_file() or path.is_file():
        return path
    runs = run_dirs(path)
    if len(runs) == 1:
        if log is not None:
            log(f"reading the one run below {path}: {runs[0]}")
        return runs[0]
    if not runs:
        raise DataError(
            f"{path} holds no xbench run (no cells/ folder below it)",
            fix="give a run directory, by default runs/suite=<suite>/run=<id>",
        )
    listed = ", ".join(str(r.relative_to(path)) for r in runs[:8]) + (" ..." if len(runs) > 8 else "")
    raise DataError(
        f"{path} holds {len(runs)} runs ({listed})",
        fix=f"give one of them, e.g. {runs[-1]}; to follow a metric across them use `xbench history {path}`",
    )


def result_files(path: Path | str) -> list[Path]:
    """The result files of ``path``: a run directory (its manifest's snapshot), a folder of runs
    (each one's snapshot), or one Parquet file of results (e.g. a baseline kept in reports/)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if (path / "results.parquet").is_file():  # an exported reference folder (xbench export)
        return [path / "results.parquet"]
    files = [f for run in run_dirs(path) for f in _snapshot(run)]
    if not files and not (path / "cells").is_dir():
        raise DataError(
            f"{path} holds no xbench results (no cells/ folder below it)",
            fix="give a run directory (by default runs/suite=<suite>/run=<id>), a folder of runs, or a results "
            "Parquet file",
        )
    return files


def _metadata(path: Path) -> dict[str, Any]:
    try:
        meta = pq.read_schema(path).metadata or {}
        return dict(json.loads(meta.get(b"xbench", b"{}")))
    except (OSError, ValueError, pa.ArrowInvalid) as exc:
        raise DataError(f"cannot read results file {path}: {exc}", fix="rerun the run (it recomputes it)") from exc


def schema_version(path: Path) -> int:
    return int(_metadata(path).get("schema_version", 1))


def _upgrade(table: pa.Table, version: int, path: Path) -> pa.Table:
    """Bring a table of an older schema version to the current one (missing columns as nulls)."""
    if version > SCHEMA_VERSION:
        raise DataError(
            f"{path} has results schema version {version}, newer than this xbench understands ({SCHEMA_VERSION})",
            fix="upgrade xbench to read it",
        )
    for column in RESULT_SCHEMA:
        if column.name not in table.column_names:
            table = table.append_column(column, pa.nulls(table.num_rows, type=column.type))
    return table.select(
        [f.name for f in RESULT_SCHEMA] + [c for c in table.column_names if c not in RESULT_SCHEMA.names]
    )


def cards_from_rows(frame: pd.DataFrame) -> Cards:
    """Cards for results written before cards existed (schema 1-2): directions from the rows, the
    rules those versions applied (runtime and agreement descriptive), no degenerate values."""
    cards = Cards()
    if frame.empty:
        return cards
    for (metric, name), part in frame.groupby(["metric", "metric_name"], sort=True, dropna=False):
        base = str(metric).split(".", 1)[0]
        cost = base == "runtime" or str(name) == "runtime"
        unit = "score"
        if cost:
            unit = {"": "seconds", "peak_memory_mb": "megabytes"}.get(str(metric)[len(base) + 1 :], "images")
        card = cards.metrics.get(base) or MetricCard(
            key=base, name=str(name), version=1, params="{}", family="cost" if cost else "other"
        )
        ranked = not cost and str(name) != "agreement"
        out = OutputCard(str(metric), bool(part["higher_is_better"].iloc[0]), ranked, None, unit)
        cards.metrics[base] = replace(card, outputs=(*card.outputs, out))
    return cards


@dataclass
class Results:
    """Long-form result rows and the cards that describe them."""

    rows: pd.DataFrame
    cards: Cards
    files: list[Path]


def read_run(path: Path | str) -> Results:
    """Rows and cards of a run directory, of every run below a folder, or of a results file."""
    tables, cards = [], Cards()
    files = result_files(path)
    for file in files:
        meta = _metadata(file)
        try:
            table = _upgrade(pq.read_table(file), int(meta.get("schema_version", 1)), file)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"cannot read results file {file}: {exc}", fix="rerun the run (it recomputes it)") from exc
        tables.append(table)
        if "cards" in meta:
            cards = cards.merge(Cards.from_json(meta["cards"]))
        else:
            cards = cards_from_rows(table.to_pandas()).merge(cards)
    if not tables:
        return Results(RESULT_SCHEMA.empty_table().to_pandas(), cards, files)
    return Results(pa.concat_tables(tables, promote_options="default").to_pandas(), cards, files)


def read_results(path: Path | str) -> pd.DataFrame:
    """Long-form results of a run directory, of every run below a folder, or of a results file."""
    return read_run(path).rows


def write_results(results: Results, dest: Path) -> None:
    """Store long-form results and their cards as one Parquet file (e.g. a baseline in reports/)."""
    table = pa.Table.from_pandas(results.rows, preserve_index=False)
    meta = {"schema_version": SCHEMA_VERSION, "cards": results.cards.to_json()}
    table = table.replace_schema_metadata({"xbench": json.dumps(meta)})
    atomic.write_with(Path(dest), lambda p: pq.write_table(table, p))


def read_predictions(run_dir: Path | str) -> pd.DataFrame:
    """Per-sample predictions of every (dataset, model) of a run."""
    files = _parquet_files(Path(run_dir) / "predictions")
    if not files:
        return pd.DataFrame()
    return pd.concat([pq.read_table(p).to_pandas() for p in files], ignore_index=True)


def read_manifest(run_dir: Path | str) -> Manifest | None:
    """The manifest of a run directory, or None when it has none (or it is unreadable)."""
    path = Path(run_dir) / "manifest.json"
    try:
        return Manifest.parse(json.loads(path.read_text())) if path.is_file() else None
    except (OSError, ValueError):
        return None
