"""The worker: runs cell tasks in any process and streams back what happened, writing nothing.

A ``Worker`` holds what a process keeps between tasks: prepared (dataset, model)
groups (so cells of the same model on the same worker load it once) and the
attribution cache (outside the run directory). ``Worker.run(task)`` builds the
task's components from their specs, prepares the group, expands a sweep, runs
each cell or variant and yields events (``bench.tasks``). It has no path to the
run directory: the driver writes everything it yields. The same code serves the
in-process executor and Ray workers, with or without a shared disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from bench import gallery
from bench.attribution_cache import AttributionCache, CacheKey, weights_digest
from bench.cell import CellExecutor, CellSettings
from bench.explainers.base import Explainer
from bench.group import Group, open_group
from bench.guards import error_text
from bench.plan import Cell
from bench.tasks import CellDone, CellTask, Event, GroupFacts, GroupReady, SweepPlanned, TaskFailed, cell_columns


class Worker:
    def __init__(
        self,
        cache_root: Path | None = None,
        *,
        log: Callable[[str], None] = print,
        should_stop: Callable[[], bool] = lambda: False,
    ):
        self.cache = AttributionCache(cache_root) if cache_root is not None else None
        self.log = log
        self.should_stop = should_stop
        self.groups: dict[str, Group | str] = {}  # group key -> prepared group, or why it failed
        self.weights: dict[str, str] = {}

    def _group(self, task: CellTask) -> tuple[Group | str, GroupFacts | None]:
        key = task.group_key
        if key in self.groups:
            return self.groups[key], None
        s = task.settings
        try:
            group = open_group(
                task.dataset.build(),
                task.model.build(),
                task.samples,
                task.seeds,
                target_rule=s.target_rule,
                batch_size=s.batch_size,
                device=torch.device(s.device),
                log=self.log,
            )
        except Exception as exc:  # noqa: BLE001 - a broken model fails its cells, not the run
            self.groups[key] = error_text(exc)
            self.log(f"{task.cell.dataset}/{task.cell.model}: cannot prepare the model: {self.groups[key]}")
            return self.groups[key], None
        self.groups[key] = group
        self.weights[key] = weights_digest(group.model.module)
        return group, self._facts(task, group)

    def _facts(self, task: CellTask, group: Group) -> GroupFacts:
        cell = task.cell
        info = {
            **group.quality(),
            **{k: v for k, v in group.model.info.items() if k != "key"},
            "dataset_classes": list(group.dataset.classes),
        }
        positions = gallery.choose(group, task.settings.gallery_size)
        images = gallery.images_table(group, positions) if positions else None
        return GroupFacts(
            cell.dataset, cell.model, info, group.predictions_frame(cell.dataset, cell.model), group.skipped, images
        )

    def _cache_key(self, task: CellTask, cell: Cell, explainer: Explainer, group: Group) -> CacheKey | None:
        if self.cache is None:
            return None
        data = {**cell.identity["data"], "image_size": group.image_size, "precision": task.settings.precision}
        return CacheKey.build(cell.identity["model"], self.weights[task.group_key], explainer.identity(), data)

    def run(self, task: CellTask) -> Iterator[Event]:
        """Run ``task`` (each variant of a sweep), yielding its events."""
        s = task.settings
        if s.threads:
            torch.set_num_threads(s.threads)
        group, facts = self._group(task)
        if facts is not None:
            yield GroupReady(facts)
        if isinstance(group, str):
            yield TaskFailed(task, group)
            return
        base: Explainer = task.explainer.build()
        metrics = {spec.key: spec.build() for spec in task.metrics}
        executor = CellExecutor(
            CellSettings(seed=s.seed, device=torch.device(s.device), warmup=s.warmup, precision=s.precision),
            metrics,
            {card.key: card for card in task.metric_cards},
            cache=self.cache,
            gallery_ids={group.refs[i].id for i in gallery.choose(group, s.gallery_size)},
            log=self.log,
            should_stop=self.should_stop,
        )
        variants = base.expand(group.model)
        sweep = variants != [("", base)]
        if sweep:
            yield SweepPlanned(task.cell, [suffix for suffix, _ in variants])
        for suffix, explainer in variants:
            if self.should_stop():
                return
            cell = task.cell.variant(suffix) if sweep else task.cell
            if sweep and suffix in task.complete_variants:
                yield CellDone(cell, [], 0.0, reused=True)
                continue
            finished = {key for cell_id, key in task.finished_parts if cell_id == cell.cell_id}
            columns = cell_columns(s, cell, task.explainer_card)
            yield from executor.run(
                cell, columns, explainer, group, self._cache_key(task, cell, explainer, group), finished
            )


def run_task(worker: Worker, task: CellTask) -> Iterator[Any]:
    """``worker.run(task)``, turning an unexpected crash of the task into a TaskFailed event."""
    try:
        yield from worker.run(task)
    except Exception as exc:  # noqa: BLE001 - one task's bug must not end the run
        yield TaskFailed(task, error_text(exc))
