"""The metric contract: per-sample scores of one batch of attributions."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from bench.cards import CurveCard, MetricCard, OutputCard, params_json
from bench.component import Component
from bench.explainers.base import Explainer
from bench.types import Batch, Direction, ImageShape, LoadedModel, Passes


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

    @property
    def target(self) -> torch.Tensor:
        """The batch's targets (N,): the group sets them on every batch before a metric scores it."""
        target = self.batch.target
        assert target is not None, "the group sets every batch's targets"
        return target


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

    @property
    def value(self) -> torch.Tensor:
        """The main output, ``values[""]``."""
        return self.values[""]


def concat_scores(parts: Sequence[Scores]) -> Scores:
    """The scores of consecutive sub-batches as one: values, curves, reasons and degenerate flags concatenated
    (curves of different widths are padded with NaN)."""
    if len(parts) == 1:
        return parts[0]
    values = {k: torch.cat([p.values[k] for p in parts]) for k in parts[0].values}
    curves = {k: _cat_padded([p.curves[k] for p in parts]) for k in parts[0].curves}
    firsts = [next(iter(p.values.values())) for p in parts]
    reasons = None
    if any(p.reasons is not None for p in parts):
        reasons = [r for p, v in zip(parts, firsts, strict=True) for r in (p.reasons or [None] * len(v))]
    degenerate = None
    if any(p.degenerate is not None for p in parts):
        flags = [
            p.degenerate if p.degenerate is not None else torch.zeros(len(v), dtype=torch.bool, device=v.device)
            for p, v in zip(parts, firsts, strict=True)
        ]
        degenerate = torch.cat(flags)
    return Scores(values=values, curves=curves, reasons=reasons, degenerate=degenerate)


def _cat_padded(curves: Sequence[torch.Tensor]) -> torch.Tensor:
    """(N_i, K_i) curves stacked into (sum N_i, max K_i), shorter ones padded with NaN on the right."""
    width = max(c.shape[1] for c in curves)
    return torch.cat([torch.nn.functional.pad(c, (0, width - c.shape[1]), value=float("nan")) for c in curves])


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

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        """Model passes per image of ``image_shape`` (C, H, W), in images, as ``bench.cost.PassCounter``
        counts them while the metric scores: the estimate `xbench validate` prints. ``explainer`` is the
        cell's, for metrics that explain again (``explanation_passes``). Default: none."""
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


@contextmanager
def naming_samples(ids: Sequence[str]) -> Iterator[None]:
    """ValueErrors raised inside (a metric function refusing its inputs) name the batch's samples, which the
    runner records with the error rows."""
    try:
        yield
    except ValueError as error:
        raise ValueError(f"{error} (samples {', '.join(ids)})") from error


def explanation_passes(explainer: Explainer | None, image_shape: ImageShape) -> Passes:
    """What one more explanation of an image costs: the explainer's passes, or one forward and one
    backward pass (a gradient explainer) when the explainer is not known."""
    return explainer.passes(image_shape) if explainer is not None else Passes(1, 1)


def nan_reasons(
    values: torch.Tensor,
    causes: Sequence[tuple[torch.Tensor, str]] = (),
    otherwise: str = "the model returned a non-finite score",
) -> list[str | None]:
    """Why each NaN in ``values`` (N,) is NaN: the first of ``causes`` (condition (N,) bool, text) that holds
    for the sample, else ``otherwise``; None for the samples that have a value. Every NaN a metric returns
    carries a reason (the runner records it with the row)."""
    undefined = torch.isnan(values).tolist()
    flags = [(mask.tolist(), text) for mask, text in causes]
    reasons: list[str | None] = []
    for i, nan in enumerate(undefined):
        reasons.append(next((text for mask, text in flags if mask[i]), otherwise) if nan else None)
    return reasons


def output_name(metric_key: str, output: str) -> str:
    """The name a metric output has in the results: the metric's key, dotted with the output."""
    return metric_key if output == "" else f"{metric_key}.{output}"
