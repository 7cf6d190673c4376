"""Finished batches of unfinished cells (``parts/<cell id>/<batch key>.*``), so that an interrupted
cell resumes from its last finished batch.

Only the driver writes parts (from the batches that workers stream back). A part is
its rows, curves and gallery maps as Parquet files plus a ``.done`` marker written
last, which holds the SHA-256 of each file: a part without its marker is unfinished,
a part whose files do not match their digests is damaged; both are recomputed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench import atomic
from bench.store.schema import CellRows


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PartStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.damaged = 0  # parts found damaged (and dropped) since creation

    def _base(self, cell_id: str, key: str) -> Path:
        return self.root / cell_id / key

    def write(self, cell_id: str, key: str, rows: CellRows, stamp: str = "") -> None:
        """Write one finished batch; ``stamp`` identifies what it was computed with (the cell's metrics), so
        that a rerun with other metrics does not reuse it."""
        from bench.gallery import attribution_table

        base = self._base(cell_id, key)
        files = {".rows.parquet": rows.table(), ".curves.parquet": rows.curve_table()}
        if rows.gallery:
            files[".gallery.parquet"] = attribution_table(rows.gallery)
        digests = {}
        for suffix, table in files.items():
            path = base.with_suffix(suffix)
            atomic.write_with(path, partial(pq.write_table, table))
            digests[suffix] = file_digest(path)
        atomic.write_json(base.with_suffix(".done"), {"stamp": stamp, "files": digests})

    def keys(self, cell_id: str) -> set[str]:
        """Batch keys of the finished parts of ``cell_id`` (markers present; not yet verified)."""
        folder = self.root / cell_id
        return {p.name[: -len(".done")] for p in folder.glob("*.done")} if folder.is_dir() else set()

    def verified_keys(self, cell_id: str, stamp: str = "") -> set[str]:
        """Batch keys of the finished parts of ``cell_id`` made with ``stamp`` whose files match their
        digests. Damaged parts are deleted (and counted in ``damaged``), parts of another stamp (computed
        for other metrics) deleted too, so their batches are computed again."""
        good = set()
        for key in sorted(self.keys(cell_id)):
            base = self._base(cell_id, key)
            try:
                marker = json.loads(base.with_suffix(".done").read_text())
                intact = all(file_digest(base.with_suffix(s)) == d for s, d in marker["files"].items())
            except (OSError, ValueError, KeyError, TypeError):
                intact, marker = False, {}
            if intact and marker.get("stamp", "") == stamp:
                good.add(key)
                continue
            self.damaged += 0 if intact else 1
            for path in base.parent.glob(f"{key}.*"):
                path.unlink(missing_ok=True)
        return good

    def cells(self) -> list[str]:
        """Cell ids that have a parts folder."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def read(self, cell_id: str, key: str) -> CellRows | None:
        """The part's rows, or None when it is unfinished or damaged (a damaged part is deleted)."""
        from bench.gallery import table_maps

        base = self._base(cell_id, key)
        marker = base.with_suffix(".done")
        if not marker.exists():
            return None
        try:
            digests = json.loads(marker.read_text())["files"]
            for suffix, digest in digests.items():
                if file_digest(base.with_suffix(suffix)) != digest:
                    raise ValueError(f"{base.with_suffix(suffix).name} does not match its digest")
            rows = CellRows.from_tables(
                pq.read_table(base.with_suffix(".rows.parquet")), pq.read_table(base.with_suffix(".curves.parquet"))
            )
            if ".gallery.parquet" in digests:
                rows.gallery = list(table_maps(pq.read_table(base.with_suffix(".gallery.parquet"))).items())
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowInvalid):
            self.damaged += 1
            for path in base.parent.glob(f"{key}.*"):
                path.unlink(missing_ok=True)
            return None
        return rows

    def clear(self, cell_id: str) -> None:
        shutil.rmtree(self.root / cell_id, ignore_errors=True)
