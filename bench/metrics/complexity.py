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

from typing import ClassVar

import torch

from bench.explainers.base import Explainer
from bench.functional.complexity import entropy, sparseness
from bench.metrics.base import Metric, MetricInput, Scores
from bench.types import Direction, ImageShape, Passes


class _MagnitudeMetric(Metric):
    """Base of the complexity metrics: a statistic of |attribution| per sample (``function``); an all-zero
    map is NaN with a reason. No model pass."""

    family = "complexity"
    function: ClassVar[staticmethod[[torch.Tensor], Scores]]

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        return Passes(0, 0)

    def score(self, inp: MetricInput) -> Scores:
        return type(self).function(inp.attributions)


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
    reference = "quantus.Sparseness"
    function = staticmethod(sparseness)


class Entropy(_MagnitudeMetric):
    """Complexity (Bhatt et al. 2020): Shannon entropy (nats) of the normalised absolute attribution; lower is simpler.

    H = -sum_i p_i log p_i with p = |a| / sum |a| and 0 log 0 = 0: 0 when one pixel carries
    everything, log(n) for a constant map. quantus.Complexity computes the same with
    log(p + 1e-12) (a difference of about n * 1e-12).
    """

    outputs: ClassVar[dict[str, Direction]] = {"": Direction.LOWER}
    reference = "quantus.Complexity"
    function = staticmethod(entropy)
