"""Stability: do explanations stay put when the input barely changes, or when a stochastic
explainer runs again?

- ``max_sensitivity`` / ``avg_sensitivity`` (Yeh et al. 2019; Quantus MaxSensitivity and
  AvgSensitivity): ``||a(x) - a(x')||_2 / ||a(x)||_2`` for ``n_samples`` inputs ``x'``
  drawn uniformly from the L-inf ball of ``radius`` around ``x`` (Quantus' defaults:
  ``difference`` similarity and Frobenius norms in numerator and denominator), the max
  or the mean over the draws; lower is better.
- ``local_lipschitz`` (Alvarez-Melis & Jaakkola 2018; Quantus LocalLipschitzEstimate):
  ``max ||a(x) - a(x')||_2 / ||x - x'||_2`` over ``n_samples`` Gaussian perturbations
  ``x' = x + N(0, perturb_std^2)``; lower is better.
- ``consistency``: a stochastic explainer run again with other seeds: the mean pairwise
  Spearman correlation and top-k overlap between the runs; higher is better.

Perturbed images are not clipped to [0, 1] (neither does Quantus). Differences from
Quantus, which the tests pin down: normalisation (``normalise``) divides each map by its
own maximum |value| where Quantus divides by the maximum over the whole batch, and a
sample whose re-explanation is not finite gets NaN with a reason (Quantus' ``nanmax``
would silently skip the draw).

Every metric here explains again: it expands the N images into N x n rows (sample,
repeat), builds each row's input, and calls the cell's explainer on ``explain_batch``
rows at a time (with gradients enabled) -- the explainer's cost dominates, the
bookkeeping is batched torch. A row's random draws come from
``stable_hash(sample seed, salt, repeat)``, so the scores do not depend on the batch
size or the chunking; perturbed inputs are explained with the sample's own seed, so a
stochastic explainer's noise is the same as for the original and only the input moves.
The computations are ``bench.functional.robustness``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from pydantic import Field

from bench.component import Params
from bench.explainers.base import Explainer
from bench.functional.robustness import (
    NON_FINITE,
    avg_sensitivity,
    consistency,
    local_lipschitz,
    max_sensitivity,
)
from bench.metrics.base import Metric, MetricInput, Scores, explanation_passes
from bench.metrics.similarity import MapFields
from bench.types import Direction, ImageShape, Passes

__all__ = ["NON_FINITE", "AvgSensitivity", "Consistency", "LocalLipschitz", "MaxSensitivity", "reexplainer"]


def reexplainer(inp: MetricInput) -> Explainer:
    """The cell's explainer, which these metrics call again; an error when the runner gave none."""
    if inp.explainer is None:
        raise ValueError("this metric explains again and needs the cell's explainer (MetricInput.explainer)")
    if tuple(inp.attributions.shape[-2:]) != tuple(inp.batch.x.shape[-2:]):
        raise ValueError(
            f"attributions of size {tuple(inp.attributions.shape[-2:])} do not match the images "
            f"({tuple(inp.batch.x.shape[-2:])}) for samples {', '.join(inp.batch.ids)}"
        )
    return inp.explainer


class PerturbationParams(MapFields):
    n_samples: int = Field(10, ge=1, le=10_000, description="perturbed copies of each image (explanations per image)")
    explain_batch: int = Field(64, ge=1, description="perturbed images per explainer call (memory bound)")


class SensitivityParams(PerturbationParams):
    radius: float = Field(
        0.02,
        gt=0,
        le=1,
        description="half-width of the uniform noise on each pixel value (L-inf ball; images in [0, 1])",
    )


class _Sensitivity(Metric):
    family = "robustness"
    Params = SensitivityParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.LOWER}
    function: ClassVar[Callable[..., Scores]]

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        """n_samples explanations per image (``explanation_passes``)."""
        passes: Passes = explanation_passes(explainer, image_shape) * self.params.n_samples
        return passes

    def score(self, inp: MetricInput) -> Scores:
        p = self.params
        return type(self).function(
            reexplainer(inp).explain,
            inp.model,
            inp.batch.x,
            inp.attributions,
            inp.batch.target,
            inp.seeds,
            n_samples=p.n_samples,
            radius=p.radius,
            abs=p.abs,
            normalise=p.normalise,
            explain_batch=p.explain_batch,
        )


class MaxSensitivity(_Sensitivity):
    """Max-sensitivity (Yeh et al. 2019): largest relative change of the attribution under small uniform noise."""

    reference = "quantus.MaxSensitivity"
    function = staticmethod(max_sensitivity)


class AvgSensitivity(_Sensitivity):
    """Avg-sensitivity (Yeh et al. 2019): mean relative change of the attribution under small uniform noise."""

    reference = "quantus.AvgSensitivity"
    function = staticmethod(avg_sensitivity)


class LocalLipschitzParams(PerturbationParams):
    perturb_std: float = Field(0.1, gt=0, le=1, description="standard deviation of the Gaussian pixel noise")
    normalise: bool = Field(
        True, description="divide each map by its maximum |value| (per sample; Quantus divides by the batch maximum)"
    )


class LocalLipschitz(Metric):
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018): max ||a(x) - a(x')|| / ||x - x'|| under noise."""

    family = "robustness"
    reference = "quantus.LocalLipschitzEstimate"

    Params = LocalLipschitzParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.LOWER}

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        """n_samples explanations per image (``explanation_passes``)."""
        passes: Passes = explanation_passes(explainer, image_shape) * self.params.n_samples
        return passes

    def score(self, inp: MetricInput) -> Scores:
        p = self.params
        return local_lipschitz(
            reexplainer(inp).explain,
            inp.model,
            inp.batch.x,
            inp.attributions,
            inp.target,
            inp.seeds,
            n_samples=p.n_samples,
            perturb_std=p.perturb_std,
            abs=p.abs,
            normalise=p.normalise,
            explain_batch=p.explain_batch,
        )


class ConsistencyParams(Params):
    n_reruns: int = Field(3, ge=1, le=100, description="extra runs of the explainer per image, with other seeds")
    k_percent: float = Field(10.0, gt=0, le=100, description="top-k overlap: the top k_percent % pixels of each run")
    explain_batch: int = Field(64, ge=1, description="images per explainer call (memory bound)")


class Consistency(Metric):
    """Consistency of a stochastic explainer across seeds: mean pairwise Spearman correlation and top-k overlap.

    The original attribution and ``n_reruns`` reruns (seeds
    ``stable_hash(sample seed, "rerun", k)``, k = 1..n_reruns) make R = n_reruns + 1
    runs; the scores average over all R(R-1)/2 pairs of runs. They are accumulated
    without keeping the runs: with z_r the standardised ranks of run r and
    S = sum_r z_r, the sum of pairwise correlations is (|S|^2 - R P) / (2 P); with c_p
    the number of runs whose top k holds pixel p, the summed top-k intersections are
    sum_p c_p (c_p - 1) / 2. Deterministic explainers give NaN ("consistency is
    trivially 1"); a constant run makes the Spearman value NaN.
    """

    family = "robustness"
    unranked: ClassVar[frozenset[str]] = frozenset({"topk"})  # alternative summaries of the main value

    Params = ConsistencyParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER, "topk": Direction.HIGHER}

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        """n_reruns explanations per image (``explanation_passes``); none for a deterministic explainer,
        whose consistency is not computed."""
        if explainer is not None and explainer.deterministic:
            return Passes(0, 0)
        passes: Passes = explanation_passes(explainer, image_shape) * self.params.n_reruns
        return passes

    def score(self, inp: MetricInput) -> Scores:
        explainer = reexplainer(inp)
        if explainer.deterministic:
            n = len(inp.batch.x)
            nan = torch.full((n,), torch.nan, dtype=torch.float64)
            reason = "deterministic explainer: consistency is trivially 1"
            return Scores(values={"": nan, "topk": nan.clone()}, reasons=[reason] * n)
        p = self.params
        return consistency(
            explainer.explain,
            inp.model,
            inp.batch.x,
            inp.attributions,
            inp.target,
            inp.seeds,
            n_reruns=p.n_reruns,
            k_percent=p.k_percent,
            explain_batch=p.explain_batch,
        )
