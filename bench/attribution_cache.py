"""On-disk cache of attributions, so that adding a metric never recomputes an explanation.

An entry is one sample's attribution map and what computing it cost, keyed by
everything that determines it: the model (its identity *and* a hash of its
weights), the explainer (name, version, params), the dataset (content and split),
the sample id, the sample's seed and the explained target. Entries live under
``<cache>/attributions/<model digest>/<explainer digest>/<data digest>/`` as
``<sample digest>.npz`` (NumPy's zip container: a truncated or corrupted entry
fails to load, is deleted and is recomputed). Files are written atomically.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import atomic
from bench.seeding import short_digest

COST_KEYS = ("seconds", "forward_images", "backward_images", "peak_memory_mb")


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 (16 hex digits) over the names, shapes and bytes of a module's state dict."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class CacheKey:
    """Where the entries of one (model, explainer, data) combination live."""

    model: str
    explainer: str
    data: str

    @classmethod
    def build(cls, model_identity: Any, weights: str, explainer_identity: Any, data_identity: Any) -> CacheKey:
        return cls(
            model=short_digest({"model": model_identity, "weights": weights}, 16),
            explainer=short_digest(explainer_identity, 16),
            data=short_digest(data_identity, 16),
        )


class AttributionCache:
    """Stores and retrieves per-sample attributions (and their cost) under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.corrupt = 0  # entries found unreadable (and deleted) since creation
        self.failed_writes = 0  # entries that could not be written (e.g. a full disk)

    def folder(self, key: CacheKey) -> Path:
        return self.root / key.model / key.explainer / key.data

    def _path(self, key: CacheKey, sample_id: str, seed: int, target: int) -> Path:
        return self.folder(key) / f"{short_digest([sample_id, seed, target], 20)}.npz"

    def get(
        self, key: CacheKey, sample_ids: Sequence[str], seeds: Sequence[int], targets: Sequence[int]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        """Stacked attributions (N, 1, H, W) and per-sample costs when *every* sample is cached."""
        maps: list[np.ndarray] = []
        costs: dict[str, list[float]] = {k: [] for k in COST_KEYS}
        for sample_id, seed, target in zip(sample_ids, seeds, targets, strict=True):
            path = self._path(key, sample_id, seed, target)
            entry = self._read(path)
            if entry is None:
                return None
            os.utime(path)  # last use, for `xbench cache prune --older-than`
            maps.append(entry["attribution"])
            for k in COST_KEYS:
                costs[k].append(float(entry[k]))
        if len({m.shape for m in maps}) != 1:
            return None
        return np.stack(maps), {k: np.asarray(v) for k, v in costs.items()}

    def _read(self, path: Path) -> dict[str, np.ndarray] | None:
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                entry = {name: data[name] for name in ("attribution", *COST_KEYS)}
            if entry["attribution"].ndim != 3 or not np.isfinite(entry["attribution"]).all():
                raise ValueError("not a finite (1, H, W) map")
            return entry
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            self.corrupt += 1
            path.unlink(missing_ok=True)  # recomputed by the caller
            return None

    def put(
        self,
        key: CacheKey,
        sample_ids: Sequence[str],
        seeds: Sequence[int],
        targets: Sequence[int],
        attributions: np.ndarray,
        costs: Mapping[str, Any],
    ) -> None:
        """Store one entry per sample (attribution (1, H, W) float32 and its costs). The cache is an
        optimisation: a write that fails (a full disk) is skipped, never an error of the cell."""
        for i, (sample_id, seed, target) in enumerate(zip(sample_ids, seeds, targets, strict=True)):
            buffer = io.BytesIO()
            # Any: numpy's stub lets a str-keyed ** mapping fill savez's `allow_pickle: bool` keyword
            values: dict[str, Any] = {k: np.float64(np.asarray(costs[k])[i]) for k in COST_KEYS}
            np.savez(buffer, attribution=np.asarray(attributions[i], dtype=np.float32), **values)
            try:
                atomic.write_bytes(self._path(key, sample_id, seed, target), buffer.getvalue())
            except OSError:
                self.failed_writes += 1
                return

    # ------------------------------------------------------------ maintenance

    def info(self) -> dict[str, Any]:
        files = list(self.root.glob("*/*/*/*.npz")) if self.root.is_dir() else []
        groups = {f.parent for f in files}
        return {
            "root": str(self.root),
            "entries": len(files),
            "groups": len(groups),
            "bytes": sum(f.stat().st_size for f in files),
            "oldest_days": round(
                (time.time() - min((f.stat().st_mtime for f in files), default=time.time())) / 86400, 1
            ),
        }

    def prune(self, older_than_days: float | None = None, everything: bool = False) -> int:
        """Delete entries (all, or those not written/used for ``older_than_days``); returns how many."""
        if not self.root.is_dir():
            return 0
        if everything:
            count = len(list(self.root.glob("*/*/*/*.npz")))
            shutil.rmtree(self.root)
            return count
        limit = time.time() - 86400 * (older_than_days or 0)
        removed = 0
        for path in self.root.glob("*/*/*/*.npz"):
            if path.stat().st_mtime < limit:
                path.unlink(missing_ok=True)
                removed += 1
        for folder in sorted(self.root.glob("*/*/*"), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        return removed
