"""What one model pass costs on this machine: the numbers `xbench validate` turns pass counts into time.

For a (model, image shape, device, threads, torch version), the seconds per image of a forward pass
and of the backward pass that follows it are measured on a small batch of random images (medians of
a few repetitions after a warm-up) and kept in ``$XBENCH_CACHE/calibration.json``, so later validations
read them instead of measuring again. A model that would have to be trained first is not loaded: its
cells get no time until a run has trained (and cached) it.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from bench import atomic
from bench.seeding import short_digest

BATCH = 8
REPEATS = 3


@dataclass(frozen=True)
class PassTiming:
    """Seconds per image of a forward pass, and of the backward pass after it."""

    forward: float
    backward: float
    batch: int
    measured: str

    def seconds(self, forward_images: float, backward_images: float) -> float:
        return forward_images * self.forward + backward_images * self.backward


def calibration_key(model_identity: Any, shape: tuple[int, int, int], device: torch.device) -> str:
    return short_digest([model_identity, list(shape), device.type, torch.get_num_threads(), torch.__version__], 16)


def _path() -> Path:
    from bench.models.base import cache_root

    return cache_root() / "calibration.json"


def cached(key: str) -> PassTiming | None:
    try:
        entry = json.loads(_path().read_text()).get(key)
    except (OSError, ValueError):
        return None
    return PassTiming(**entry) if entry else None


def store(key: str, timing: PassTiming) -> None:
    path = _path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_suffix(".lock"), thread_local=False):
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
        table[key] = asdict(timing)
        atomic.write_json(path, table)


def _median_seconds(fn: Any) -> float:
    fn()  # warm-up: lazy initialisation, allocator
    times = []
    for _ in range(REPEATS):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def measure(module: torch.nn.Module, shape: tuple[int, int, int], device: torch.device) -> PassTiming:
    """Forward and backward seconds per image of ``module`` on random images of ``shape``."""
    x = torch.rand(BATCH, *shape, device=device, generator=None)

    def forward() -> None:
        with torch.no_grad():
            module(x)

    def forward_backward() -> None:
        inputs = x.clone().requires_grad_(True)
        out = module(inputs)
        out[:, 0].sum().backward()

    f = _median_seconds(forward)
    fb = _median_seconds(forward_backward)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    return PassTiming(forward=f / BATCH, backward=max(fb - f, 0.0) / BATCH, batch=BATCH, measured=stamp)


def pass_timing(source: Any, dataset: Any, shape: tuple[int, int, int], device: torch.device) -> PassTiming | None:
    """The cached calibration of (``source``'s model, ``shape``), or a fresh one; None when the model is not
    available without training or downloading (then nothing is loaded for long)."""
    from bench.errors import XbenchError
    from bench.models.base import ModelContext, TrainingRequired

    key = calibration_key(source.identity(), shape, device)
    found = cached(key)
    if found is not None:
        return found
    try:
        source.check(dataset)
        model = source.load(ModelContext(dataset=dataset, device=device, log=lambda _: None, allow_training=False))
    except (TrainingRequired, XbenchError, OSError):
        return None
    timing = measure(model.module, shape, device)
    store(key, timing)
    return timing
