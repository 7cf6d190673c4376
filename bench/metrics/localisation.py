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
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from bench.component import Params
from bench.metrics.base import Metric, MetricInput, Scores
from bench.types import VOID, Direction, Passes

ThresholdRule = Literal["fraction_of_max", "mean", "otsu", "topk", "mask_size"]


class ThresholdFields(Params):
    threshold: ThresholdRule = Field(
        "fraction_of_max",
        description="binarisation rule: fraction_of_max (a >= value*max), mean (a > mean), otsu, "
        "topk (top value% of pixels), mask_size (as many top pixels as the mask has)",
    )
    value: float = Field(0.5, description="fraction_of_max: the fraction in [0,1]; topk: the percentage in (0,100]")

    @model_validator(mode="after")
    def _value_range(self) -> ThresholdFields:
        _check_rule_value(self.threshold, self.value)
        return self


def _check_rule_value(rule: str, value: float) -> None:
    """Raise ValueError when ``value`` is out of range for the threshold ``rule``."""
    if rule == "fraction_of_max" and not 0 <= value <= 1:
        raise ValueError("value must be in [0, 1] for threshold fraction_of_max")
    if rule == "topk" and not 0 < value <= 100:
        raise ValueError("value must be a percentage in (0, 100] for threshold topk")


def split_mask(mask: torch.Tensor, ignore_void: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(object pixels, counted pixels) as bool tensors of the mask's shape."""
    obj = mask == 1
    valid = mask != VOID if ignore_void else torch.ones_like(obj)
    return obj & valid, valid


def _valid_values(attr: torch.Tensor, valid: torch.Tensor, fill: float) -> torch.Tensor:
    """(N, P) attributions with the pixels that do not count replaced by ``fill`` (+-inf)."""
    return attr.flatten(1).masked_fill(~valid.flatten(1), fill)


def sort_rows(t: torch.Tensor) -> torch.Tensor:
    """Every row of a 2-D tensor sorted ascending (values only), on the tensor's device.

    On the CPU this is numpy's vectorised sort: torch's CPU sort always sorts indices along and
    is about 20x slower on attribution-sized rows (3.0 s against 0.14 s for 256 x 224^2 floats
    on one core), which would dominate every sort-based metric. On accelerators: torch.sort.
    """
    if t.device.type == "cpu":
        return torch.from_numpy(np.sort(t.detach().numpy(), axis=1))
    return t.sort(dim=1).values


def _kth_largest(attr: torch.Tensor, valid: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per-sample k-th largest attribution over valid pixels, for k of shape (N,) or (N, T), k >= 1."""
    ascending = sort_rows(_valid_values(attr, valid, float("-inf")))
    index = (ascending.shape[1] - k.clamp(min=1)).reshape(k.shape[0], -1)
    return ascending.gather(1, index).reshape(k.shape)


def _fraction_of_max(peak: torch.Tensor, fraction: torch.Tensor | float) -> torch.Tensor:
    """The fraction_of_max threshold ``fraction * peak``; the peak itself when the peak is not positive
    (so that a map without positive values still selects its maximum)."""
    return torch.where(peak > 0, fraction * peak, peak)


def _topk_count(n_valid: torch.Tensor, percent: torch.Tensor | float) -> torch.Tensor:
    """Pixels that the topk rule asks for: ceil(percent% of the valid pixels)."""
    return torch.ceil(n_valid.double() * percent / 100.0).long()


def _otsu(attr: torch.Tensor, valid: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Per-sample Otsu threshold over valid pixels (between-class variance maximised): (N,)."""
    flat, keep = attr.flatten(1), valid.flatten(1)
    lo = _valid_values(attr, valid, float("inf")).amin(1, keepdim=True)
    hi = _valid_values(attr, valid, float("-inf")).amax(1, keepdim=True)
    span = (hi - lo).clamp(min=torch.finfo(flat.dtype).tiny)
    idx = ((flat - lo) / span * (bins - 1)).round().long().clamp(0, bins - 1)
    hist = torch.zeros(flat.shape[0], bins, device=flat.device).scatter_add_(1, idx, keep.float())
    prob = hist / hist.sum(1, keepdim=True).clamp(min=1)
    centres = torch.arange(bins, device=flat.device, dtype=torch.float32)
    omega = prob.cumsum(1)
    mu = (prob * centres).cumsum(1)
    between = (mu[:, -1:] * omega - mu) ** 2 / (omega * (1 - omega)).clamp(min=1e-12)
    best = between.argmax(1).float()  # last bin index of the "below" class
    return lo.squeeze(1) + (best + 0.5) / (bins - 1) * span.squeeze(1)


def constant_maps(attr: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the attribution takes a single value over the counted pixels (it points nowhere)."""
    return _valid_values(attr, valid, float("inf")).amin(1) == _valid_values(attr, valid, float("-inf")).amax(1)


def binarise(attr: torch.Tensor, obj: torch.Tensor, valid: torch.Tensor, rule: str, value: float) -> torch.Tensor:
    """Pixels selected by the threshold rule: bool (N, 1, H, W), only valid pixels.

    Ties with the threshold are selected (all pixels tied at the cut go together,
    never an arbitrary subset). A constant map selects nothing: it has no answer to
    give, and selecting every pixel would score the mask's area as if it were one.
    """
    flat = attr.flatten(1)
    keep = valid.flatten(1)
    peak = _valid_values(attr, valid, float("-inf")).amax(1)
    if rule == "fraction_of_max":
        thr = _fraction_of_max(peak, value)
    elif rule == "mean":
        thr = (flat * keep).sum(1) / keep.sum(1).clamp(min=1)
    elif rule == "otsu":
        thr = _otsu(attr, valid)
    else:  # topk: a percentage of the valid pixels; mask_size: as many pixels as the mask has
        k = _topk_count(keep.sum(1), value) if rule == "topk" else obj.flatten(1).sum(1)
        thr = _kth_largest(attr, valid, k.clamp(min=1))
    thr = torch.minimum(thr, peak)  # never select nothing: at least the peak pixels
    selected = (flat >= thr[:, None]) & keep & ~constant_maps(attr, valid)[:, None]
    return selected.view_as(attr)


def iou_from_counts(inter: torch.Tensor, selected: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    """IoU from pixel counts: |S & O| / |S | O| with |S | O| = |S| + |O| - |S & O| (0 when both are empty)."""
    union = selected + objects - inter
    return inter.float() / union.clamp(min=1).float()


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


def undefined(
    values: dict[str, torch.Tensor],
    rules: Sequence[tuple[torch.Tensor, str]],
    curves: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str | None]]:
    """NaN in every output and curve of the samples where a rule's (N,) condition holds, with the
    first such rule's text as the per-sample reason (rules in order of precedence)."""
    n = next(iter(values.values())).shape[0]
    nan = torch.zeros(n, dtype=torch.bool, device=next(iter(values.values())).device)
    reasons: list[str | None] = [None] * n
    for condition, reason in rules:
        for i in (condition & ~nan).nonzero().flatten().tolist():
            reasons[i] = reason
        nan = nan | condition
    out = {k: torch.where(nan, torch.nan, v) for k, v in values.items()}
    out_curves = {k: torch.where(nan[:, None], torch.nan, c) for k, c in (curves or {}).items()}
    return out, out_curves, reasons


@dataclass
class MapScores:
    """Per-sample scores of one (attribution, mask) pair before the common edge cases are applied.

    undefined: (condition (N,) bool, reason) pairs: NaN with that reason where the condition holds.
    no_answer: (condition, reason) pairs beyond the common constant-map rule that make a sample
        degenerate (the energy pointing game's "no positive attribution").
    """

    values: dict[str, torch.Tensor]
    undefined: list[tuple[torch.Tensor, str]] = field(default_factory=list)
    curves: dict[str, torch.Tensor] = field(default_factory=dict)
    no_answer: list[tuple[torch.Tensor, str]] = field(default_factory=list)


CONSTANT_MAP = "constant attribution: the map points nowhere (scored as no answer)"


class MaskMetric(Metric):
    """Base of the localisation metrics: pairs attributions with masks (``resolution``), splits the
    masks into object and counted pixels (``ignore_void``), and turns an empty mask and the
    subclass's undefined cases into NaN with a reason. Subclasses implement ``score_maps``."""

    family = "localisation"

    Params = MaskFields
    needs = frozenset({"mask"})

    def passes(self) -> Passes:
        return Passes(0, 0)  # bookkeeping on the attribution and the mask: no model pass

    def score(self, inp: MetricInput) -> Scores:
        values: dict[str, list[torch.Tensor]] = {}
        curves: dict[str, list[torch.Tensor]] = {}
        reasons: list[str | None] = []
        degenerate: list[torch.Tensor] = []
        for attr, mask in mask_pairs(inp, self.params.resolution):
            obj, valid = split_mask(mask, self.params.ignore_void)
            part = self.score_maps(attr, obj, valid)
            rules = [(~obj.flatten(1).any(1), "empty mask"), *part.undefined]
            part_values, part_curves, part_reasons = undefined(part.values, rules, part.curves)
            undefined_any = torch.stack([condition for condition, _ in rules]).any(0)
            flagged = torch.zeros_like(undefined_any)
            for condition, reason in [(constant_maps(attr, valid), CONSTANT_MAP), *part.no_answer]:
                for i in (condition & ~flagged & ~undefined_any).nonzero().flatten().tolist():
                    part_reasons[i] = reason
                flagged = flagged | (condition & ~undefined_any)
            part_values = self.no_answer(part_values, flagged)
            part_curves = {k: torch.where(flagged[:, None], torch.nan, c) for k, c in part_curves.items()}
            for k, v in part_values.items():
                values.setdefault(k, []).append(v)
            for k, c in part_curves.items():
                curves.setdefault(k, []).append(c)
            reasons += part_reasons
            degenerate.append(flagged)
        return Scores(
            values={k: torch.cat(v) for k, v in values.items()},
            curves={k: torch.cat(c) for k, c in curves.items()},
            reasons=reasons,
            degenerate=torch.cat(degenerate),
        )

    @abstractmethod
    def score_maps(self, attr: torch.Tensor, obj: torch.Tensor, valid: torch.Tensor) -> MapScores:
        """Scores of (N, 1, H, W) attributions against object and counted (valid) pixel masks."""


class IoUParams(ThresholdFields, MaskFields):
    pass


class IoU(MaskMetric):
    """Intersection over union between the thresholded attribution and the target's mask."""

    Params = IoUParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}
    degenerate: ClassVar[dict[str, float]] = {"": 0.0}

    def score_maps(self, attr: torch.Tensor, obj: torch.Tensor, valid: torch.Tensor) -> MapScores:
        p = self.params
        selected = binarise(attr, obj, valid, p.threshold, p.value).flatten(1)
        objects = obj.flatten(1)
        iou = iou_from_counts((selected & objects).sum(1), selected.sum(1), objects.sum(1))
        return MapScores(values={"": iou})


DEFAULT_SWEEP = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05, 0.10, ..., 0.95


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
            _check_rule_value(self.rule, t)
        return self


def _count_at_least(ascending: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """How many entries of each row of ``ascending`` (N, P) are >= each of its thresholds (N, T)."""
    return ascending.shape[1] - torch.searchsorted(ascending, thresholds.contiguous(), side="left")


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
    degenerate: ClassVar[dict[str, float]] = {"": 0.0}
    curve_axes: ClassVar[dict[str, tuple[str, str]]] = {"": ("threshold", "IoU")}

    def curve_x(self, curve: str) -> tuple[float, ...]:
        return tuple(self.params.thresholds) if curve == "" else ()

    def score_maps(self, attr: torch.Tensor, obj: torch.Tensor, valid: torch.Tensor) -> MapScores:
        p = self.params
        ts = torch.tensor(p.thresholds, dtype=torch.float64, device=attr.device)  # exact, as iou's Python floats
        all_valid = sort_rows(_valid_values(attr, valid, float("-inf")))  # ascending, non-counted first
        objects = sort_rows(_valid_values(attr, obj, float("-inf")))
        peak = all_valid[:, -1:]
        if p.rule == "fraction_of_max":
            thr = _fraction_of_max(peak, ts[None].to(attr.dtype))
        else:
            k = _topk_count(valid.flatten(1).sum(1, keepdim=True), ts[None]).clamp(min=1)
            thr = all_valid.gather(1, all_valid.shape[1] - k)  # the k-th largest
        thr = torch.minimum(thr, peak)  # never select nothing: at least the peak pixels
        selected, inter = _count_at_least(all_valid, thr), _count_at_least(objects, thr)
        iou = iou_from_counts(inter, selected, obj.flatten(1).sum(1, keepdim=True))
        strict_first = torch.arange(len(ts), device=ts.device)
        if p.rule == "fraction_of_max":
            strict_first = strict_first.flip(0)  # the highest fraction selects the fewest pixels
        best = iou[:, strict_first].argmax(1)  # argmax returns the first maximum: the strictest cut
        threshold = ts[strict_first][best][:, None]
        return MapScores(values={"": iou.amax(1)}, curves={"": iou, "threshold": threshold})


def near_object(points: torch.Tensor, obj: torch.Tensor, tolerance: int, chunk: int = 1 << 20) -> torch.Tensor:
    """(N,) bool: does some point of ``points`` (N, 1, H, W) lie at squared distance < tolerance^2
    from an object pixel of ``obj`` (N, 1, H, W)?

    Exact and cheap for any tolerance: the horizontal distance from every pixel to the nearest
    object pixel in its row comes from two cumulative max/min passes (O(H W)); the squared distance
    from a point to the object is then the minimum over the rows within reach of dy^2 + dx^2 at
    the point's column, gathered for the points only, ``chunk`` gathered values at a time. (A
    disk convolution costs (2 tolerance)^2 per pixel: 7 s for 256 images of 224^2 at tolerance 15 on one core.)
    """
    n, _, h, w = obj.shape
    reach, far = tolerance - 1, h + w + tolerance  # rows within reach; "far" exceeds any tolerance
    o = obj[:, 0]
    cols = torch.arange(w, device=obj.device)
    left = torch.where(o, cols, -far).cummax(-1).values  # nearest object column at or left of x
    right = torch.where(o, cols, w + far).flip(-1).cummin(-1).values.flip(-1)  # ... at or right of x
    dx = torch.minimum(cols - left, right - cols)  # (N, H, W)
    where = points[:, 0].nonzero()  # (M, 3): sample, row, column
    dy = torch.arange(-reach, reach + 1, device=obj.device)
    hits = torch.zeros(n, dtype=torch.long, device=obj.device)
    for part in where.split(max(1, chunk // len(dy))):
        sample, row, col = part.unbind(1)
        rows = row[:, None] + dy[None]  # (m, 2 reach + 1)
        inside = (rows >= 0) & (rows < h)
        dist = dy[None] ** 2 + dx[sample[:, None], rows.clamp(0, h - 1), col[:, None]] ** 2
        hit = ((dist < tolerance**2) & inside).any(1)
        hits.index_add_(0, sample, hit.long())
    return hits > 0


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
    degenerate: ClassVar[dict[str, float]] = {"": 0.0}  # a miss, as in TorchRay's protocol

    def score_maps(self, attr: torch.Tensor, obj: torch.Tensor, valid: torch.Tensor) -> MapScores:
        values = _valid_values(attr, valid, float("-inf"))
        keep = valid.flatten(1)
        maxima = (values == values.amax(1, keepdim=True)) & keep
        if self.params.tolerance <= 1:
            hit = (maxima & obj.flatten(1)).any(1)
        else:
            hit = near_object(maxima.view_as(attr), obj, self.params.tolerance)
        return MapScores(values={"": hit.float()})


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
    degenerate: ClassVar[dict[str, float]] = {"": 0.0}

    def score_maps(self, attr: torch.Tensor, obj: torch.Tensor, valid: torch.Tensor) -> MapScores:
        positive = attr.flatten(1).clamp(min=0)
        total = (positive * valid.flatten(1)).sum(1, dtype=torch.float64)
        inside = (positive * obj.flatten(1)).sum(1, dtype=torch.float64)
        share = inside / torch.where(total > 0, total, 1.0)
        return MapScores(values={"": share}, no_answer=[(total <= 0, "no positive attribution (scored as no answer)")])


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
    degenerate: ClassVar[dict[str, float]] = {"": 0.0}

    def score_maps(self, attr: torch.Tensor, obj: torch.Tensor, valid: torch.Tensor) -> MapScores:
        flat, keep, objects = attr.flatten(1), valid.flatten(1), obj.flatten(1)
        k = objects.sum(1)
        kth = _kth_largest(attr, valid, k.clamp(min=1))[:, None]
        above, tied = (flat > kth) & keep, (flat == kth) & keep
        n_above, n_tied = above.sum(1).double(), tied.sum(1).double()
        hits = (above & objects).sum(1) + (k - n_above) * (tied & objects).sum(1) / n_tied.clamp(min=1)
        return MapScores(values={"": hits / k.clamp(min=1)})


def _order_keys(values: torch.Tensor) -> torch.Tensor:
    """int64 keys that sort exactly like the float32 ``values`` (-0.0 and 0.0 equal): the IEEE bits
    as a signed integer, with the magnitude bits of negative numbers flipped."""
    bits = (values.float() + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into 0.0
    return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).long()


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
    degenerate: ClassVar[dict[str, float]] = {"": 0.5}

    def score_maps(self, attr: torch.Tensor, obj: torch.Tensor, valid: torch.Tensor) -> MapScores:
        keys = _order_keys(_valid_values(attr, valid, float("inf"))) * 2  # non-counted pixels after every value
        positive = obj.flatten(1)
        positions = torch.arange(keys.shape[1], device=keys.device, dtype=torch.float64)
        positives_last = sort_rows(keys + positive)  # within ties the lowest bit 0 (negatives) sorts first
        positives_first = sort_rows(keys + ~positive)
        n_pos = positive.sum(1).double()
        n_neg = valid.flatten(1).sum(1).double() - n_pos
        before_positives = n_pos * (n_pos - 1) / 2  # over the positives: the positives sorted before each
        below_or_tied = (positives_last & 1).double() @ positions - before_positives
        below = positions.sum() - (positives_first & 1).double() @ positions - before_positives
        auc = (below + below_or_tied) / (2 * n_pos * n_neg).clamp(min=1)
        return MapScores(values={"": auc}, undefined=[(n_neg == 0, "no background pixels")])
