"""Runtime: how long the explainer took per image.

The runner times each ``explain`` call (wall clock on CPU; CUDA events after a
synchronisation on GPU), counts the images that went through the model's
forward and backward passes during it (hooks on the model, not estimates) and
the peak device memory (CUDA), and divides by the batch size; this metric
reports them. Outputs: ``runtime`` (seconds per image),
``runtime.forward_images`` and ``runtime.backward_images`` (model passes per
image, in images), ``runtime.peak_memory_mb`` (per batch; NaN on CPU).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from bench.metrics.base import Metric, MetricInput, Scores
from bench.types import Direction


class Runtime(Metric):
    """Explainer seconds per image (CUDA events on GPU, wall clock on CPU), passes and peak memory."""

    family = "cost"
    units: ClassVar[dict[str, str]] = {"": "seconds", "forward_images": "images", "backward_images": "images",
                                       "peak_memory_mb": "megabytes"}  # fmt: skip

    needs = frozenset({"timing"})
    ranked: ClassVar[bool] = False  # cost: shown beside the quality metrics, not averaged into the mean rank
    outputs: ClassVar[dict[str, Direction]] = {
        "": Direction.LOWER,
        "forward_images": Direction.LOWER,
        "backward_images": Direction.LOWER,
        "peak_memory_mb": Direction.LOWER,
    }

    def score(self, inp: MetricInput) -> Scores:
        if "seconds" not in inp.cost:
            raise RuntimeError("runtime needs the explainer's timing, which the runner did not provide")
        n = len(inp.cost["seconds"])
        values = {
            "": inp.cost["seconds"],
            "forward_images": inp.cost.get("forward_images", torch.full((n,), float("nan"))),
            "backward_images": inp.cost.get("backward_images", torch.full((n,), float("nan"))),
            "peak_memory_mb": inp.cost.get("peak_memory_mb", torch.full((n,), float("nan"))),
        }
        cuda = inp.model.device.type == "cuda"
        reasons = [None if cuda else "peak memory is measured on CUDA devices only"] * n
        return Scores(values={k: v.to(torch.float64) for k, v in values.items()}, reasons=reasons)
