"""The metric contract: per-sample scores of one batch of attributions."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from bench.component import Component
from bench.types import Batch, Direction, LoadedModel, Passes


@dataclass
class MetricInput:
    """Everything a metric may look at for one batch.

    attributions: (N, 1, H, W) float32, finite, on the model's device.
    seconds_per_image: (N,) explainer time per image (for runtime metrics).
    seeds: one seed per sample; metrics draw their random numbers from them.
    explain: re-runs the cell's explainer (for stability metrics): (x, target, seeds) -> attributions.
    """

    model: LoadedModel
    batch: Batch
    attributions: torch.Tensor
    seeds: Sequence[int]
    seconds_per_image: torch.Tensor | None = None
    explain: object | None = None


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

    def passes(self) -> Passes:
        """Model passes per image (estimate for `xbench validate`)."""
        return Passes(0, 0)

    @abstractmethod
    def score(self, inp: MetricInput) -> Scores:
        """Per-sample scores for ``inp``; NaN marks a sample for which the score is undefined."""


def output_name(metric_key: str, output: str) -> str:
    """The name a metric output has in the results: the metric's key, dotted with the output."""
    return metric_key if output == "" else f"{metric_key}.{output}"
