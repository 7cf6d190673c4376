"""The executor interface: cell tasks in, events out (in the order each task emits them).

An executor runs tasks somewhere (this process, Ray workers) and yields their
events to the driver, which writes them. It never writes the run directory. The
runner treats every executor alike: ``run`` yields events, ``stop`` asks for a
clean stop (between batches where it can, abandoning the batch in flight where it
cannot), ``close`` releases what the executor started.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from bench.tasks import CellTask, Event


class Executor(ABC):
    @abstractmethod
    def run(self, tasks: list[CellTask]) -> Iterator[Event]:
        """Run ``tasks`` and yield their events as they happen."""

    @abstractmethod
    def stop(self) -> None:
        """Stop as soon as it is safe: no new task starts; a running task ends after its batch."""

    def close(self) -> None:  # noqa: B027 - optional hook: most executors hold nothing
        """Release resources (a Ray cluster started for this run)."""
