"""Agreement between two explanations as a function: how similar are two batches of maps?

The similarity of ``bench.metrics.similarity`` (``spearman``, ``pearson``, ``ssim``, ``hog``) or the
share of shared top pixels (``topk``), after the optional absolute value and per-sample max-|a|
normalisation; descriptive, no better direction. The ``agreement`` metric explains the images again with
a reference explainer and calls this.
"""

from __future__ import annotations

from typing import cast

import torch

from bench.metrics.base import Scores, nan_reasons
from bench.metrics.similarity import UNDEFINED, SimilarityKind, prepare_maps, topk_overlap
from bench.metrics.similarity import similarity as map_similarity

KINDS = ("spearman", "pearson", "ssim", "hog", "topk")
NON_FINITE = "a map is not finite (the reference explainer returned NaN or inf)"


def agreement(
    attributions: torch.Tensor,
    reference: torch.Tensor,
    *,
    similarity: str = "spearman",
    k_percent: float = 10.0,
    abs: bool = False,
    normalise: bool = False,
) -> Scores:
    """Per-sample similarity of two (N, 1, H, W) batches of maps: ``similarity`` of ``KINDS``; ``topk``:
    the fraction of the top ``k_percent`` % pixels of one map that are in the other's (ties by position).
    A correlation with a constant map, and any comparison with a non-finite map, is NaN with the reason.

    >>> import torch
    >>> from bench import functional as F
    >>> a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    >>> F.agreement(a, 10 * a).value, F.agreement(a, -a).value
    (tensor([1.0000], dtype=torch.float64), tensor([-1.0000], dtype=torch.float64))
    >>> F.agreement(a, a.flip(-1), similarity="topk", k_percent=50).value  # both put their top half in the bottom row
    tensor([1.], dtype=torch.float64)
    """
    if similarity not in KINDS:
        raise ValueError(f"similarity must be one of {', '.join(KINDS)}, got {similarity!r}")
    a = prepare_maps(attributions, abs, normalise)
    b = prepare_maps(reference, abs, normalise)
    finite = torch.isfinite(a).flatten(1).all(1) & torch.isfinite(b).flatten(1).all(1)
    # the ranks of non-finite values are finite: such maps are caught here, not by the correlation
    # cast: checked against KINDS above (a membership test does not narrow str to the Literal)
    values = (
        topk_overlap(a, b, k_percent)
        if similarity == "topk"
        else map_similarity(cast(SimilarityKind, similarity), a, b)
    )
    values = torch.where(finite, values, torch.nan)
    reasons = nan_reasons(values, [(~finite, NON_FINITE)], otherwise=UNDEFINED.get(similarity, ""))
    return Scores(values={"": values}, reasons=reasons)
