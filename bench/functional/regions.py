"""Faithfulness by regions as functions: square patches (region perturbation) and superpixels (IROF).

The arguments are those of ``bench.functional.faithfulness``; the definitions and the relation to
Quantus are in the docstrings of ``bench.metrics.faithfulness.RegionPerturbation`` and ``IROF``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from bench.explainers.superpixels import slic_segments
from bench.functional.faithfulness import Baseline, Model
from bench.metrics.base import Scores, nan_reasons
from bench.metrics.removal import (
    NON_FINITE,
    OutputKind,
    check_maps,
    ranked_removal_curves,
    ranked_removal_scores,
    unit_trapezoid,
)
from bench.perturb import baseline_images, pixel_ranks
from bench.seeding import generator


def patch_grid(h: int, w: int, size: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Region id of every pixel, (H*W,) int64, and the number of regions.

    The grid is laid out as Quantus pads the image to a multiple of ``size``:
    half of the padding before, half after, so border regions may be partial.
    """
    top, left = ((-h) % size) // 2, ((-w) % size) // 2
    rows = (torch.arange(h, device=device) + top) // size
    cols = (torch.arange(w, device=device) + left) // size
    per_row = (w + (-w) % size) // size
    return (rows[:, None] * per_row + cols[None, :]).flatten(), per_row * ((h + (-h) % size) // size)


def region_ranks(
    attributions: torch.Tensor, patch_size: int, order: str, seeds: Sequence[int] | None
) -> tuple[torch.Tensor, int]:
    """Every pixel's region rank (N, H*W) in removal order (ties by region id), and the number of regions.

    Regions are ordered by their summed attribution: most relevant first (``morf``), least relevant first
    (``lerf``), or by uniform keys drawn from each sample's seed (``random``)."""
    n, h, w = attributions.shape[0], attributions.shape[-2], attributions.shape[-1]
    device = attributions.device
    region, n_regions = patch_grid(h, w, patch_size, device)
    region = region.expand(n, -1)
    sums = torch.zeros(n, n_regions, device=device, dtype=torch.float64)
    sums.scatter_add_(1, region, attributions.flatten(1).double())
    if order == "random":
        if seeds is None:
            raise ValueError("order: random draws the order from per-sample seeds; pass seeds")
        keys = torch.stack([torch.rand(n_regions, generator=generator(s, "region-order")) for s in seeds])
        sums = keys.to(device, torch.float64)
    elif order not in ("morf", "lerf"):
        raise ValueError(f"order must be morf, lerf or random, got {order!r}")
    return pixel_ranks(-sums if order == "lerf" else sums).gather(1, region), n_regions


def region_perturbation(
    model: Model,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    seeds: Sequence[int] | None = None,
    *,
    patch_size: int = 8,
    regions_evaluation: int = 100,
    order: Literal["morf", "lerf", "random"] = "morf",
    baseline: Baseline = "zero",
    output: OutputKind = "probability",
    forward_batch: int = 256,
) -> Scores:
    """Region perturbation (Samek et al. 2016): the drop f(x) - f(x_k) of the target score as the square
    ``patch_size`` regions (Quantus' padded grid) are removed one per step in ``order`` of their summed
    attribution, for ``regions_evaluation`` steps. Value: the drops' trapezoid with unit spacing (Quantus'
    AUC); ``values["aopc"]``: the mean drop over k = 0..L (Samek's AOPC). Curve: the drops.

    >>> import torch
    >>> from bench import functional as F
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2, bias=False))
    >>> _ = model[1].weight.data.copy_(torch.stack([torch.ones(16), torch.zeros(16)]))  # logit 0: the pixel sum
    >>> x = torch.arange(16.0).view(1, 1, 4, 4)
    >>> scores = F.region_perturbation(model, x, x, torch.tensor([0]), patch_size=2, regions_evaluation=3,
    ...                                output="logit")
    >>> scores.curves[""], scores.value, scores.values["aopc"]
    (tensor([[ 50.,  92., 110.]]), tensor([172.]), tensor([63.]))
    """
    check_maps(x, attributions)
    h, w = x.shape[-2:]
    ranks, n_regions = region_ranks(attributions, patch_size, order, seeds)
    if n_regions < 2:
        raise ValueError(
            f"region perturbation needs at least two regions; patch_size {patch_size} covers the {h}x{w} images at once"
        )
    counts = torch.arange(min(regions_evaluation, n_regions) + 1, device=x.device)  # 0: the untouched image
    scores = ranked_removal_curves(
        model,
        x,
        baseline_images(x, baseline, seeds),
        ranks,
        target,
        counts,
        output=output,
        forward_batch=forward_batch,
    )
    drops = scores[:, :1] - scores[:, 1:]
    auc = unit_trapezoid(drops)
    aopc = drops.sum(1) / (drops.shape[1] + 1)
    return Scores(values={"": auc, "aopc": aopc}, curves={"": drops}, reasons=nan_reasons(auc))


def segment_means(values: torch.Tensor, segments: torch.Tensor, k_max: int) -> torch.Tensor:
    """Mean of ``values`` (N, P) over each segment id of ``segments`` (N, P): (N, k_max) float64, with
    -inf for ids an image does not have (so that they rank last)."""
    shape = (values.shape[0], k_max)
    totals = torch.zeros(shape, device=values.device, dtype=torch.float64).scatter_add_(1, segments, values.double())
    pixels = torch.zeros(shape, device=values.device, dtype=torch.float64).scatter_add_(
        1, segments, torch.ones_like(segments, dtype=torch.float64)
    )
    return torch.where(pixels > 0, totals / pixels.clamp(min=1), -torch.inf)


def irof(
    model: Model,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    *,
    n_segments: int = 100,
    compactness: float = 10.0,
    baseline: Baseline = "mean",
    seeds: Sequence[int] | None = None,
    output: OutputKind = "probability",
    forward_batch: int = 256,
) -> Scores:
    """IROF (Rieger & Hansen 2020): SLIC superpixels (about ``n_segments``) are removed in order of decreasing
    mean attribution, one per step; with p_k = f(x_k) / f(x), the value is K - trapz(p_1..p_K) with unit
    spacing, Quantus' "AOC" (higher is better). Curve: p_1..p_K, padded with NaN to the batch's largest K.

    >>> import torch
    >>> from bench import functional as F
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2, bias=False))
    >>> _ = model[1].weight.data.copy_(torch.stack([torch.ones(192), torch.zeros(192)]))  # logit 0: the sum
    >>> x = torch.zeros(1, 3, 8, 8)
    >>> x[:, 0, :, :4] = 1.0  # red left half, blue right half: SLIC cuts 4 superpixels
    >>> x[:, 2, :, 4:] = 1.0
    >>> scores = F.irof(model, x, x[:, :1], torch.tensor([0]), n_segments=4, baseline="zero", output="logit")
    >>> scores.curves[""], scores.value  # red first (16 + 16 of the 64 values), then blue (20, 12)
    (tensor([[0.7500, 0.5000, 0.1875, 0.0000]]), tensor([2.9375]))
    """
    check_maps(x, attributions)
    n, dev = x.shape[0], x.device
    segments = torch.stack([slic_segments(img, n_segments, compactness) for img in x]).to(dev).flatten(1)
    sizes = segments.amax(1) + 1  # (N,) superpixels per image
    k_max = int(sizes.max())
    ranks = pixel_ranks(segment_means(attributions.flatten(1), segments, k_max)).gather(1, segments)
    steps = sizes + 1  # rows: (image, superpixels removed), 0 = the untouched image
    image_index = torch.arange(n, device=dev).repeat_interleave(steps)
    removed = torch.arange(len(image_index), device=dev) - (steps.cumsum(0) - steps)[image_index]
    scores = ranked_removal_scores(
        model,
        x,
        baseline_images(x, baseline, seeds),
        ranks,
        target,
        image_index,
        removed,
        output=output,
        forward_batch=forward_batch,
    )
    return _irof_scores(scores, image_index, removed, sizes)


def _irof_scores(scores: torch.Tensor, image_index: torch.Tensor, removed: torch.Tensor, sizes: torch.Tensor) -> Scores:
    """IROF's curves p_k = f(x_k) / f(x) and area over them from the scores of every (image, removed) row."""
    n, k_max, dev = len(sizes), int(sizes.max()), scores.device
    reference, perturbed = scores[removed == 0], scores[removed > 0]
    valid = torch.arange(k_max, device=dev)[None, :] < sizes[:, None]
    curves = torch.full((n, k_max), torch.nan, device=dev)
    curves[valid] = perturbed / reference[image_index[removed > 0]]
    filled = torch.where(valid, curves, 0.0).double()
    last = curves.gather(1, (sizes - 1)[:, None]).squeeze(1).double()
    area = filled.sum(1) - (filled[:, 0] + last) / 2  # trapz(p_1..p_K, dx=1)
    aoc = (sizes.double() - area).float()
    few = sizes < 2
    aoc = torch.where(few | (reference == 0), torch.nan, aoc)
    reasons = nan_reasons(
        aoc,
        [
            (~torch.isfinite(reference), NON_FINITE),
            (few, "SLIC found fewer than two superpixels"),
            (reference == 0, "the target score of the unperturbed image is 0: IROF's ratio is undefined"),
        ],
    )
    return Scores(values={"": aoc}, curves={"": curves}, reasons=reasons)
