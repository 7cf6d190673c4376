"""Batched similarity of attribution maps, shared by the stability and randomisation metrics.

Every function compares two batches of maps row by row and returns one value per
sample, computed in float64 on the maps' device. A value that is undefined for a
sample (a correlation with a constant map, SSIM of two identical constant maps)
is NaN; ``UNDEFINED`` says why, for the metrics' per-sample reasons.

- ``spearman``: Pearson correlation of average ranks (ties share their mean rank),
  ``scipy.stats.spearmanr``'s definition.
- ``pearson``: Pearson correlation of the flattened maps.
- ``ssim``: structural similarity (Wang et al. 2004) exactly as
  ``skimage.metrics.structural_similarity`` with a uniform 7x7 window
  (``gaussian_weights=False``), sample covariance, K1 = 0.01, K2 = 0.03 and,
  as Quantus does, ``data_range`` = max - min over both maps.
- ``hog``: Pearson correlation of the maps' HOG descriptors (Adebayo et al. 2018),
  computed by ``skimage.feature.hog`` one map at a time on the CPU: it is the one
  similarity here that is not batched.
- ``topk_overlap``: the fraction of the top k% pixels of one map that are also in
  the other's top k% (ties broken by pixel position, as ``bench.perturb.pixel_ranks``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from bench.component import Params

SimilarityKind = Literal["spearman", "pearson", "ssim", "hog"]

UNDEFINED: dict[str, str] = {
    "spearman": "constant attribution: the Spearman correlation is undefined",
    "pearson": "constant attribution: the Pearson correlation is undefined",
    "ssim": "identical constant attributions: SSIM is undefined (zero data range)",
    "hog": "constant HOG descriptor (a flat attribution map): the HOG correlation is undefined",
}

SSIM_WINDOW = 7
HOG_SETTINGS: dict[str, Any] = {
    "orientations": 9,
    "pixels_per_cell": (8, 8),
    "cells_per_block": (3, 3),
    "block_norm": "L2-Hys",
}


class MapFields(Params):
    """How attribution maps are prepared before they are compared."""

    abs: bool = Field(False, description="compare absolute attributions")
    normalise: bool = Field(
        False, description="divide each map by its maximum |value| (per sample; Quantus divides by the batch maximum)"
    )


def prepare_maps(attr: torch.Tensor, abs: bool, normalise: bool) -> torch.Tensor:
    """``attr`` with the optional per-sample max-|a| normalisation and absolute value; zero maps stay zero."""
    if normalise:
        peak = attr.flatten(1).abs().amax(1).view(-1, *([1] * (attr.dim() - 1)))
        attr = attr / torch.where(peak > 0, peak, torch.ones_like(peak))
    return attr.abs() if abs else attr


def _rows(a: torch.Tensor) -> torch.Tensor:
    return a.reshape(a.shape[0], -1)


def constant_rows(rows: torch.Tensor) -> torch.Tensor:
    """(N,) True where a row of (N, K) has a single value (tested exactly, not by a rounded variance)."""
    return rows.amax(1) == rows.amin(1)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample Pearson correlation of the flattened maps: (N,) float64, NaN where either map is constant."""
    x, y = _rows(a).double(), _rows(b).double()
    undefined = constant_rows(x) | constant_rows(y)
    x = x - x.mean(1, keepdim=True)
    y = y - y.mean(1, keepdim=True)
    r = ((x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1))).clamp(-1.0, 1.0)
    return torch.where(undefined, torch.nan, r)


def _argsort_rows(values: torch.Tensor) -> torch.Tensor:
    """Ascending order of each row (ties in any order). On the CPU through numpy, whose sort is several
    times faster than torch's there (it dominates the cost of a Spearman correlation)."""
    if values.device.type == "cpu":
        return torch.from_numpy(np.argsort(values.detach().numpy(), axis=1))
    return values.argsort(dim=1)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks within each row of (N, P) ``values``; tied values share their mean rank (float64).

    In sorted order, a tie group spans positions first..last; its members all get
    (first + last) / 2 + 1, found with running max/min over the group boundaries.
    """
    p = values.shape[1]
    order = _argsort_rows(values)
    ordered = values.gather(1, order)
    position = torch.arange(p, device=values.device).expand_as(order)
    starts = torch.ones_like(order, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, position, 0).cummax(1).values
    last = torch.where(ends, position, p).flip(1).cummin(1).values.flip(1)
    mean_rank = (first + last).double() / 2 + 1
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample Spearman rank correlation (average ranks for ties): (N,), NaN where either map is constant."""
    return pearson(average_ranks(_rows(a)), average_ranks(_rows(b)))


def box_means(t: torch.Tensor, win: int) -> torch.Tensor:
    """Means over every ``win`` x ``win`` window that fits inside (..., H, W): (..., H-win+1, W-win+1).

    Differences of cumulative sums (O(HW) whatever the window): skimage's uniform filter
    on the valid region, which is all that its SSIM keeps (it crops the borders).
    """
    for dim in (-1, -2):
        c = F.pad(t.cumsum(dim), (1, 0) if dim == -1 else (0, 0, 1, 0))
        t = c.narrow(dim, win, c.shape[dim] - win) - c.narrow(dim, 0, c.shape[dim] - win)
    return t / (win * win)


def ssim(a: torch.Tensor, b: torch.Tensor, win_size: int = SSIM_WINDOW) -> torch.Tensor:
    """Per-sample SSIM of (N, 1, H, W) (or (N, H, W)) maps, skimage's definition: (N,).

    The window shrinks to the largest odd size that fits maps smaller than
    ``win_size`` (skimage refuses them). NaN where both maps are the same constant.
    """
    x = a.reshape(a.shape[0], 1, *a.shape[-2:]).double()
    y = b.reshape(b.shape[0], 1, *b.shape[-2:]).double()
    side = min(x.shape[-2:])
    win = min(win_size, side if side % 2 else side - 1)
    both = torch.cat([x.flatten(1), y.flatten(1)], dim=1)
    data_range = (both.amax(1) - both.amin(1)).view(-1, 1, 1)
    cov_norm = win * win / (win * win - 1) if win > 1 else 1.0
    ux, uy, uxx, uyy, uxy = box_means(torch.cat([x, y, x * x, y * y, x * y], dim=1), win).unbind(1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return torch.where(data_range.flatten() > 0, s.flatten(1).mean(1), torch.nan)


def hog_features(maps: torch.Tensor) -> torch.Tensor:
    """(N, D) HOG descriptors of (N, 1, H, W) maps (skimage, per map on the CPU; ``HOG_SETTINGS``)."""
    from skimage.feature import hog

    cells = HOG_SETTINGS["pixels_per_cell"][0] * HOG_SETTINGS["cells_per_block"][0]
    if min(maps.shape[-2:]) < cells:
        raise ValueError(f"HOG similarity needs maps of at least {cells}x{cells} pixels, got {tuple(maps.shape[-2:])}")
    rows = [hog(m, **HOG_SETTINGS) for m in maps.reshape(-1, *maps.shape[-2:]).double().cpu().numpy()]
    return torch.from_numpy(np.stack(rows)).to(maps.device)


def hog_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample Pearson correlation of HOG descriptors: (N,), NaN where a descriptor is constant."""
    return pearson(hog_features(a), hog_features(b))


def topk_count(num_pixels: int, k_percent: float) -> int:
    """How many pixels the top ``k_percent`` % are: ceil(k% of the pixels), at least one."""
    return max(1, math.ceil(num_pixels * k_percent / 100 - 1e-9))


def topk_members(attr: torch.Tensor, k_percent: float) -> torch.Tensor:
    """(N, P) bool: the top ``k_percent`` % pixels of each map, ties broken by position (the first pixels
    of ``pixel_ranks``' order), found by selection (``kthvalue``) rather than a full sort."""
    values = attr.reshape(attr.shape[0], -1)
    k = topk_count(values.shape[1], k_percent)
    kth = values.kthvalue(values.shape[1] - k + 1, dim=1, keepdim=True).values  # the k-th largest value
    above, tie = values > kth, values == kth
    return above | (tie & (tie.cumsum(1) <= k - above.sum(1, keepdim=True)))


def topk_overlap(a: torch.Tensor, b: torch.Tensor, k_percent: float) -> torch.Tensor:
    """Per-sample |top-k(a) ∩ top-k(b)| / k: (N,) in [0, 1]."""
    both = topk_members(a, k_percent) & topk_members(b, k_percent)
    return both.sum(1).double() / topk_count(both.shape[1], k_percent)


def against(kind: SimilarityKind, reference: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``other -> similarity(kind, reference, other)``, with what depends on the reference alone (its ranks,
    its HOG descriptors) computed once: for comparing one batch with many (a randomisation per layer)."""
    if kind == "spearman":
        ranks = average_ranks(_rows(reference))
        return lambda other: pearson(ranks, average_ranks(_rows(other)))
    if kind == "hog":
        features = hog_features(reference)
        return lambda other: pearson(features, hog_features(other))
    return lambda other: similarity(kind, reference, other)


def similarity(kind: SimilarityKind, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The named per-sample similarity of two (N, 1, H, W) batches: (N,) float64."""
    if kind == "spearman":
        return spearman(a, b)
    if kind == "pearson":
        return pearson(a, b)
    if kind == "ssim":
        return ssim(a, b)
    if kind == "hog":
        return hog_similarity(a, b)
    raise ValueError(f"unknown similarity {kind!r}")
