"""The metric contract: per-sample scores of one batch of attributions."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from bench.cards import CurveCard, MetricCard, OutputCard, params_json
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
    reasons: optional per-sample text saying why a value is NaN, or why a sample is degenerate.
    degenerate: optional (N,) bool: the attribution gives no answer (a constant map, no positive
        evidence). The runner records such samples with status "degenerate" and the value the
        metric's card declares for that output (``Metric.degenerate``), or NaN where it declares none.
    """

    values: dict[str, torch.Tensor]
    curves: dict[str, torch.Tensor] = field(default_factory=dict)
    reasons: list[str | None] | None = None
    degenerate: torch.Tensor | None = None


class Metric(Component):
    """Scores attributions.

    Class-level facts (declared once, summarised into the metric's card):
    ``needs`` names batch fields beyond images and targets ("mask", "timing");
    ``outputs`` maps each output name to the direction in which it improves
    (``directions()`` when params change it); ``family`` says which question the
    metric answers; ``ranked`` is False for descriptive metrics (agreement, cost);
    ``degenerate`` maps an output to what an attribution that gives no answer
    scores (e.g. 0 for a constant map in the pointing game); ``units`` marks cost
    outputs; ``unranked`` names outputs that describe rather than rank (the mean
    rank counts each metric once, by its main output); ``reference`` names the
    implementation the tests compare with.
    """

    needs: ClassVar[frozenset[str]] = frozenset()
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}
    family: ClassVar[str] = "other"
    ranked: ClassVar[bool] = True
    degenerate: ClassVar[dict[str, float]] = {}
    units: ClassVar[dict[str, str]] = {}
    unranked: ClassVar[frozenset[str]] = frozenset()  # outputs that describe rather than rank (ROAD's morf, lerf)
    reference: ClassVar[str] = ""
    curve_axes: ClassVar[dict[str, tuple[str, str]]] = {}  # curve -> (x label, y label); others are not drawn

    def curve_x(self, curve: str) -> tuple[float, ...]:
        """The x position of each point of ``curve`` when the points are not evenly spaced on [0, 1]."""
        return ()

    def directions(self) -> dict[str, Direction]:
        """Output name -> direction for these params (the class's ``outputs`` unless overridden)."""
        return dict(self.outputs)

    def card(self, key: str) -> MetricCard:
        """The immutable facts of this configured metric under the suite id ``key``."""
        outputs = tuple(
            OutputCard(
                column=output_name(key, output),
                higher_is_better=direction.higher_is_better,
                ranked=self.ranked and output not in self.unranked and self.units.get(output, "score") == "score",
                degenerate_value=self.degenerate.get(output),
                unit=self.units.get(output, "score"),
            )
            for output, direction in self.directions().items()
        )
        return MetricCard(
            key=key,
            name=self.name,
            version=self.version,
            params=params_json(self.params),
            family=self.family,
            needs=tuple(sorted(self.needs)),
            outputs=outputs,
            reference=self.reference,
            curves=tuple(
                CurveCard(output_name(key, name), x_label, y_label, tuple(self.curve_x(name)))
                for name, (x_label, y_label) in self.curve_axes.items()
            ),
        )

    def passes(self) -> Passes:
        """Model passes per image (estimate for `xbench validate`)."""
        return Passes(0, 0)

    def no_answer(self, values: dict[str, torch.Tensor], degenerate: torch.Tensor) -> dict[str, torch.Tensor]:
        """``values`` with the declared "no answer" value (``degenerate``; NaN where none is declared)
        in the samples where the (N,) bool ``degenerate`` holds."""
        out = {}
        for output, v in values.items():
            fill = self.degenerate.get(output, float("nan"))
            out[output] = torch.where(degenerate.to(v.device), torch.tensor(fill, dtype=v.dtype, device=v.device), v)
        return out

    @abstractmethod
    def score(self, inp: MetricInput) -> Scores:
        """Per-sample scores for ``inp``; NaN marks a sample for which the score is undefined."""


def output_name(metric_key: str, output: str) -> str:
    """The name a metric output has in the results: the metric's key, dotted with the output."""
    return metric_key if output == "" else f"{metric_key}.{output}"
