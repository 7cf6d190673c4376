"""How a worker survives what goes wrong inside a cell: errors as one-line text, timing that
means the same on CPU and GPU, and out-of-memory back-off."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from bench.errors import XbenchError

T = TypeVar("T")


def error_text(exc: BaseException) -> str:
    """One line: the error and where it happened."""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    place = f" (at {Path(frame.filename).name}:{frame.lineno})" if frame else ""
    text = exc.render() if isinstance(exc, XbenchError) else f"{type(exc).__name__}: {exc}"
    return text + place


def timed(fn: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """Run ``fn`` and return (result, seconds): CUDA events around it on GPU, wall clock on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize(device)
        return out, start.elapsed_time(end) / 1000.0
    begin = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - begin


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


class Backoff:
    """Runs ``fn(positions)`` on all positions; on out-of-memory, on halves (recursively), joined.
    Results are batch invariant, so halving changes the cost, never the numbers. ``halvings``
    counts how often a batch was split (recorded in the manifest)."""

    def __init__(self) -> None:
        self.halvings = 0

    def __call__(self, fn: Callable[[list[int]], Any], n: int, join: Callable[[list[Any]], Any]) -> Any:
        def attempt(positions: list[int]) -> Any:
            try:
                return fn(positions)
            except Exception as exc:
                if not is_oom(exc) or len(positions) == 1:
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.halvings += 1
                half = len(positions) // 2
                return join([attempt(positions[:half]), attempt(positions[half:])])

        return attempt(list(range(n)))


def with_backoff(fn: Callable[[list[int]], Any], n: int, join: Callable[[list[Any]], Any]) -> Any:
    """``Backoff()(fn, n, join)`` for callers that do not count the halvings."""
    return Backoff()(fn, n, join)
