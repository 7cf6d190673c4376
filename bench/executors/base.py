"""What every executor gets: enough to build a Worker anywhere (also in another process)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.cell import CellSettings
from bench.config import Suite, load_suite
from bench.plan import Cell
from bench.work import Worker, WorkResult


@dataclass(frozen=True)
class WorkerSpec:
    """A picklable recipe for a Worker: the suite file's text (re-validated where it runs) and settings."""

    suite_path: str
    suite_text: str
    run_dir: str
    run_id: str
    device: str
    precision: str
    warmup: bool
    seed: int
    cache_root: str | None
    gallery_size: int
    force: bool

    def worker(
        self, suite: Suite | None = None, log: Callable[[str], None] = print, device: str | None = None
    ) -> Worker:
        suite = suite or _suite_from_text(self.suite_path, self.suite_text)
        settings = CellSettings(
            suite_name=suite.name,
            run_id=self.run_id,
            seed=self.seed,
            device=torch.device(device or self.device),
            warmup=self.warmup,
            precision=self.precision,
        )
        cache = Path(self.cache_root) if self.cache_root else None
        return Worker(suite, settings, Path(self.run_dir), cache_root=cache, gallery_size=self.gallery_size,
                      force=self.force, log=log)  # fmt: skip


def _suite_from_text(path: str, text: str) -> Suite:
    """Validate the suite again from its text (a worker may not see the driver's files)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / Path(path).name
        copy.write_text(text, encoding="utf-8")
        suite = load_suite(copy)
    suite.path = Path(path)
    return suite


class Executor(ABC):
    @abstractmethod
    def run(
        self, cells: list[Cell], tick: Callable[[int], None], complete: Callable[[Cell], bool]
    ) -> Iterator[WorkResult]:
        """Run ``cells`` and yield their results as they finish (any order)."""

    def close(self) -> None:  # noqa: B027 - optional hook: most executors hold nothing
        """Release resources (a Ray cluster started for this run)."""
