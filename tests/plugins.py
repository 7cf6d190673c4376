"""Explainers that misbehave on purpose, for the runner's fault tests."""

from __future__ import annotations

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
