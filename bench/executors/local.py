"""`--executor local` (default): cells one after another in this process, models loaded once."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from bench.config import Suite
from bench.executors.base import Executor, WorkerSpec
from bench.plan import Cell
from bench.work import WorkResult


class LocalExecutor(Executor):
    def __init__(self, spec: WorkerSpec, suite: Suite | None = None, log: Callable[[str], None] = print):
        self.spec = spec
        self.suite = suite
        self.log = log

    def run(
        self, cells: list[Cell], tick: Callable[[int], None], complete: Callable[[Cell], bool]
    ) -> Iterator[WorkResult]:
        worker = self.spec.worker(self.suite, self.log)
        for cell in cells:  # grouped by (dataset, model) by the planner, so each model loads once
            yield worker.run(cell, lambda: tick(1), complete)
