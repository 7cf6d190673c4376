"""`xbench merge`: combine the run directories of shards into one run directory.

Shards of one suite (``--shard i/n``) write disjoint cells; merging copies
their cell, curve, gallery and prediction files (each written atomically, named
by its identity) and unites their manifests. A cell present in several shards
keeps the copy with the fewest errors. The destination is written under its lock,
and each shard is read as its manifest's snapshot.
"""

from __future__ import annotations

from pathlib import Path

from bench.errors import DataError
from bench.store import RunStore, read_manifest


def merge_runs(dest: Path, runs: list[Path]) -> int:
    target = RunStore(dest)
    with target.lock():
        target.prepare()
        manifest = target.read_manifest()
        cells = 0
        for run in runs:
            shard = read_manifest(run)
            if shard is None:
                raise DataError(
                    f"{run} is not a run directory (no readable manifest.json)", fix="give the shards' run directories"
                )
            source = RunStore(run)
            for key in ("schema_version", "suite_name", "suite_path", "suite_yaml", "suite", "environment", "cards"):
                if not getattr(manifest, key):
                    setattr(manifest, key, getattr(shard, key))
            manifest.run_id = dest.resolve().name
            manifest.invocations.extend(shard.invocations)
            manifest.models.update(shard.models)
            manifest.sweeps.update(shard.sweeps)
            manifest.unreadable_samples.update(shard.unreadable_samples)
            for cell_id, state in shard.cells.items():
                if state.status == "pending" and cell_id in manifest.cells:
                    continue
                have, new = target.cell_metadata(cell_id), source.cell_metadata(cell_id)
                if new is None:
                    manifest.cells.setdefault(cell_id, state)
                    continue
                if have is None or new.get("errors", 0) < have.get("errors", 0):
                    for folder in ("curves", "gallery", "cells"):  # the cell file last: it marks the cell done
                        src = run / folder / f"{cell_id}.parquet"
                        if src.exists():
                            target.copy_in(src, f"{folder}/{cell_id}.parquet")
                    manifest.cells[cell_id] = state
                    cells += 1
            for folder in ("predictions", "gallery"):
                for src in (run / folder).glob("*.parquet") if (run / folder).is_dir() else []:
                    if src.name.count("__") == 1 and not (dest / folder / src.name).exists():
                        target.copy_in(src, f"{folder}/{src.name}")
        target.write_manifest(manifest)
        target.write_models_table(manifest.models)
    return cells
