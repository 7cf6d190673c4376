"""Localisation: does the attribution land on the ground-truth mask of the target?

Masks are (N, 1, H, W) uint8 with 1 = object, 0 = background and 255 = void;
void pixels are left out of every count by default.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from bench.component import Params
from bench.metrics.base import Metric, MetricInput, Scores
from bench.types import VOID, Direction

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
        if self.threshold == "fraction_of_max" and not 0 <= self.value <= 1:
            raise ValueError("value must be in [0, 1] for threshold fraction_of_max")
        if self.threshold == "topk" and not 0 < self.value <= 100:
            raise ValueError("value must be a percentage in (0, 100] for threshold topk")
        return self


def split_mask(mask: torch.Tensor, ignore_void: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(object pixels, counted pixels) as bool tensors of the mask's shape."""
    obj = mask == 1
    valid = mask != VOID if ignore_void else torch.ones_like(obj)
    return obj & valid, valid


def _kth_largest(attr: torch.Tensor, valid: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per-sample k-th largest attribution over valid pixels: (N,) for k (N,) >= 1."""
    flat = attr.flatten(1).masked_fill(~valid.flatten(1), float("-inf"))
    ordered = flat.sort(dim=1, descending=True).values
    return ordered.gather(1, (k.clamp(min=1) - 1)[:, None]).squeeze(1)


def _otsu(attr: torch.Tensor, valid: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Per-sample Otsu threshold over valid pixels (between-class variance maximised): (N,)."""
    flat, keep = attr.flatten(1), valid.flatten(1)
    lo = flat.masked_fill(~keep, float("inf")).amin(1, keepdim=True)
    hi = flat.masked_fill(~keep, float("-inf")).amax(1, keepdim=True)
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


def binarise(attr: torch.Tensor, obj: torch.Tensor, valid: torch.Tensor, rule: str, value: float) -> torch.Tensor:
    """Pixels selected by the threshold rule: bool (N, 1, H, W), only valid pixels.

    Ties with the threshold are selected, so a constant map selects every valid
    pixel (chance level) instead of an arbitrary subset.
    """
    flat = attr.flatten(1)
    keep = valid.flatten(1)
    peak = flat.masked_fill(~keep, float("-inf")).amax(1)
    if rule == "fraction_of_max":
        thr = torch.where(peak > 0, value * peak, peak)
    elif rule == "mean":
        thr = (flat * keep).sum(1) / keep.sum(1).clamp(min=1)
    elif rule == "otsu":
        thr = _otsu(attr, valid)
    else:  # topk: a percentage of the valid pixels; mask_size: as many pixels as the mask has
        n_valid = keep.sum(1)
        k = torch.ceil(n_valid.double() * value / 100.0).long() if rule == "topk" else obj.flatten(1).sum(1)
        thr = _kth_largest(attr, valid, k.clamp(min=1))
    thr = torch.minimum(thr, peak)  # never select nothing: at least the peak pixels
    return ((flat >= thr[:, None]) & keep).view_as(attr)


class MaskFields(Params):
    ignore_void: bool = Field(True, description="leave void pixels (mask value 255) out of the counts")
    resolution: Literal["input", "original"] = Field(
        "input",
        description="input: at the resolution the model saw; original: attribution upsampled (bilinear) to each "
        "image's original size and compared with the original mask (datasets that resize, e.g. VOC)",
    )


def mask_pairs(inp: MetricInput, resolution: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(attribution, mask) pairs to score: the whole batch at input resolution, or one pair per
    sample at its original resolution."""
    if resolution == "input" or inp.batch.original_masks is None:
        return [(inp.attributions, inp.batch.mask)]
    pairs = []
    for attr, mask in zip(inp.attributions, inp.batch.original_masks, strict=True):
        size = tuple(mask.shape[-2:])
        up = F.interpolate(attr[None], size=size, mode="bilinear", align_corners=False)
        pairs.append((up, mask[None].to(attr.device)))
    return pairs


class IoUParams(ThresholdFields, MaskFields):
    pass


class IoU(Metric):
    """Intersection over union between the thresholded attribution and the target's mask."""

    Params = IoUParams
    needs = frozenset({"mask"})
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}

    def score(self, inp: MetricInput) -> Scores:
        p = self.params
        parts = [self._iou(attr, mask) for attr, mask in mask_pairs(inp, p.resolution)]
        iou = torch.cat(parts)
        reasons = ["empty mask" if v != v else None for v in iou.tolist()]
        return Scores(values={"": iou}, reasons=reasons)

    def _iou(self, attr: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        p = self.params
        obj, valid = split_mask(mask, p.ignore_void)
        selected = binarise(attr, obj, valid, p.threshold, p.value)
        inter = (selected & obj).flatten(1).sum(1).float()
        union = (selected | obj).flatten(1).sum(1).float()
        empty = obj.flatten(1).sum(1) == 0
        return torch.where(empty, torch.nan, inter / union.clamp(min=1))
