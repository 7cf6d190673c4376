"""The run directory: one Parquet file per cell, per-model predictions, a manifest.

Layout of a run directory::

    manifest.json                       resolved suite, environment, invocations, cell states
    cells/<cell_id>.parquet             long-form results: one row per (sample, metric output)
    curves/<cell_id>.parquet            per-sample curves (deletion/insertion) for plots
    predictions/<dataset>__<model>.parquet   label, prediction, target, correctness per sample
    models.parquet                      per (dataset, model): accuracy, macro-F1, target rule, counts
    parts/<cell_id>/                    finished batches of a cell still running (removed when it finishes)
    gallery/                            a few images per (dataset, model) and every explainer's maps of them
    leaderboard.md, leaderboard.parquet

Every file is written atomically (temporary file + rename), the curves before
the cell, so an interrupted run leaves only complete files and a rerun resumes.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench import atomic
from bench.errors import DataError, OutputError

SCHEMA_VERSION = 2  # 2: adds `suite`

RESULT_SCHEMA = pa.schema(
    [
        ("suite", pa.string()),
        ("run_id", pa.string()),
        ("cell_id", pa.string()),
        ("dataset", pa.string()),
        ("model", pa.string()),
        ("explainer", pa.string()),
        ("explainer_name", pa.string()),
        ("explainer_version", pa.int32()),
        ("explainer_params", pa.string()),
        ("metric", pa.string()),
        ("metric_name", pa.string()),
        ("metric_version", pa.int32()),
        ("metric_params", pa.string()),
        ("higher_is_better", pa.bool_()),
        ("sample_id", pa.string()),
        ("label", pa.int64()),
        ("target", pa.int64()),
        ("prediction", pa.int64()),
        ("correct", pa.bool_()),
        ("value", pa.float64()),
        ("status", pa.string()),  # ok | nan | error | skipped
        ("message", pa.string()),
        ("seed", pa.int64()),
    ]
)

CURVE_SCHEMA = pa.schema(
    [
        ("cell_id", pa.string()),
        ("metric", pa.string()),
        ("sample_id", pa.string()),
        ("curve", pa.list_(pa.float32())),
    ]
)


@dataclass
class CellRows:
    """Accumulates the rows of one cell column by column."""

    constants: dict[str, Any]  # run/cell/dataset/model/explainer columns shared by every row
    columns: dict[str, list] = field(default_factory=lambda: {f.name: [] for f in RESULT_SCHEMA})
    curves: dict[str, list] = field(default_factory=lambda: {f.name: [] for f in CURVE_SCHEMA})
    gallery: list[tuple[str, Any]] = field(default_factory=list)  # (sample id, (H, W) attribution) for reports

    def add(
        self, metric: dict[str, Any], sample: dict[str, Any], value: float, status: str, message: str | None
    ) -> None:
        row = {**self.constants, **metric, **sample, "value": value, "status": status, "message": message}
        for name, column in self.columns.items():
            column.append(row.get(name))

    def add_curve(self, metric: str, sample_id: str, curve: list[float]) -> None:
        self.curves["cell_id"].append(self.constants["cell_id"])
        self.curves["metric"].append(metric)
        self.curves["sample_id"].append(sample_id)
        self.curves["curve"].append(curve)

    def extend(self, other: CellRows) -> None:
        """Append the rows, curves and gallery maps of ``other`` (a batch of the same cell)."""
        for name, column in other.columns.items():
            self.columns[name].extend(column)
        for name, column in other.curves.items():
            self.curves[name].extend(column)
        self.gallery.extend(other.gallery)

    def __len__(self) -> int:
        return len(self.columns["value"])

    def count(self, status: str) -> int:
        return sum(1 for s in self.columns["status"] if s == status)

    def table(self) -> pa.Table:
        return pa.table(self.columns, schema=RESULT_SCHEMA)

    def curve_table(self) -> pa.Table:
        return pa.table(self.curves, schema=CURVE_SCHEMA)


class PartStore:
    """Finished batches of unfinished cells (``parts/<cell id>/<batch key>.*``), so an interrupted
    cell resumes within itself. A part is complete when its ``.done`` marker exists (written last)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _base(self, cell_id: str, key: str) -> Path:
        return self.root / cell_id / key

    def write(self, cell_id: str, key: str, rows: CellRows) -> None:
        base = self._base(cell_id, key)
        atomic.write_with(base.with_suffix(".rows.parquet"), lambda p: pq.write_table(rows.table(), p))
        atomic.write_with(base.with_suffix(".curves.parquet"), lambda p: pq.write_table(rows.curve_table(), p))
        if rows.gallery:
            from bench.gallery import attribution_table

            table = attribution_table(rows.gallery)
            atomic.write_with(base.with_suffix(".gallery.parquet"), lambda p: pq.write_table(table, p))
        atomic.write_text(base.with_suffix(".done"), "ok\n")

    def read(self, cell_id: str, key: str) -> CellRows | None:
        base = self._base(cell_id, key)
        if not base.with_suffix(".done").exists():
            return None
        try:
            rows = CellRows(constants={})
            rows.columns = pq.read_table(base.with_suffix(".rows.parquet")).to_pydict()
            rows.curves = pq.read_table(base.with_suffix(".curves.parquet")).to_pydict()
            gallery = base.with_suffix(".gallery.parquet")
            if gallery.exists():
                from bench.gallery import table_maps

                rows.gallery = list(table_maps(pq.read_table(gallery)).items())
        except (OSError, pa.ArrowInvalid):
            return None  # a damaged part is recomputed
        return rows

    def clear(self, cell_id: str) -> None:
        shutil.rmtree(self.root / cell_id, ignore_errors=True)


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, run_dir: Path):
        self.root = Path(run_dir)
        self.cells_dir = self.root / "cells"
        self.curves_dir = self.root / "curves"
        self.predictions_dir = self.root / "predictions"
        self.manifest_path = self.root / "manifest.json"
        self.parts = PartStore(self.root / "parts")

    # ------------------------------------------------------------ setup

    def prepare(self) -> None:
        """Create the folders, prove they are writable, and drop temporaries of killed runs."""
        try:
            for folder in (self.root, self.cells_dir, self.curves_dir, self.predictions_dir):
                folder.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise OutputError(
                f"cannot write to the output directory {str(self.root)!r}: {exc.strerror or exc}",
                field="output",
                fix="choose a writable folder with `output:` in the suite or `--output DIR`",
            ) from exc
        for folder in (self.root, self.cells_dir, self.curves_dir, self.predictions_dir):
            atomic.remove_stale_temporaries(folder)

    def retire(self, keep: set[str], sweep_prefixes: tuple[str, ...] = ()) -> list[str]:
        """Move cell files (with their curves and gallery maps) whose id is not in ``keep`` to
        ``superseded/``: results of an earlier version of the suite must not mix with this one's
        in the summary, yet nothing computed is deleted. Unfinished parts go too, unless they are
        in ``keep`` or belong to a planned sweep (their names start with one of ``sweep_prefixes``).
        Returns the retired cell ids."""
        from bench.gallery import GALLERY_DIR

        retired = sorted(p.stem for p in _parquet_files(self.cells_dir) if p.stem not in keep)
        for cell_id in retired:
            for folder in (self.cells_dir, self.curves_dir, self.root / GALLERY_DIR):
                path = folder / f"{cell_id}.parquet"
                if path.exists():
                    dest = self.root / "superseded" / folder.name / path.name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path, dest)
        if self.parts.root.is_dir():  # finished batches of unfinished cells the suite no longer plans
            for folder in sorted(self.parts.root.iterdir()):
                if folder.is_dir() and folder.name not in keep and not folder.name.startswith(sweep_prefixes):
                    dest = self.root / "superseded" / "parts" / folder.name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.rmtree(dest, ignore_errors=True)
                    os.replace(folder, dest)
        return retired

    # ------------------------------------------------------------ cells

    def cell_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.parquet"

    def cell_metadata(self, cell_id: str) -> dict[str, Any] | None:
        """The metadata stored with a cell file, or None when it is absent or unreadable."""
        path = self.cell_path(cell_id)
        if not path.exists():
            return None
        try:
            meta = pq.read_schema(path).metadata or {}
            return json.loads(meta[b"xbench"].decode())
        except (OSError, KeyError, ValueError, pa.ArrowInvalid):
            return None

    def write_cell(self, cell_id: str, rows: CellRows, meta: dict[str, Any]) -> None:
        """Curves and gallery first, then the cell: a present cell file means the cell is complete."""
        if rows.curves["curve"]:
            atomic.write_with(self.curves_dir / f"{cell_id}.parquet", lambda p: pq.write_table(rows.curve_table(), p))
        if rows.gallery:
            from bench.gallery import GALLERY_DIR, attribution_table

            table = attribution_table(rows.gallery)
            atomic.write_with(self.root / GALLERY_DIR / f"{cell_id}.parquet", lambda p: pq.write_table(table, p))
        table = rows.table().replace_schema_metadata(
            {"xbench": json.dumps({"schema_version": SCHEMA_VERSION, **meta}, default=str)}
        )
        self._write(self.cell_path(cell_id), table)

    def _write(self, path: Path, table: pa.Table) -> None:
        try:
            atomic.write_with(path, lambda p: pq.write_table(table, p))
        except OSError as exc:
            raise OutputError(
                f"cannot write {path}: {exc.strerror or exc}",
                field="output",
                fix="free disk space or choose another output directory; files already written are intact",
            ) from exc

    def write_predictions(self, dataset: str, model: str, frame: pd.DataFrame, meta: dict[str, Any]) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(
            {"xbench": json.dumps({"schema_version": SCHEMA_VERSION, **meta}, default=str)}
        )
        self._write(self.predictions_dir / f"{dataset}__{model}.parquet", table)

    def write_models_table(self, models: dict[str, dict[str, Any]]) -> None:
        """models.parquet: one row per (dataset, model) with its quality on the explained images."""
        rows = []
        for key, info in models.items():
            dataset, model = key.split("/", 1)
            flat = {k: v for k, v in info.items() if isinstance(v, int | float | str | bool) or v is None}
            rows.append({"dataset": dataset, "model": model, **flat})
        frame = pd.DataFrame(rows)
        self._write(self.root / "models.parquet", pa.Table.from_pandas(frame, preserve_index=False))

    # ------------------------------------------------------------ manifest

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {}
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(
                f"the run manifest {self.manifest_path} is unreadable: {exc}", fix="delete it and rerun"
            ) from exc

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic.write_json(self.manifest_path, manifest)


# ---------------------------------------------------------------- reading results


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def result_files(path: Path | str) -> list[Path]:
    """The result files of ``path``: a run directory, a folder of runs (all their cells), or
    one Parquet file of results (e.g. a baseline kept in reports/)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if (path / "cells").is_dir():
        return _parquet_files(path / "cells")
    if (path / "results.parquet").is_file():  # an exported reference folder (xbench export)
        return [path / "results.parquet"]
    files = sorted(p for p in path.glob("**/cells/*.parquet") if not p.name.startswith("."))
    if not files:
        raise DataError(
            f"{path} holds no xbench results (no cells/ folder below it)",
            fix="give a run directory (by default runs/suite=<suite>/run=<id>), a folder of runs, or a results "
            "Parquet file",
        )
    return files


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


def schema_version(path: Path) -> int:
    meta = pq.read_schema(path).metadata or {}
    try:
        return int(json.loads(meta.get(b"xbench", b"{}")).get("schema_version", 1))
    except ValueError as exc:
        raise DataError(f"{path} has unreadable xbench metadata: {exc}", fix="regenerate the file") from exc


def read_results(path: Path | str) -> pd.DataFrame:
    """Long-form results of a run directory, of every run below a folder, or of a results file."""
    tables = []
    for file in result_files(path):
        try:
            tables.append(_upgrade(pq.read_table(file), schema_version(file), file))
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"cannot read results file {file}: {exc}", fix="delete it and rerun the run") from exc
    if not tables:
        return RESULT_SCHEMA.empty_table().to_pandas()
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def write_results(frame: pd.DataFrame, dest: Path) -> None:
    """Store a long-form results table as one Parquet file (e.g. a baseline in reports/)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({"xbench": json.dumps({"schema_version": SCHEMA_VERSION})})
    atomic.write_with(Path(dest), lambda p: pq.write_table(table, p))


def read_predictions(run_dir: Path | str) -> pd.DataFrame:
    """Per-sample predictions of every (dataset, model) of a run."""
    files = _parquet_files(Path(run_dir) / "predictions")
    if not files:
        return pd.DataFrame()
    return pd.concat([pq.read_table(p).to_pandas() for p in files], ignore_index=True)
