"""Complexity metrics as functions: how concentrated is an attribution map?

Both look at |a| per pixel, summed in float64, without any model pass; an all-zero map has no
distribution to measure: NaN with the reason. Definitions and the relation to Quantus are in the
docstrings of ``bench.metrics.complexity``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.metrics.base import Scores
from bench.metrics.masks import sort_rows, undefined

ALL_ZERO = "all-zero attribution"


def gini(a: torch.Tensor) -> torch.Tensor:
    """Gini index of each row of non-negative ``a`` (N, n) (Hurley & Rickard 2009):
    sum_i (2i - n - 1) a_(i) / (n sum a) with a_(1) <= ... <= a_(n). NaN for an all-zero row."""
    n = a.shape[1]
    ordered = sort_rows(a).double()  # sorted in the input's precision (exact), summed in float64
    weights = 2 * torch.arange(1, n + 1, device=a.device, dtype=torch.float64) - n - 1
    return (ordered * weights).sum(1) / (n * ordered.sum(1))


def shannon_entropy(a: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row of non-negative ``a`` (N, n) normalised by its ``total`` (N,),
    with 0 log 0 = 0. Rows with a zero total give 0 (the caller marks them undefined)."""
    p = a / torch.where(total > 0, total, 1.0).to(a.dtype)[:, None]
    entropy: torch.Tensor = -torch.special.xlogy(p, p).sum(
        1, dtype=torch.float64
    )  # terms in the map's precision, summed in float64
    return entropy


def _magnitude(attributions: torch.Tensor, measure: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Scores:
    """``measure(|a| (N, P) float32, row sums (N,) float64)`` per sample; NaN with the reason for all-zero maps."""
    a = attributions.flatten(1).abs()
    total = a.sum(1, dtype=torch.float64)
    values, _, reasons = undefined({"": measure(a, total)}, [(total == 0, ALL_ZERO)])
    return Scores(values=values, reasons=reasons)


def sparseness(attributions: torch.Tensor) -> Scores:
    """Sparseness (Chalasani et al. 2020): the Gini index of |a|, in [0, 1): 0 for a constant map, (n-1)/n
    when one pixel carries everything (higher is sparser).

    >>> import torch
    >>> from bench import functional as F
    >>> F.sparseness(torch.tensor([[[[4.0, 0.0], [0.0, 0.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])).value
    tensor([0.7500, 0.0000], dtype=torch.float64)
    """
    return _magnitude(attributions, lambda a, total: gini(a))


def entropy(attributions: torch.Tensor) -> Scores:
    """Complexity (Bhatt et al. 2020): the Shannon entropy (nats) of |a| / sum |a|: 0 when one pixel carries
    everything, log(n) for a constant map (lower is simpler).

    >>> import torch
    >>> from bench import functional as F
    >>> F.entropy(torch.tensor([[[[2.0, 2.0], [0.0, 0.0]]], [[[1.0, -1.0], [1.0, 1.0]]]])).value  # log 2, log 4
    tensor([0.6931, 1.3863], dtype=torch.float64)
    """
    return _magnitude(attributions, shannon_entropy)
