"""`--executor local` (default): tasks one after another in this process, models loaded once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from bench.executors.base import Executor
from bench.tasks import CellTask, Event
from bench.work import Worker, run_task


class LocalExecutor(Executor):
    def __init__(self, cache_root: Path | None, log: Callable[[str], None] = print):
        self.stopping = False
        self.worker = Worker(cache_root, log=log, should_stop=lambda: self.stopping)

    def run(self, tasks: list[CellTask]) -> Iterator[Event]:
        for task in tasks:  # grouped by (dataset, model) by the planner, so each model loads once
            if self.stopping:
                return
            yield from run_task(self.worker, task)

    def stop(self) -> None:
        self.stopping = True
