"""Runtime: how long the explainer took per image.

The runner times each ``explain`` call (wall clock on CPU; CUDA events after a
synchronisation on GPU) and divides by the batch size; this metric reports it.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from bench.metrics.base import Metric, MetricInput, Scores
from bench.types import Direction


class Runtime(Metric):
    """Explainer seconds per image (CUDA events on GPU, wall clock on CPU)."""

    needs = frozenset({"timing"})
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.LOWER}

    def score(self, inp: MetricInput) -> Scores:
        if inp.seconds_per_image is None:
            raise RuntimeError("runtime needs the explainer's timing, which the runner did not provide")
        return Scores(values={"": inp.seconds_per_image.to(torch.float64)})
