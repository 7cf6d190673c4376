"""Localisation metrics as functions: does the attribution land on the ground-truth mask?

Each takes ``attributions`` (N, 1, H, W) and a ``mask`` of the same shape (uint8: 1 object, 0 background,
255 void; void pixels are left out of every count with ``ignore_void``) and returns ``Scores``. The rules
of ``bench.metrics.masks.mask_scores`` apply to all: an empty mask is NaN with the reason; a map constant
over the counted pixels points nowhere and scores the metric's "no answer" value (``NO_ANSWER``), flagged
``degenerate``. The definitions are in the docstrings of the classes of ``bench.metrics.localisation``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bench.metrics.base import Scores
from bench.metrics.masks import (
    MapScores,
    ThresholdRule,
    binarise,
    count_at_least,
    fraction_of_max,
    iou_from_counts,
    kth_largest,
    mask_scores,
    near_object,
    order_keys,
    sort_rows,
    topk_pixels,
    valid_values,
)

# What a map that gives no answer scores, per metric: a miss (TorchRay's pointing game convention), or
# chance for the AUROC (the AUROC of a constant score).
NO_ANSWER = {
    "iou": 0.0,
    "iou_sweep": 0.0,
    "pointing_game": 0.0,
    "energy_pointing_game": 0.0,
    "relevance_rank_accuracy": 0.0,
    "pixel_auroc": 0.5,
}
DEFAULT_SWEEP = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05, 0.10, ..., 0.95


def iou(
    attributions: torch.Tensor,
    mask: torch.Tensor,
    *,
    threshold: ThresholdRule = "fraction_of_max",
    value: float = 0.5,
    ignore_void: bool = True,
) -> Scores:
    """IoU of the pixels the ``threshold`` rule selects (``bench.metrics.masks.binarise``: ``fraction_of_max``
    a >= value * max, ``mean`` a > mean, ``otsu``, ``topk`` the top value % of pixels, ``mask_size`` as many
    top pixels as the mask has) with the object pixels.

    >>> import torch
    >>> from bench import functional as F
    >>> attributions = torch.tensor([[[[0.9, 0.8], [0.1, 0.0]]]])
    >>> mask = torch.tensor([[[[1, 0], [0, 0]]]], dtype=torch.uint8)
    >>> F.iou(attributions, mask).value  # selects 0.9 and 0.8: one of two pixels is the object
    tensor([0.5000])
    >>> F.iou(attributions, mask, threshold="mask_size").value
    tensor([1.])
    """

    def score_maps(attr: torch.Tensor, obj: torch.Tensor, valid: torch.Tensor) -> MapScores:
        selected = binarise(attr, obj, valid, threshold, value).flatten(1)
        objects = obj.flatten(1)
        return MapScores(values={"": iou_from_counts((selected & objects).sum(1), selected.sum(1), objects.sum(1))})

    return mask_scores(attributions, mask, ignore_void, score_maps, {"": NO_ANSWER["iou"]})


def iou_sweep(
    attributions: torch.Tensor,
    mask: torch.Tensor,
    *,
    rule: str = "fraction_of_max",
    thresholds: Sequence[float] = DEFAULT_SWEEP,
    ignore_void: bool = True,
) -> Scores:
    """The best IoU over ``thresholds`` (sorted ascending) of one rule (``fraction_of_max`` or ``topk``), each
    equal to ``iou`` with that threshold; curves: the IoU at every threshold (N, T) and, as ``threshold``, the
    strictest threshold that reaches the best IoU (N, 1).

    >>> import torch
    >>> from bench import functional as F
    >>> attributions = torch.tensor([[[[0.9, 0.8], [0.1, 0.0]]]])
    >>> mask = torch.tensor([[[[1, 0], [0, 0]]]], dtype=torch.uint8)
    >>> scores = F.iou_sweep(attributions, mask, thresholds=(0.5, 0.95))  # a >= 0.45, a >= 0.855
    >>> scores.value, scores.curves[""], scores.curves["threshold"]
    (tensor([1.]), tensor([[0.5000, 1.0000]]), tensor([[0.9500]], dtype=torch.float64))
    """
    ts = sorted(set(thresholds))

    def score_maps(attr: torch.Tensor, obj: torch.Tensor, valid: torch.Tensor) -> MapScores:
        t = torch.tensor(ts, dtype=torch.float64, device=attr.device)  # exact, as iou's Python floats
        all_valid = sort_rows(valid_values(attr, valid, float("-inf")))  # ascending, non-counted first
        objects = sort_rows(valid_values(attr, obj, float("-inf")))
        peak = all_valid[:, -1:]
        if rule == "fraction_of_max":
            thr = fraction_of_max(peak, t[None].to(attr.dtype))
        else:
            k = topk_pixels(valid.flatten(1).sum(1, keepdim=True), t[None]).clamp(min=1)
            thr = all_valid.gather(1, all_valid.shape[1] - k)  # the k-th largest
        thr = torch.minimum(thr, peak)  # never select nothing: at least the peak pixels
        selected, inter = count_at_least(all_valid, thr), count_at_least(objects, thr)
        curve = iou_from_counts(inter, selected, obj.flatten(1).sum(1, keepdim=True))
        strict_first = torch.arange(len(t), device=t.device)
        if rule == "fraction_of_max":
            strict_first = strict_first.flip(0)  # the highest fraction selects the fewest pixels
        best = curve[:, strict_first].argmax(1)  # argmax returns the first maximum: the strictest cut
        threshold = t[strict_first][best][:, None]
        return MapScores(values={"": curve.amax(1)}, curves={"": curve, "threshold": threshold})

    return mask_scores(attributions, mask, ignore_void, score_maps, {"": NO_ANSWER["iou_sweep"]})


def pointing_game(
    attributions: torch.Tensor, mask: torch.Tensor, *, tolerance: int = 0, ignore_void: bool = True
) -> Scores:
    """Pointing game (Zhang et al. 2016): 1 when a maximum of the attribution over the counted pixels lies on
    the object (or, with ``tolerance`` > 1, within that Euclidean distance of it: TorchRay's rule), else 0.

    >>> import torch
    >>> from bench import functional as F
    >>> mask = torch.tensor([[[[0, 0, 0, 1]]]], dtype=torch.uint8)
    >>> attributions = torch.tensor([[[[0.0, 0.0, 1.0, 0.0]]]])
    >>> F.pointing_game(attributions, mask).value, F.pointing_game(attributions, mask, tolerance=2).value
    (tensor([0.]), tensor([1.]))
    """

    def score_maps(attr: torch.Tensor, obj: torch.Tensor, valid: torch.Tensor) -> MapScores:
        values = valid_values(attr, valid, float("-inf"))
        maxima = (values == values.amax(1, keepdim=True)) & valid.flatten(1)
        if tolerance > 1:
            return MapScores(values={"": near_object(maxima.view_as(attr), obj, tolerance).float()})
        return MapScores(values={"": (maxima & obj.flatten(1)).any(1).float()})

    return mask_scores(attributions, mask, ignore_void, score_maps, {"": NO_ANSWER["pointing_game"]})


def energy_pointing_game(attributions: torch.Tensor, mask: torch.Tensor, *, ignore_void: bool = True) -> Scores:
    """Energy pointing game (Wang et al. 2020; relevance mass accuracy of Arras et al. 2022 on positive
    relevance): sum(max(a, 0) * object) / sum(max(a, 0)) over the counted pixels, in float64. A map without
    positive attribution gives no answer.

    >>> import torch
    >>> from bench import functional as F
    >>> attributions = torch.tensor([[[[3.0, 1.0], [-5.0, 0.0]]]])
    >>> mask = torch.tensor([[[[1, 0], [1, 0]]]], dtype=torch.uint8)
    >>> F.energy_pointing_game(attributions, mask).value
    tensor([0.7500], dtype=torch.float64)
    """

    def score_maps(attr: torch.Tensor, obj: torch.Tensor, valid: torch.Tensor) -> MapScores:
        positive = attr.flatten(1).clamp(min=0)
        total = (positive * valid.flatten(1)).sum(1, dtype=torch.float64)
        inside = (positive * obj.flatten(1)).sum(1, dtype=torch.float64)
        share = inside / torch.where(total > 0, total, 1.0)
        return MapScores(values={"": share}, no_answer=[(total <= 0, "no positive attribution (scored as no answer)")])

    return mask_scores(attributions, mask, ignore_void, score_maps, {"": NO_ANSWER["energy_pointing_game"]})


def relevance_rank_accuracy(attributions: torch.Tensor, mask: torch.Tensor, *, ignore_void: bool = True) -> Scores:
    """Relevance rank accuracy (Arras et al. 2022): the share of the top-K counted pixels inside the mask,
    K = |mask|; ties across the K-th place are resolved by expectation over a random order.

    >>> import torch
    >>> from bench import functional as F
    >>> attributions = torch.tensor([[[[0.9, 0.5], [0.5, 0.0]]]])
    >>> mask = torch.tensor([[[[1, 1], [0, 0]]]], dtype=torch.uint8)
    >>> F.relevance_rank_accuracy(attributions, mask).value  # 0.9 counts, one of the two 0.5s on average
    tensor([0.7500], dtype=torch.float64)
    """

    def score_maps(attr: torch.Tensor, obj: torch.Tensor, valid: torch.Tensor) -> MapScores:
        flat, keep, objects = attr.flatten(1), valid.flatten(1), obj.flatten(1)
        k = objects.sum(1)
        kth = kth_largest(attr, valid, k.clamp(min=1))[:, None]
        above, tied = (flat > kth) & keep, (flat == kth) & keep
        n_above, n_tied = above.sum(1).double(), tied.sum(1).double()
        hits = (above & objects).sum(1) + (k - n_above) * (tied & objects).sum(1) / n_tied.clamp(min=1)
        return MapScores(values={"": hits / k.clamp(min=1)})

    return mask_scores(attributions, mask, ignore_void, score_maps, {"": NO_ANSWER["relevance_rank_accuracy"]})


def pixel_auroc(attributions: torch.Tensor, mask: torch.Tensor, *, ignore_void: bool = True) -> Scores:
    """ROC-AUC of the attribution as a per-pixel detector of the object: the share of (object, background)
    pairs where the object pixel scores higher, ties counting 1/2 (exact integer counts). A mask without
    background is NaN with the reason; a constant map scores 0.5 (chance).

    >>> import torch
    >>> from bench import functional as F
    >>> attributions = torch.tensor([[[[0.9, 0.2], [0.2, 0.0]]]])
    >>> mask = torch.tensor([[[[1, 1], [0, 0]]]], dtype=torch.uint8)
    >>> F.pixel_auroc(attributions, mask).value  # pairs: (0.9, 0.2) (0.9, 0) (0.2, 0.2) (0.2, 0)
    tensor([0.8750], dtype=torch.float64)
    """

    def score_maps(attr: torch.Tensor, obj: torch.Tensor, valid: torch.Tensor) -> MapScores:
        keys = order_keys(valid_values(attr, valid, float("inf"))) * 2  # non-counted pixels after every value
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

    return mask_scores(attributions, mask, ignore_void, score_maps, {"": NO_ANSWER["pixel_auroc"]})
