"""The unit of work that executors run: one planned cell (all variants of a sweep), on a worker.

A ``Worker`` holds what a process needs to run cells of a suite: the suite,
the run settings, a cache of prepared (dataset, model) groups (so cells of the
same model on the same worker load it once), the attribution cache and the
run's part store. ``Worker.run(cell)`` returns everything the driver must write:
the cells' rows, the group's facts the first time the worker prepared it, and
the variants of a sweep. It never writes the results itself, so the same code
serves the in-process executor and Ray workers, with or without a shared disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from bench import gallery
from bench.attribution_cache import AttributionCache, CacheKey, weights_digest
from bench.cell import CellExecutor, CellSettings, error_text
from bench.config import Suite
from bench.group import Group, load_group, sample_refs
from bench.plan import Cell
from bench.seeding import sample_seeds
from bench.store import CellRows, RunStore


@dataclass
class GroupFacts:
    """What a run records once per (dataset, model)."""

    dataset: str
    model: str
    quality: dict[str, Any]
    predictions: pd.DataFrame
    skipped: list[tuple[str, str]]
    gallery_images: pa.Table | None


@dataclass
class CellResult:
    cell: Cell
    rows: CellRows
    seconds: float
    cache_hits: int = 0


@dataclass
class WorkResult:
    cell: Cell  # the planned cell
    results: list[CellResult] = field(default_factory=list)
    facts: GroupFacts | None = None
    sweep: list[str] | None = None  # variant suffixes when the cell's explainer expanded
    reused: list[str] = field(default_factory=list)  # variants already complete on disk


def variant(cell: Cell, suffix: str) -> Cell:
    """The cell of one variant of a sweep (e.g. one layer of ``layer: all_conv``)."""
    return replace(cell, explainer=f"{cell.explainer}@{suffix}", identity={**cell.identity, "variant": suffix})


class Worker:
    def __init__(
        self,
        suite: Suite,
        settings: CellSettings,
        run_dir: Path,
        *,
        cache_root: Path | None,
        gallery_size: int,
        force: bool = False,
        log: Callable[[str], None] = print,
    ):
        self.suite = suite
        self.settings = settings
        self.store = RunStore(run_dir)
        self.cache = AttributionCache(cache_root) if cache_root is not None else None
        self.gallery_size = gallery_size
        self.force = force
        self.log = log
        self.groups: dict[tuple[str, str], Group | str] = {}  # prepared group, or why it failed
        self.weights: dict[tuple[str, str], str] = {}

    def _group(self, cell: Cell) -> tuple[Group | str, GroupFacts | None]:
        key = (cell.dataset, cell.model)
        if key in self.groups:
            return self.groups[key], None
        try:
            group = load_group(self.suite, cell.dataset, cell.model, self.settings.device, self.log)
        except Exception as exc:  # noqa: BLE001 - a broken model fails its cells, not the run
            self.groups[key] = error_text(exc)
            self.log(f"{cell.dataset}/{cell.model}: cannot prepare the model: {self.groups[key]}")
            return self.groups[key], None
        self.groups[key] = group
        self.weights[key] = weights_digest(group.model.module)
        return group, self._facts(cell, group)

    def _facts(self, cell: Cell, group: Group) -> GroupFacts:
        info = {**group.quality(), **{k: v for k, v in group.model.info.items() if k != "key"}}
        positions = gallery.choose(group, self.gallery_size)
        images = gallery.images_table(group, positions) if positions else None
        return GroupFacts(
            cell.dataset, cell.model, info, group.predictions_frame(cell.dataset, cell.model), group.skipped, images
        )

    def _cache_key(self, cell: Cell, explainer: Any, group: Group) -> CacheKey | None:
        if self.cache is None:
            return None
        data = {**cell.identity["data"], "image_size": group.image_size, "precision": self.settings.precision}
        model = cell.identity["model"]
        return CacheKey.build(model, self.weights[(cell.dataset, cell.model)], explainer.identity(), data)

    def run(
        self, cell: Cell, tick: Callable[[], None] = lambda: None, complete: Callable[[Cell], bool] | None = None
    ) -> WorkResult:
        """Run ``cell`` (each variant of a sweep); ``complete`` tells which variants are already done."""
        out = WorkResult(cell)
        group, out.facts = self._group(cell)
        base = self.suite.explainers[cell.explainer]
        if isinstance(group, str):
            out.results.append(CellResult(cell, self._failed(cell, base, group), 0.0))
            return out
        gallery_ids = {group.refs[i].id for i in gallery.choose(group, self.gallery_size)}
        executor = CellExecutor(
            self.settings,
            self.suite.metrics,
            cache=self.cache,
            parts=self.store.parts,
            gallery_ids=gallery_ids,
            log=self.log,
        )
        variants = base.expand(group.model)
        if variants != [("", base)]:
            out.sweep = [suffix for suffix, _ in variants]
        for suffix, explainer in variants:
            target = cell if out.sweep is None else variant(cell, suffix)
            if out.sweep is not None and not self.force and complete is not None and complete(target):
                out.reused.append(target.cell_id)
                continue
            begin, hits = time.perf_counter(), executor.cache_hits
            rows = executor.run(target, explainer, group, self._cache_key(target, explainer, group), tick)
            out.results.append(CellResult(target, rows, time.perf_counter() - begin, executor.cache_hits - hits))
        return out

    def _failed(self, cell: Cell, explainer: Any, message: str) -> CellRows:
        """Error rows for every sample and metric of a cell whose model could not be prepared."""
        cfg = self.suite.config
        dataset = self.suite.datasets[cell.dataset]
        executor = CellExecutor(self.settings, self.suite.metrics, log=self.log)
        rows = executor.rows_for(cell, explainer)
        try:
            refs = sample_refs(dataset, cfg.samples_for(cell.dataset), cfg.seed)
        except Exception:  # noqa: BLE001 - even the data failed: one row per metric says so
            refs = []
        seeds = sample_seeds(cfg.seed, [r.id for r in refs])
        samples = [{"sample_id": r.id, "label": r.label, "seed": s} for r, s in zip(refs, seeds, strict=True)]
        executor.add_status(rows, cell.metrics, samples or [{"sample_id": None}], message, "error")
        return rows
