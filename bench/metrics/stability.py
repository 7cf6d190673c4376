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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

import torch
from pydantic import Field

from bench.component import Params
from bench.explainers.base import Explainer
from bench.metrics.base import Metric, MetricInput, Scores, explanation_passes
from bench.metrics.similarity import UNDEFINED, MapFields, average_ranks, prepare_maps, topk_count, topk_members
from bench.seeding import per_sample_rand, stable_hash
from bench.types import Direction, ImageShape, LoadedModel, Passes

RowMaker = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, list[int]]]

NON_FINITE = "the explainer returned non-finite attributions for a re-explained input"


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


def row_seeds(seeds: Sequence[int], sample: torch.Tensor, repeat: torch.Tensor, salt: str) -> list[int]:
    """One seed per (sample, repeat) row, derived from the sample's seed: independent of batching."""
    return [stable_hash(seeds[i], salt, k) for i, k in zip(sample.tolist(), repeat.tolist(), strict=True)]


def row_noise(
    seeds: Sequence[int], sample: torch.Tensor, repeat: torch.Tensor, shape: Sequence[int], salt: str, normal: bool
) -> torch.Tensor:
    """Noise of every (sample, repeat) row: uniform in [-1, 1) or standard normal, (rows, *shape) on the CPU."""
    draws = per_sample_rand(row_seeds(seeds, sample, repeat, salt), shape, "", normal=normal)  # rows seeds are salted
    return draws if normal else draws.mul_(2).sub_(1)


def explain_repeats(
    explainer: Explainer,
    model: LoadedModel,
    target: torch.Tensor,
    n_images: int,
    n_repeats: int,
    explain_batch: int,
    make_rows: RowMaker,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Explain ``n_repeats`` variants of each of ``n_images`` images, ``explain_batch`` rows per call.

    ``make_rows(sample, repeat)`` returns the rows' input images and explainer seeds.
    Yields (sample index, repeat index, images, attributions) per chunk; rows run
    sample-major (all repeats of image 0 first).
    """
    total = n_images * n_repeats
    for start in range(0, total, explain_batch):
        rows = torch.arange(start, min(start + explain_batch, total), device=target.device)
        sample, repeat = rows // n_repeats, rows % n_repeats
        images, seeds = make_rows(sample, repeat)
        with torch.enable_grad():
            attr = explainer.explain(model, images, target[sample], seeds)
        yield sample, repeat, images, attr


def perturbation_ratios(inp: MetricInput, p: PerturbationParams, *, salt: str, normal: bool, scale: float):
    """``||a(x) - a(x')|| / ||denominator||`` for every (sample, draw): (N, n_samples) float64, and
    (N,) True where every re-explanation was finite.

    ``x' = x + scale * noise`` with uniform noise in [-1, 1] or standard normal noise;
    the denominator is ``||a(x)||`` for sensitivity (``normal=False``) and ``||x - x'||``
    for the Lipschitz estimate (``normal=True``).
    """
    explainer = reexplainer(inp)
    x, n = inp.batch.x, p.n_samples
    original = prepare_maps(inp.attributions, p.abs, p.normalise).flatten(1)
    ratios = torch.empty(len(x), n, device=x.device)
    finite = torch.ones(len(x), n, dtype=torch.bool, device=x.device)

    def make_rows(sample: torch.Tensor, repeat: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        noise = row_noise(inp.seeds, sample, repeat, x.shape[1:], salt, normal).to(x.device)
        return x[sample].add_(noise.mul_(scale)), [inp.seeds[i] for i in sample.tolist()]

    for sample, repeat, images, attr in explain_repeats(
        explainer, inp.model, inp.batch.target, len(x), n, p.explain_batch, make_rows
    ):
        moved = prepare_maps(attr, p.abs, p.normalise).flatten(1)
        change = torch.linalg.vector_norm(original[sample] - moved, dim=1)
        if normal:
            change = change / torch.linalg.vector_norm((images - x[sample]).flatten(1), dim=1)
        ratios[sample, repeat] = change
        finite[sample, repeat] = torch.isfinite(moved).all(1)
    if not normal:
        ratios = ratios / torch.linalg.vector_norm(original, dim=1, keepdim=True)
    return ratios.double(), finite.all(1)


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

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        """n_samples explanations per image (``explanation_passes``)."""
        return explanation_passes(explainer, image_shape) * self.params.n_samples

    def aggregate(self, ratios: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, inp: MetricInput) -> Scores:
        p = self.params
        ratios, finite = perturbation_ratios(inp, p, salt="sensitivity", normal=False, scale=p.radius)
        zero = inp.attributions.flatten(1).abs().amax(1) == 0
        value = torch.where(finite & ~zero, self.aggregate(ratios), torch.nan)
        reasons = [
            "zero attribution: sensitivity is relative to its norm" if z else (None if f else NON_FINITE)
            for z, f in zip(zero.tolist(), finite.tolist(), strict=True)
        ]
        return Scores(values={"": value}, reasons=reasons)


class MaxSensitivity(_Sensitivity):
    """Max-sensitivity (Yeh et al. 2019): largest relative change of the attribution under small uniform noise."""

    def aggregate(self, ratios: torch.Tensor) -> torch.Tensor:
        return ratios.amax(1)


class AvgSensitivity(_Sensitivity):
    """Avg-sensitivity (Yeh et al. 2019): mean relative change of the attribution under small uniform noise."""

    def aggregate(self, ratios: torch.Tensor) -> torch.Tensor:
        return ratios.mean(1)


class LocalLipschitzParams(PerturbationParams):
    perturb_std: float = Field(0.1, gt=0, le=1, description="standard deviation of the Gaussian pixel noise")
    normalise: bool = Field(
        True, description="divide each map by its maximum |value| (per sample; Quantus divides by the batch maximum)"
    )


class LocalLipschitz(Metric):
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018): max ||a(x) - a(x')|| / ||x - x'|| under noise."""

    family = "robustness"

    Params = LocalLipschitzParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.LOWER}

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        """n_samples explanations per image (``explanation_passes``)."""
        return explanation_passes(explainer, image_shape) * self.params.n_samples

    def score(self, inp: MetricInput) -> Scores:
        p = self.params
        ratios, finite = perturbation_ratios(inp, p, salt="local-lipschitz", normal=True, scale=p.perturb_std)
        value = torch.where(finite, ratios.amax(1), torch.nan)
        return Scores(values={"": value}, reasons=[None if ok else NON_FINITE for ok in finite.tolist()])


class ConsistencyParams(Params):
    n_reruns: int = Field(3, ge=1, le=100, description="extra runs of the explainer per image, with other seeds")
    k_percent: float = Field(10.0, gt=0, le=100, description="top-k overlap: the top k_percent % pixels of each run")
    explain_batch: int = Field(64, ge=1, description="images per explainer call (memory bound)")


def standard_ranks(attr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average ranks standardised to mean 0 and (population) variance 1 per map: (N, P) float64, and
    (N,) True where the map is constant (then the row is zeros)."""
    ranks = average_ranks(attr.flatten(1))
    centred = ranks - ranks.mean(1, keepdim=True)
    spread = centred.pow(2).mean(1, keepdim=True).sqrt()
    constant = attr.flatten(1).amax(1) == attr.flatten(1).amin(1)
    return torch.where(constant[:, None], 0.0, centred / spread.clamp(min=1e-300)), constant


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
        return explanation_passes(explainer, image_shape) * self.params.n_reruns

    def score(self, inp: MetricInput) -> Scores:
        explainer = reexplainer(inp)
        n = len(inp.batch.x)
        if explainer.deterministic:
            nan = torch.full((n,), torch.nan, dtype=torch.float64)
            reason = "deterministic explainer: consistency is trivially 1"
            return Scores(values={"": nan, "topk": nan.clone()}, reasons=[reason] * n)
        p = self.params
        runs = p.n_reruns + 1
        total, constant = standard_ranks(inp.attributions)
        counts = topk_members(inp.attributions, p.k_percent).long()
        finite = torch.ones(n, dtype=torch.bool, device=total.device)

        def make_rows(sample: torch.Tensor, repeat: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
            return inp.batch.x[sample], row_seeds(inp.seeds, sample, repeat + 1, "rerun")

        for sample, _, _, attr in explain_repeats(
            explainer, inp.model, inp.batch.target, n, p.n_reruns, p.explain_batch, make_rows
        ):
            z, flat = standard_ranks(attr)
            total.index_add_(0, sample, z)
            constant.index_fill_(0, sample[flat], True)
            counts.index_add_(0, sample, topk_members(attr, p.k_percent).long())
            finite.index_fill_(0, sample[~torch.isfinite(attr.flatten(1)).all(1)], False)
        pixels, pairs = total.shape[1], runs * (runs - 1) / 2
        rho = (total.pow(2).sum(1) - runs * pixels) / (2 * pixels * pairs)
        overlap = (counts * (counts - 1) / 2).sum(1).double() / (pairs * topk_count(pixels, p.k_percent))
        rho = torch.where(constant | ~finite, torch.nan, rho)
        overlap = torch.where(finite, overlap, torch.nan)
        reasons = [
            None if not c and f else (NON_FINITE if not f else UNDEFINED["spearman"])
            for c, f in zip(constant.tolist(), finite.tolist(), strict=True)
        ]
        return Scores(values={"": rho, "topk": overlap}, reasons=reasons)
