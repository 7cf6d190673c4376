"""Complexity: how concentrated is an attribution map? Simpler maps are easier to read.

Both metrics look at the absolute attribution |a| of every pixel (the sign says
which way a pixel pushes, not how much), batched over the samples and summed
in float64, without any model pass. An all-zero map has no distribution to measure: NaN
with the reason "all-zero attribution", never a silent 0.

- ``sparseness`` (Chalasani et al. 2020): the Gini index of |a|, in [0, 1):
  0 for a constant map, (n-1)/n when one pixel carries everything.
- ``entropy`` (Bhatt et al. 2020, "complexity"): the Shannon entropy (nats) of
  |a| / sum |a|: 0 for one pixel, log(n) for a constant map.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch

from bench.explainers.base import Explainer
from bench.metrics.base import Metric, MetricInput, Scores
from bench.metrics.localisation import sort_rows, undefined
from bench.types import Direction, ImageShape, Passes


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
    return -torch.special.xlogy(p, p).sum(1, dtype=torch.float64)  # terms in the map's precision, summed in float64


class _MagnitudeMetric(Metric):
    """Base of the complexity metrics: a statistic of |attribution| per sample; an all-zero map is
    NaN with a reason. No model pass. Subclasses implement ``measure``."""

    family = "complexity"

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        return Passes(0, 0)

    def score(self, inp: MetricInput) -> Scores:
        a = inp.attributions.flatten(1).abs()
        total = a.sum(1, dtype=torch.float64)
        values, _, reasons = undefined({"": self.measure(a, total)}, [(total == 0, "all-zero attribution")])
        return Scores(values=values, reasons=reasons)

    @abstractmethod
    def measure(self, a: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """(N,) statistic of the (N, P) absolute attributions ``a`` (float32) with row sums ``total`` (float64)."""


class Sparseness(_MagnitudeMetric):
    """Sparseness (Chalasani et al. 2020): Gini index of the absolute attribution; higher is sparser.

    Same definition as quantus.Sparseness, except that Quantus adds 1e-7 to every value after
    normalising by the maximum: that scales its score by S / (S + 1e-7 n), S = the sum of the
    normalised map. Quantus' default normalisation divides by the maximum of the whole *batch*,
    so a weak map next to a strong one gets a small S and its score depends on its batch
    neighbours (e.g. 1e-3 off for a saliency map batched with larger-scale maps); with a
    per-sample maximum the difference stays below 1e-4 except for extremely sparse maps on large
    images. Here the Gini is exact and per sample, and an all-zero map is NaN (Quantus: 0).
    """

    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}

    def measure(self, a: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        return gini(a)


class Entropy(_MagnitudeMetric):
    """Complexity (Bhatt et al. 2020): Shannon entropy (nats) of the normalised absolute attribution; lower is simpler.

    H = -sum_i p_i log p_i with p = |a| / sum |a| and 0 log 0 = 0: 0 when one pixel carries
    everything, log(n) for a constant map. quantus.Complexity computes the same with
    log(p + 1e-12) (a difference of about n * 1e-12).
    """

    outputs: ClassVar[dict[str, Direction]] = {"": Direction.LOWER}

    def measure(self, a: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        return shannon_entropy(a, total)
