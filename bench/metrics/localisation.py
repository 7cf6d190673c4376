"""Localisation: does the attribution land on the ground-truth mask of the target?

Masks are (N, 1, H, W) uint8 with 1 = object, 0 = background and 255 = void;
void pixels are left out of every count by default (``ignore_void``), and
``resolution: original`` scores each image at its original mask size.

Every metric here is bookkeeping on the attribution and the mask (no model
pass), batched over the samples: row sorts, cumulative counts and binary searches
instead of per-threshold or per-pixel loops.

One rule for attributions that give no answer, the same in every metric here: a
map that is constant over the counted pixels (all zero, say) points nowhere. Such
a sample is *degenerate*: it scores the metric's declared "no answer" value (0
for IoU, the IoU sweep, the pointing game, the energy pointing game and relevance
rank accuracy, TorchRay's convention for the pointing game; 0.5, chance, for the
pixel AUROC) with status "degenerate" and the reason, so a failing explainer
cannot win by being left out of the mean. The energy pointing game also counts a
map without positive attribution as degenerate. An empty mask, or a mask without
background for the AUROC, is undefined instead: NaN with the reason.

Implemented:

- ``iou``: IoU of the thresholded attribution with the mask (one threshold rule).
- ``iou_sweep``: the best IoU over a sweep of thresholds, and where it is reached.
- ``pointing_game``: does the attribution's maximum hit the object (Zhang et al. 2016)?
- ``energy_pointing_game``: share of the positive attribution inside the mask
  (Wang et al. 2020, Score-CAM; = relevance mass accuracy of Arras et al. 2022).
- ``relevance_rank_accuracy``: share of the top-|mask| pixels inside the mask (Arras et al. 2022).
- ``pixel_auroc``: ROC-AUC of the attribution as a per-pixel detector of the object.

The computations are the functions of ``bench.functional.localisation`` (built on ``bench.metrics.masks``);
the classes here pair attributions with masks at the chosen resolution and pass their params on.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from bench.component import Params
from bench.explainers.base import Explainer
from bench.functional.localisation import (
    DEFAULT_SWEEP,
    NO_ANSWER,
    energy_pointing_game,
    iou,
    iou_sweep,
    pixel_auroc,
    pointing_game,
    relevance_rank_accuracy,
)
from bench.metrics.base import Metric, MetricInput, Scores, concat_scores
from bench.metrics.masks import ThresholdRule, check_rule_value
from bench.types import Direction, ImageShape, Passes


class ThresholdFields(Params):
    threshold: ThresholdRule = Field(
        "fraction_of_max",
        description="binarisation rule: fraction_of_max (a >= value*max), mean (a > mean), otsu, "
        "topk (top value% of pixels), mask_size (as many top pixels as the mask has)",
    )
    value: float = Field(0.5, description="fraction_of_max: the fraction in [0,1]; topk: the percentage in (0,100]")

    @model_validator(mode="after")
    def _value_range(self) -> ThresholdFields:
        check_rule_value(self.threshold, self.value)
        return self


class MaskFields(Params):
    ignore_void: bool = Field(True, description="leave void pixels (mask value 255) out of the counts")
    resolution: Literal["input", "original"] = Field(
        "input",
        description="input: at the resolution the model saw; original: attribution upsampled (bilinear) to each "
        "image's original size and compared with the original mask (datasets that resize, e.g. VOC)",
    )


def mask_pairs(inp: MetricInput, resolution: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(attribution, mask) pairs to score: the whole batch at input resolution, or one pair per
    sample at its original resolution.

    Raises ValueError naming the samples when there is no mask or when the mask does not have the
    attribution's size (the runner records it as an error for those rows).
    """
    attr, mask, ids = inp.attributions, inp.batch.mask, inp.batch.ids
    if mask is None:
        raise ValueError(f"localisation needs ground-truth masks; samples {', '.join(ids)} have none")
    if resolution == "input" or inp.batch.original_masks is None:
        if tuple(mask.shape) != tuple(attr.shape):
            raise ValueError(
                f"masks of shape {tuple(mask.shape)} do not match the attributions' {tuple(attr.shape)} "
                f"for samples {', '.join(ids)}"
            )
        return [(attr, mask)]
    pairs = []
    for a, m in zip(attr, inp.batch.original_masks, strict=True):
        size = tuple(m.shape[-2:])
        up = F.interpolate(a[None], size=size, mode="bilinear", align_corners=False)
        pairs.append((up, m[None].to(a.device)))
    return pairs


class MaskMetric(Metric):
    """Base of the localisation metrics: pairs attributions with masks (``resolution``) and scores each pair
    with its function of ``bench.functional.localisation`` (``measure``), whose rules make an empty mask NaN
    and a constant map "no answer" (the class's ``degenerate`` value, the function's ``NO_ANSWER``)."""

    family = "localisation"

    Params = MaskFields
    needs = frozenset({"mask"})

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        return Passes(0, 0)  # bookkeeping on the attribution and the mask: no model pass

    def score(self, inp: MetricInput) -> Scores:
        return concat_scores([self.measure(attr, mask) for attr, mask in mask_pairs(inp, self.params.resolution)])

    @abstractmethod
    def measure(self, attributions: torch.Tensor, mask: torch.Tensor) -> Scores:
        """Scores of (N, 1, H, W) attributions against masks of the same shape."""


class IoUParams(ThresholdFields, MaskFields):
    pass


class IoU(MaskMetric):
    """Intersection over union between the thresholded attribution and the target's mask."""

    Params = IoUParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}
    degenerate: ClassVar[dict[str, float]] = {"": NO_ANSWER["iou"]}

    def measure(self, attributions: torch.Tensor, mask: torch.Tensor) -> Scores:
        p = self.params
        return iou(attributions, mask, threshold=p.threshold, value=p.value, ignore_void=p.ignore_void)


class IoUSweepParams(MaskFields):
    rule: Literal["fraction_of_max", "topk"] = Field(
        "fraction_of_max",
        description="what the thresholds are: fraction_of_max (select a >= t*max, t in [0,1]) or topk (select "
        "the top t% of the pixels, t in (0,100]); the same rules, with ties selected, as iou",
    )
    thresholds: tuple[float, ...] = Field(
        DEFAULT_SWEEP,
        min_length=1,
        max_length=1000,
        description="the thresholds swept (sorted ascending; the IoU curve follows this order)",
    )

    @field_validator("thresholds")
    @classmethod
    def _sorted_unique(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(sorted(set(values)))

    @model_validator(mode="after")
    def _in_range(self) -> IoUSweepParams:
        for t in self.thresholds:
            check_rule_value(self.rule, t)
        return self


class IoUSweep(MaskMetric):
    """Best IoU over a sweep of thresholds (fractions of the max, or top percentages), and where it is reached.

    The IoU at every threshold t equals ``iou`` with ``threshold: <rule>, value: t`` (same
    selection rule, ties with the threshold selected), computed for all thresholds at once: the
    valid and the object pixels are sorted once per sample, and the pixels >= each threshold are
    counted by binary search, so the cost does not grow with the number of thresholds beyond
    O(T log P).

    Curves (stored per sample for plots): ``iou_sweep`` = the IoU at every threshold (N, T), in
    ascending threshold order, and ``iou_sweep.threshold`` = the threshold that reaches the best
    IoU (N, 1); when several do, the strictest (the one selecting the fewest pixels: the highest
    fraction, or the lowest percentage). The threshold is a curve, not an output, on purpose: it
    is descriptive (how the map has to be cut to match the object), has no better direction, and
    every output is ranked and enters the leaderboard's mean rank.
    """

    Params = IoUSweepParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}
    degenerate: ClassVar[dict[str, float]] = {"": NO_ANSWER["iou_sweep"]}
    curve_axes: ClassVar[dict[str, tuple[str, str]]] = {"": ("threshold", "IoU")}

    def curve_x(self, curve: str) -> tuple[float, ...]:
        return tuple(self.params.thresholds) if curve == "" else ()

    def measure(self, attributions: torch.Tensor, mask: torch.Tensor) -> Scores:
        p = self.params
        return iou_sweep(attributions, mask, rule=p.rule, thresholds=p.thresholds, ignore_void=p.ignore_void)


class PointingGameParams(MaskFields):
    tolerance: int = Field(
        0,
        ge=0,
        le=1000,
        description="pixels: a hit when an object pixel lies at Euclidean distance < tolerance from a maximum "
        "(TorchRay's rule; 15 reproduces its benchmark); 0 (or 1): the maximum's own pixel must be object",
    )


class PointingGame(MaskMetric):
    """Pointing game (Zhang et al. 2016): 1 when the attribution's maximum lies on the object, else 0.

    The maxima are taken over the counted (non-void) pixels. Ties at the maximum: every maximum
    counts, and the sample is a hit if any of them hits (Quantus' convention). A constant map,
    where every counted pixel is a maximum, would then always hit: it is a miss (0, degenerate)
    instead, as TorchRay counts a map with no maximum.

    ``tolerance`` follows TorchRay (``torchray.benchmark.pointing_game``): a hit when the object
    mask intersects the open disk of radius ``tolerance`` pixels around the point (squared
    distance < tolerance^2); TorchRay's benchmark uses 15. Its tolerance 0 would accept nothing;
    here 0 (as 1) means the maximum's own pixel. Distances are measured at the scored resolution
    (``resolution: original`` for TorchRay's convention on resized datasets); see ``near_object``.
    """

    Params = PointingGameParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}
    degenerate: ClassVar[dict[str, float]] = {"": NO_ANSWER["pointing_game"]}  # a miss, as in TorchRay's protocol
    reference = "quantus.PointingGame"

    def measure(self, attributions: torch.Tensor, mask: torch.Tensor) -> Scores:
        p = self.params
        return pointing_game(attributions, mask, tolerance=p.tolerance, ignore_void=p.ignore_void)


class EnergyPointingGame(MaskMetric):
    """Energy pointing game: the share of the positive attribution that lies inside the object mask.

    Wang et al. 2020 (Score-CAM) sum a non-negative saliency map inside the bounding box and
    divide by its total; Arras et al. 2022 (CLEVR-XAI) call the same ratio relevance mass
    accuracy and keep only positive relevance. Here: sum(max(a, 0) * object) / sum(max(a, 0)) over
    the counted pixels, in float64. It equals quantus.RelevanceMassAccuracy (abs=False,
    normalise=False) on max(a, 0), and quantus.AttributionLocalisation (positive_attributions=True,
    abs=False, normalise=False) up to that one's +1e-9 in the denominator. Quantus'
    RelevanceMassAccuracy on raw signed maps differs (negative mass outside the mask can push it
    above 1). A map without positive attribution (e.g. all zero) gives no answer: 0, degenerate.
    """

    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}
    degenerate: ClassVar[dict[str, float]] = {"": NO_ANSWER["energy_pointing_game"]}
    reference = "quantus.RelevanceMassAccuracy"

    def measure(self, attributions: torch.Tensor, mask: torch.Tensor) -> Scores:
        return energy_pointing_game(attributions, mask, ignore_void=self.params.ignore_void)


class RelevanceRankAccuracy(MaskMetric):
    """Relevance rank accuracy (Arras et al. 2022): share of the top-K pixels inside the mask, K = |mask|.

    Pixels are ranked by attribution among the counted (non-void) pixels. Ties across the K-th
    place are resolved by expectation over a random order: the pixels strictly above the K-th
    value count fully, and the remaining places are shared among the pixels tied with it in
    proportion to how many of them are object, so the result does not depend on pixel
    positions. A constant map gives no answer (0, degenerate), as in every localisation metric.
    Without ties this equals quantus.RelevanceRankAccuracy (whose ties follow numpy's unstable argsort).
    """

    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}
    degenerate: ClassVar[dict[str, float]] = {"": NO_ANSWER["relevance_rank_accuracy"]}
    reference = "quantus.RelevanceRankAccuracy"

    def measure(self, attributions: torch.Tensor, mask: torch.Tensor) -> Scores:
        return relevance_rank_accuracy(attributions, mask, ignore_void=self.params.ignore_void)


class PixelAUROC(MaskMetric):
    """ROC-AUC of the attribution as a per-pixel score of object (positive) vs background (negative).

    The Mann-Whitney form with ties counting one half, which is what sklearn.metrics.roc_auc_score
    (average ranks) and quantus.AUC (trapezoid over roc_curve) give: the share of (object,
    background) pairs where the object pixel scores higher, ties counting 1/2. Batched without
    per-pixel search: the values become order-preserving integer keys with a free lowest bit that
    breaks ties, sorted once with positives before their tied negatives and once after them; a
    positive at sorted position i has i - (positives before it) negatives before it, so the sum of
    the positives' positions gives "negatives below" and "negatives below or tied", whose mean is
    the tie-aware count. Exact (integer counts). Void pixels are left out (sorted last). A constant
    map gives no answer: 0.5 (chance, what the AUROC of a constant score is), degenerate; the true
    mask scores 1. A mask without background is NaN with a reason.
    """

    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}
    degenerate: ClassVar[dict[str, float]] = {"": NO_ANSWER["pixel_auroc"]}
    reference = "quantus.AUC"

    def measure(self, attributions: torch.Tensor, mask: torch.Tensor) -> Scores:
        return pixel_auroc(attributions, mask, ignore_void=self.params.ignore_void)
