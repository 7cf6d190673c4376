"""The metric contract: per-sample scores of one batch of attributions."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from bench.component import Component
from bench.explainers.base import Explainer
from bench.types import Batch, Direction, LoadedModel, Passes


@dataclass
class MetricInput:
    """Everything a metric may look at for one batch.

    attributions: (N, 1, H, W) float32, finite, on the model's device.
    seeds: one seed per sample; metrics draw their random numbers from them.
    explainer: the cell's (prepared) explainer, for metrics that explain again:
        ``explainer.explain(model, x, target, seeds)`` on perturbed inputs
        (stability) or on a randomised copy of the model (sanity checks).
    cost: per-image cost of the explanation measured by the runner:
        "seconds", "forward_images" and "backward_images" (model passes counted,
        in images), "peak_memory_mb" (device memory, CUDA only): (N,) tensors.
    """

    model: LoadedModel
    batch: Batch
    attributions: torch.Tensor
    seeds: Sequence[int]
    explainer: Explainer | None = None
    cost: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def seconds_per_image(self) -> torch.Tensor | None:
        return self.cost.get("seconds")


@dataclass
class Scores:
    """What a metric returns.

    values: per-sample (N,) scores by output name ("" = the main value).
    curves: optional per-sample curves (N, K) by name, e.g. a deletion curve, for plots.
    reasons: optional per-sample text saying why a value is NaN (e.g. "empty mask").
    """

    values: dict[str, torch.Tensor]
    curves: dict[str, torch.Tensor] = field(default_factory=dict)
    reasons: list[str | None] | None = None


class Metric(Component):
    """Scores attributions. ``needs`` names batch fields beyond images and targets ("mask",
    "timing"); ``outputs`` maps each output name to the direction in which it improves."""

    needs: ClassVar[frozenset[str]] = frozenset()
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}
    ranked: ClassVar[bool] = True  # False: descriptive (agreement, cost); shown but not in the mean rank

    def passes(self) -> Passes:
        """Model passes per image (estimate for `xbench validate`)."""
        return Passes(0, 0)

    @abstractmethod
    def score(self, inp: MetricInput) -> Scores:
        """Per-sample scores for ``inp``; NaN marks a sample for which the score is undefined."""


def output_name(metric_key: str, output: str) -> str:
    """The name a metric output has in the results: the metric's key, dotted with the output."""
    return metric_key if output == "" else f"{metric_key}.{output}"
