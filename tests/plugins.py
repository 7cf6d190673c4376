"""Explainers that misbehave on purpose, for the runner's fault tests."""

from __future__ import annotations

import os
import time

from bench.explainers.base import Explainer
from bench.registry import EXPLAINERS
from bench.seeding import per_sample_rand


def _register(name: str):
    def decorate(cls):
        if name not in EXPLAINERS:
            EXPLAINERS.register(name)(cls)
        return EXPLAINERS.get(name)

    return decorate


@_register("test_fails_second_batch")
class FailsOnSecondBatch(Explainer):
    """Raises on its second call (the second batch of a cell when warm-up is off)."""

    def __init__(self, params=None):
        super().__init__(params)
        self.calls = 0

    def attribute(self, model, x, target, seeds):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("boom in batch 2")
        return x.mean(1, keepdim=True)


@_register("test_nan_first")
class NaNOnFirstSample(Explainer):
    """Returns NaN for the first image of every batch."""

    def attribute(self, model, x, target, seeds):
        out = x.mean(1, keepdim=True).clone()
        out[0] = float("nan")
        return out


@_register("test_slow")
class Slow(Explainer):
    """Sleeps 0.25 s per batch: makes a run slow enough to be killed mid-way."""

    def attribute(self, model, x, target, seeds):
        time.sleep(0.25)
        return per_sample_rand(seeds, (1, *x.shape[-2:]), "slow")


def _log_call(tag: str, n: int) -> None:
    """Append a line per call to $XBENCH_TEST_CALLS (when set): tests count explainer calls across processes."""
    path = os.environ.get("XBENCH_TEST_CALLS")
    if path:
        with open(path, "a") as fh:
            fh.write(f"{tag} {n}\n")


@_register("test_counted")
class Counted(Explainer):
    """Image mean, logging each call: lets tests see which batches were really explained."""

    def attribute(self, model, x, target, seeds):
        _log_call("counted", len(x))
        time.sleep(float(os.environ.get("XBENCH_TEST_SLEEP", "0")))
        return x.mean(1, keepdim=True) + per_sample_rand(seeds, (1, *x.shape[-2:]), "counted") * 1e-3


@_register("test_oom_above_2")
class OOMAboveTwo(Explainer):
    """Pretends to run out of memory on batches of more than two images (to test the back-off)."""

    def attribute(self, model, x, target, seeds):
        if len(x) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return x.mean(1, keepdim=True) + per_sample_rand(seeds, (1, *x.shape[-2:]), "oom") * 1e-3


@_register("test_dies_once")
class DiesOnce(Explainer):
    """Kills its own process the first time it runs (a marker file remembers): a dying worker."""

    def attribute(self, model, x, target, seeds):
        marker = os.environ.get("XBENCH_TEST_DIE_MARKER")
        if marker and not os.path.exists(marker):
            with open(marker, "w") as fh:
                fh.write("died\n")
            os._exit(1)
        return x.mean(1, keepdim=True)
