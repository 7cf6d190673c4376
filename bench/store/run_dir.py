"""The run directory and the one object that writes it.

Layout of a run directory::

    manifest.json                       resolved suite, environment, invocations, cell states and digests
    cells/<cell_id>.parquet             long-form results: one row per (sample, metric output); cards in metadata
    curves/<cell_id>.parquet            per-sample curves (deletion/insertion) for plots
    predictions/<dataset>__<model>.parquet   label, prediction, target, correctness per sample
    models.parquet                      per (dataset, model): accuracy, macro-F1, target rule, counts
    parts/<cell_id>/                    finished batches of a cell still running (removed when it finishes)
    gallery/                            a few images per (dataset, model) and every explainer's maps of them
    quarantine/                         files found damaged, moved aside (then recomputed)
    superseded/                         cells of an earlier version of the suite
    .xbench.lock, .xbench.lock.json     the driver's lock and who holds it
    leaderboard.md, leaderboard.parquet, summary.parquet

Only the driver of a run writes here, through ``RunStore``, while it holds the lock.
Every file is written atomically (temporary file + fsync + rename), the curves and
gallery before their cell, the cell before the manifest, so an interrupted run
leaves complete files and a rerun resumes. The manifest records each finished cell
file's size and SHA-256; a file that no longer matches, or whose Parquet footer is
unreadable, is moved to ``quarantine/`` with a warning and its cell recomputed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench import atomic
from bench.errors import OutputError
from bench.store.lock import RunLock
from bench.store.manifest import CellState, CellStatus, Manifest, Quarantined
from bench.store.parts import PartStore, file_digest
from bench.store.schema import PREDICTION_SCHEMA, SCHEMA_VERSION, CellRows, check_table

GALLERY_DIR = "gallery"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


class RunStore:
    """Reads and writes one run directory (writing: only the driver, holding the lock)."""

    def __init__(self, run_dir: Path | str, log: Callable[[str], None] = print):
        self.root = Path(run_dir)
        self.cells_dir = self.root / "cells"
        self.curves_dir = self.root / "curves"
        self.predictions_dir = self.root / "predictions"
        self.gallery_dir = self.root / GALLERY_DIR
        self.manifest_path = self.root / "manifest.json"
        self.parts = PartStore(self.root / "parts")
        self.log = log

    # ------------------------------------------------------------ setup

    def lock(self, wait: bool = False) -> RunLock:
        return RunLock(self.root, wait=wait, log=self.log)

    def prepare(self) -> None:
        """Create the folders, prove they are writable, and drop temporaries of dead processes."""
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
        for folder in (self.root, self.cells_dir, self.curves_dir, self.predictions_dir, self.gallery_dir):
            atomic.remove_stale_temporaries(folder)
        for cell_id in self.parts.cells():
            atomic.remove_stale_temporaries(self.parts.root / cell_id)

    # ------------------------------------------------------------ writing (driver only)

    def _write(self, path: Path, writer: Callable[[Path], object]) -> None:
        try:
            atomic.write_with(path, writer)
        except OSError as exc:
            raise OutputError(
                f"cannot write {path}: {exc.strerror or exc}",
                field="output",
                fix="free disk space or choose another output directory; files already written are intact, "
                "and rerunning resumes from them",
            ) from exc

    def write_part(self, cell_id: str, key: str, rows: CellRows, stamp: str = "") -> None:
        try:
            self.parts.write(cell_id, key, rows, stamp)
        except OSError as exc:
            raise OutputError(
                f"cannot write a finished batch of {cell_id}: {exc.strerror or exc}",
                field="output",
                fix="free disk space or choose another output directory; rerunning resumes from what was written",
            ) from exc

    def write_cell(self, cell_id: str, rows: CellRows, meta: dict[str, Any]) -> tuple[str, int]:
        """Curves and gallery first, then the cell (its presence means the cell is complete);
        returns the cell file's SHA-256 and size for the manifest."""
        if rows.curves["curve"]:
            table = rows.curve_table()
            self._write(self.curves_dir / f"{cell_id}.parquet", lambda p: pq.write_table(table, p))
        if rows.gallery:
            from bench.gallery import attribution_table

            maps = attribution_table(rows.gallery)
            self._write(self.gallery_dir / f"{cell_id}.parquet", lambda p: pq.write_table(maps, p))
        table = rows.table().replace_schema_metadata(
            {"xbench": json.dumps({"schema_version": SCHEMA_VERSION, **meta}, default=str)}
        )
        path = self.cell_path(cell_id)
        self._write(path, lambda p: pq.write_table(table, p))
        return file_digest(path), path.stat().st_size

    def write_predictions(self, dataset: str, model: str, frame: pd.DataFrame, meta: dict[str, Any]) -> None:
        table = check_table(
            pa.Table.from_pandas(frame, schema=PREDICTION_SCHEMA, preserve_index=False),
            PREDICTION_SCHEMA,
            "predictions",
        ).replace_schema_metadata({"xbench": json.dumps({"schema_version": SCHEMA_VERSION, **meta}, default=str)})
        self._write(self.predictions_dir / f"{dataset}__{model}.parquet", lambda p: pq.write_table(table, p))

    def write_gallery_images(self, dataset: str, model: str, table: pa.Table) -> None:
        self._write(self.gallery_dir / f"{dataset}__{model}.parquet", lambda p: pq.write_table(table, p))

    def write_models_table(self, models: dict[str, dict[str, Any]]) -> None:
        """models.parquet: one row per (dataset, model) with its quality on the explained images."""
        rows = []
        for key, info in models.items():
            dataset, model = key.split("/", 1)
            flat = {k: v for k, v in info.items() if isinstance(v, int | float | str | bool) or v is None}
            rows.append({"dataset": dataset, "model": model, **flat})
        table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
        self._write(self.root / "models.parquet", lambda p: pq.write_table(table, p))

    def write_view(self, name: str, content: str | bytes | pd.DataFrame) -> Path:
        """A derived file (leaderboard, summary, report, comparison) at ``name`` relative to the run
        directory: text, bytes or a frame as Parquet. Derived files are rebuilt from the results at will."""
        path = self.root / name
        if isinstance(content, pd.DataFrame):
            frame = content
            self._write(path, lambda p: frame.to_parquet(p, index=False))
        else:
            data = content.encode("utf-8") if isinstance(content, str) else content
            self._write(path, lambda p: p.write_bytes(data))
        return path

    def copy_in(self, src: Path, name: str) -> None:
        """Copy ``src`` (a file of another run directory, e.g. a shard's cell) to ``name``, atomically."""
        self._write(self.root / name, lambda p: shutil.copyfile(src, p))

    def write_manifest(self, manifest: Manifest) -> None:
        try:
            atomic.write_json(self.manifest_path, manifest.to_json())
        except OSError as exc:
            raise OutputError(
                f"cannot write {self.manifest_path}: {exc.strerror or exc}",
                field="output",
                fix="free disk space or choose another output directory; finished cells are intact, and rerunning "
                "resumes from them",
            ) from exc

    # ------------------------------------------------------------ manifest

    def read_manifest(self) -> Manifest:
        """The manifest; an absent one is empty, a damaged one is moved to quarantine/ (with a
        warning) and rebuilt as the run goes: cell files carry their own identity."""
        if not self.manifest_path.exists():
            return Manifest()
        try:
            return Manifest.parse(json.loads(self.manifest_path.read_text()))
        except (OSError, ValueError) as exc:
            manifest = Manifest()
            self.quarantine(self.manifest_path, f"unreadable manifest: {str(exc).splitlines()[0]}", manifest)
            return manifest

    def quarantine(self, path: Path, reason: str, manifest: Manifest, quiet: bool = False) -> None:
        """Move a damaged file to quarantine/ (never delete what may still be of use) and say so."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        dest = self.root / "quarantine" / f"{path.parent.name}__{path.name}.{stamp}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        manifest.quarantined.append(
            Quarantined(
                path=str(path.relative_to(self.root)),
                moved_to=str(dest.relative_to(self.root)),
                reason=reason,
                at=_now(),
            )
        )
        if not quiet:
            self.log(f"warning: {path} is damaged ({reason}); moved to {dest} and will be recomputed")

    # ------------------------------------------------------------ cells

    def cell_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.parquet"

    def cell_ids(self) -> list[str]:
        return [p.stem for p in _parquet_files(self.cells_dir)]

    def cell_metadata(self, cell_id: str) -> dict[str, Any] | None:
        """The metadata stored with a cell file, or None when it is absent or unreadable."""
        path = self.cell_path(cell_id)
        if not path.exists():
            return None
        try:
            meta = pq.read_schema(path).metadata or {}
            return dict(json.loads(meta[b"xbench"].decode()))
        except (OSError, KeyError, ValueError, pa.ArrowInvalid):
            return None

    def verify_cells(self, manifest: Manifest) -> list[str]:
        """Quarantine cell files whose footer is unreadable or whose bytes no longer match the
        manifest's digest; returns their ids (their cells are then pending again)."""
        damaged = []
        for cell_id in self.cell_ids():
            path, state = self.cell_path(cell_id), manifest.cells.get(cell_id)
            reason = None
            if self.cell_metadata(cell_id) is None:
                reason = "unreadable Parquet footer or metadata"
            elif (
                state is not None
                and state.sha256
                and (path.stat().st_size != state.bytes or file_digest(path) != state.sha256)
            ):
                reason = "its bytes do not match the digest in the manifest"
            if reason is None:
                continue
            self.quarantine(path, reason, manifest)
            for folder in (self.curves_dir, self.gallery_dir):  # its curves and maps go with it, to be rewritten
                if (folder / f"{cell_id}.parquet").exists():
                    self.quarantine(folder / f"{cell_id}.parquet", "its cell file is damaged", manifest, quiet=True)
            if state is not None:
                state.status, state.sha256, state.bytes = "pending", None, None
            damaged.append(cell_id)
        return damaged

    def adopt(self, manifest: Manifest) -> list[str]:
        """Register finished cell files that the manifest does not know as finished (a run killed
        between writing a cell and the manifest): their state, size and digest from the file itself."""
        adopted = []
        for cell_id in self.cell_ids():
            state = manifest.cells.get(cell_id)
            if state is not None and state.status != "pending" and state.sha256:
                continue
            meta = self.cell_metadata(cell_id)
            if meta is None:
                continue
            path, keys = self.cell_path(cell_id), meta.get("cell", {}).get("keys", ["", "", ""])
            status = cast("CellStatus", meta.get("status") or ("error" if meta.get("errors") else "done"))
            manifest.cells[cell_id] = CellState(
                dataset=state.dataset if state else keys[0],
                model=state.model if state else keys[1],
                explainer=state.explainer if state else cell_id.split("__")[2],
                status=status,
                rows=meta.get("rows"),
                errors=meta.get("errors"),
                seconds=meta.get("seconds"),
                sha256=file_digest(path),
                bytes=path.stat().st_size,
            )
            adopted.append(cell_id)
        return adopted

    def cell_complete(self, cell_id: str, metric_identities: dict[str, Any]) -> bool:
        """Done when the cell file holds every planned metric, unchanged, and no errors."""
        meta = self.cell_metadata(cell_id)
        if not meta or meta.get("errors", 1) > 0:
            return False
        stored = meta.get("metrics", {})
        return all(stored.get(k) == json.loads(json.dumps(v)) for k, v in metric_identities.items())

    def retire(self, keep: set[str], sweep_prefixes: tuple[str, ...] = ()) -> list[str]:
        """Move cell files (with their curves and gallery maps) whose id is not in ``keep`` to
        ``superseded/``: results of an earlier version of the suite must not mix with this one's
        in the summary, yet nothing computed is deleted. Unfinished parts go too, unless they are
        in ``keep`` or belong to a planned sweep (their names start with one of ``sweep_prefixes``).
        Returns the retired cell ids."""
        retired = sorted(cell_id for cell_id in self.cell_ids() if cell_id not in keep)
        for cell_id in retired:
            for folder in (self.cells_dir, self.curves_dir, self.gallery_dir):
                path = folder / f"{cell_id}.parquet"
                if path.exists():
                    dest = self.root / "superseded" / folder.name / path.name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path, dest)
        for cell_id in self.parts.cells():  # finished batches of unfinished cells the suite no longer plans
            if cell_id not in keep and not cell_id.startswith(sweep_prefixes):
                dest = self.root / "superseded" / "parts" / cell_id
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(dest, ignore_errors=True)
                os.replace(self.parts.root / cell_id, dest)
        return retired
