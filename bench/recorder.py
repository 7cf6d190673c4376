"""The driver's side of a run: turns the events that executors stream back into files.

It is the only code that writes a run directory during a run (through
``RunStore``): each finished batch as a part (so a killed run resumes from it),
each finished cell as one atomic file assembled from its batches, the group's
predictions and gallery images once, and the manifest after each of those.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.cards import Cards
from bench.plan import Cell
from bench.store import CellRows, CellState, Manifest, RunStore
from bench.store.manifest import CellStatus
from bench.tasks import BatchDone, CellDone, CellTask, Event, GroupFacts, GroupReady, SweepPlanned, TaskFailed


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class RunResult:
    run_dir: Any
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=dict)  # cell id -> error rows
    unfinished: list[str] = field(default_factory=list)  # cells whose batches could not be assembled
    cache_hits: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unfinished


class Recorder:
    """Writes what the events of a run say, in the order they arrive."""

    def __init__(
        self,
        store: RunStore,
        manifest: Manifest,
        cards: Cards,
        result: RunResult,
        log: Callable[[str], None],
        tick: Callable[[int], None] = lambda n: None,
    ):
        self.store = store
        self.manifest = manifest
        self.cards = cards
        self.result = result
        self.log = log
        self.tick = tick
        self.batches: dict[str, dict[str, CellRows]] = {}  # cell id -> batch key -> rows received this run
        self.recorded: set[tuple[str, str]] = set()
        self.unreadable: dict[str, list[tuple[str, str]]] = {}

    def handle(self, event: Event) -> None:
        if isinstance(event, GroupReady):
            self._group(event.facts)
        elif isinstance(event, SweepPlanned):
            self.manifest.sweeps[event.cell.cell_id] = event.suffixes
            self.store.write_manifest(self.manifest)
        elif isinstance(event, BatchDone):
            self._batch(event)
        elif isinstance(event, CellDone):
            self._cell(event)
        elif isinstance(event, TaskFailed):
            self._failed(event.task, event.message)

    # ------------------------------------------------------------ events

    def _group(self, facts: GroupFacts) -> None:
        """Model quality on exactly the explained images, unreadable samples, predictions, gallery images."""
        key = (facts.dataset, facts.model)
        if key in self.recorded:
            return
        self.recorded.add(key)
        dk, mk = key
        info = facts.quality
        self.manifest.models[f"{dk}/{mk}"] = info
        if facts.skipped:
            self.unreadable[f"{dk}/{mk}"] = facts.skipped
            self.manifest.unreadable_samples[f"{dk}/{mk}"] = [list(s) for s in facts.skipped]
            self.log(f"{dk}/{mk}: skipped {len(facts.skipped)} unreadable sample(s), e.g. {facts.skipped[0][1]}")
        self.store.write_predictions(dk, mk, facts.predictions, {"model_info": info})
        if facts.gallery_images is not None:
            self.store.write_gallery_images(dk, mk, facts.gallery_images)
        self.store.write_models_table(self.manifest.models)
        self.store.write_manifest(self.manifest)
        f1 = f", macro-F1 {info['macro_f1']:.4f}" if "macro_f1" in info else ""
        no_target = f", {info['n_no_target']} without a target" if info.get("n_no_target") else ""
        self.log(
            f"{dk}/{mk}: accuracy {info['accuracy']:.4f}{f1} on {info['n_scored']} of the {info['n']} sampled images "
            f"(target rule: {info['target_rule']}{no_target})"
        )

    def _batch(self, event: BatchDone) -> None:
        if event.rows is not None:
            self.batches.setdefault(event.cell.cell_id, {})[event.key] = event.rows
            if event.persist:
                self.store.write_part(event.cell.cell_id, event.key, event.rows, event.cell.parts_stamp)
        self.tick(1)

    def _cell(self, event: CellDone) -> None:
        cell = event.cell
        if event.reused:
            self.result.reused.append(cell.cell_id)
            return
        received = self.batches.pop(cell.cell_id, {})
        rows = CellRows()
        for key in event.keys:
            part = received[key] if key in received else self.store.parts.read(cell.cell_id, key)
            if part is None:  # a part vanished or was damaged after the task was planned
                self.result.unfinished.append(cell.cell_id)
                self.log(f"warning: {cell.label}: a finished batch could not be read back; rerun to recompute it")
                return
            rows.extend(part)
        self._write(cell, rows, event.seconds, event.oom_backoffs, clear_parts=True)
        self.result.cache_hits += event.cache_hits

    def _failed(self, task: CellTask, message: str) -> None:
        """Error rows for a task that could not run; its finished parts stay for the rerun."""
        self.batches.pop(task.cell.cell_id, None)
        self._write(task.cell, task.failure_rows(message), 0.0, 0, clear_parts=False)

    def _write(self, cell: Cell, rows: CellRows, seconds: float, backoffs: int, clear_parts: bool) -> None:
        errors = rows.count("error")
        state: CellStatus = (
            "error" if errors else ("skipped" if rows.count("skipped") == len(rows) and len(rows) else "done")
        )
        base = cell.explainer.split("@", 1)[0]
        cards = Cards(
            {k: self.cards.metrics[k] for k in cell.metrics},
            {base: self.cards.explainers[base]} if base in self.cards.explainers else {},
        )
        meta = {
            "cell": cell.identity,
            "metrics": cell.metric_identities,
            "dropped_metrics": cell.dropped_metrics,
            "cards": cards.to_json(),
            "status": state,
            "errors": errors,
            "rows": len(rows),
            "seconds": round(seconds, 3),
            "finished": now(),
        }
        digest, size = self.store.write_cell(cell.cell_id, rows, meta)
        if clear_parts:
            self.store.parts.clear(cell.cell_id)
        self.result.computed.append(cell.cell_id)
        if errors:
            self.result.failed[cell.cell_id] = errors
        self.manifest.cells[cell.cell_id] = CellState(
            dataset=cell.dataset,
            model=cell.model,
            explainer=cell.explainer,
            status=state,
            rows=len(rows),
            errors=errors,
            seconds=round(seconds, 3),
            sha256=digest,
            bytes=size,
            oom_backoffs=backoffs,
        )
        self.store.write_manifest(self.manifest)
        note = f", {errors} error rows" if errors else ""
        self.log(f"{cell.label}: {len(rows)} rows in {seconds:.1f} s{note}")


def default_log(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)
