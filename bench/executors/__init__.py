"""Executors run planned cells and stream back their results: in this process, or on Ray."""

from __future__ import annotations

from bench.executors.base import Executor, WorkerSpec
from bench.executors.local import LocalExecutor

__all__ = ["Executor", "LocalExecutor", "WorkerSpec", "make_executor"]


def make_executor(name: str, spec: WorkerSpec, *, address: str | None = None, workers: int | None = None,
                  retries: int = 2) -> Executor:  # fmt: skip
    """The executor called ``name`` ("local" or "ray")."""
    if name == "ray":
        from bench.executors.ray_ import RayExecutor

        return RayExecutor(spec, address=address, workers=workers, retries=retries)
    return LocalExecutor(spec)
