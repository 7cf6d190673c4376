"""Executors run cell tasks and stream back their events: in this process, or on Ray."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench.executors.base import Executor
from bench.executors.local import LocalExecutor

__all__ = ["Executor", "LocalExecutor", "make_executor"]


def make_executor(
    name: str,
    *,
    cache_root: Path | None,
    log: Callable[[str], None] = print,
    address: str | None = None,
    workers: int | None = None,
    retries: int = 2,
    device: str = "cpu",
) -> Executor:
    """The executor called ``name`` ("local" or "ray")."""
    if name == "ray":
        from bench.executors.ray_ import RayExecutor

        return RayExecutor(
            cache_root=cache_root, log=log, address=address, workers=workers, retries=retries, device=device
        )
    return LocalExecutor(cache_root, log)
