"""`xbench merge`: combine the run directories of shards into one run directory.

Shards of one suite (``--shard i/n``) write disjoint cells; merging copies
their cell, curve, gallery and prediction files (each written atomically, named
by its identity) and unites their manifests. A cell present in several shards
keeps the copy with the fewest errors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.errors import DataError
from bench.store import RunStore


def merge_runs(dest: Path, runs: list[Path]) -> int:
    target = RunStore(dest)
    target.prepare()
    manifest = target.read_manifest()
    cells = 0
    for run in runs:
        source = RunStore(run)
        if not source.manifest_path.exists():
            raise DataError(f"{run} is not a run directory (no manifest.json)", fix="give the shards' run directories")
        shard = json.loads(source.manifest_path.read_text())
        for key in ("schema_version", "suite_name", "suite_path", "suite_yaml", "suite", "environment"):
            manifest.setdefault(key, shard.get(key))
        manifest["run_id"] = dest.resolve().name
        manifest.setdefault("invocations", []).extend(shard.get("invocations", []))
        manifest.setdefault("models", {}).update(shard.get("models", {}))
        manifest.setdefault("sweeps", {}).update(shard.get("sweeps", {}))
        manifest.setdefault("unreadable_samples", {}).update(shard.get("unreadable_samples", {}))
        merged_cells = manifest.setdefault("cells", {})
        for cell_id, state in shard.get("cells", {}).items():
            if state.get("status") == "pending" and cell_id in merged_cells:
                continue
            have = target.cell_metadata(cell_id)
            new = source.cell_metadata(cell_id)
            if new is None:
                merged_cells.setdefault(cell_id, state)
                continue
            if have is None or new.get("errors", 0) < have.get("errors", 0):
                for folder in ("cells", "curves", "gallery"):
                    src = run / folder / f"{cell_id}.parquet"
                    if src.exists():
                        (dest / folder).mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(src, dest / folder / f"{cell_id}.parquet")
                merged_cells[cell_id] = state
                cells += 1
        for folder in ("predictions", "gallery"):
            for src in (run / folder).glob("*.parquet") if (run / folder).is_dir() else []:
                if src.name.count("__") == 1 and not (dest / folder / src.name).exists():
                    (dest / folder).mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dest / folder / src.name)
    target.write_manifest(manifest)
    target.write_models_table(manifest.get("models", {}))
    return cells
