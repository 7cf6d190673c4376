"""Robustness metrics as functions: do explanations stay put when the input barely changes, or when a
stochastic explainer runs again?

Each explains again through ``explain(model, x, target, seeds) -> (N, 1, H, W)`` (an explainer's
``explain``): it expands the N images into N x n rows (sample, repeat), builds each row's input and
explains ``explain_batch`` rows per call (with gradients enabled). A row's random draws come from
``stable_hash(sample seed, salt, repeat)``, so the scores do not depend on the batch size or the chunking;
perturbed inputs are explained with the sample's own seed, so a stochastic explainer's noise is the same
as for the original and only the input moves. Definitions and the differences from Quantus are in
``bench.metrics.stability``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from bench.metrics.base import Scores
from bench.metrics.similarity import UNDEFINED, average_ranks, prepare_maps, topk_count, topk_members
from bench.seeding import per_sample_rand, stable_hash

Explain = Callable[[Any, torch.Tensor, torch.Tensor, Sequence[int]], torch.Tensor]
RowMaker = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, list[int]]]

NON_FINITE = "the explainer returned non-finite attributions for a re-explained input"
ZERO_ATTRIBUTION = "zero attribution: sensitivity is relative to its norm"


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
    explain: Explain,
    model: Any,
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
            attr = explain(model, images, target[sample], seeds)
        yield sample, repeat, images, attr


def perturbation_ratios(
    explain: Explain,
    model: Any,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    seeds: Sequence[int],
    *,
    n_samples: int,
    explain_batch: int,
    abs: bool,
    normalise: bool,
    salt: str,
    normal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``||a(x) - a(x')|| / ||denominator||`` for every (sample, draw): (N, n_samples) float64, and
    (N,) True where every re-explanation was finite.

    ``x' = x + scale * noise`` with uniform noise in [-1, 1] or standard normal noise;
    the denominator is ``||a(x)||`` for sensitivity (``normal=False``) and ``||x - x'||``
    for the Lipschitz estimate (``normal=True``).
    """
    original = prepare_maps(attributions, abs, normalise).flatten(1)
    ratios = torch.empty(len(x), n_samples, device=x.device)
    finite = torch.ones(len(x), n_samples, dtype=torch.bool, device=x.device)

    def make_rows(sample: torch.Tensor, repeat: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        noise = row_noise(seeds, sample, repeat, x.shape[1:], salt, normal).to(x.device)
        return x[sample].add_(noise.mul_(scale)), [seeds[i] for i in sample.tolist()]

    for sample, repeat, images, attr in explain_repeats(
        explain, model, target, len(x), n_samples, explain_batch, make_rows
    ):
        moved = prepare_maps(attr, abs, normalise).flatten(1)
        change = torch.linalg.vector_norm(original[sample] - moved, dim=1)
        if normal:
            change = change / torch.linalg.vector_norm((images - x[sample]).flatten(1), dim=1)
        ratios[sample, repeat] = change
        finite[sample, repeat] = torch.isfinite(moved).all(1)
    if not normal:
        ratios = ratios / torch.linalg.vector_norm(original, dim=1, keepdim=True)
    return ratios.double(), finite.all(1)


def _sensitivity(
    explain: Explain,
    model: Any,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    seeds: Sequence[int],
    aggregate: Callable[[torch.Tensor], torch.Tensor],
    **settings: Any,
) -> Scores:
    """Max or mean (``aggregate`` over draws) relative change of the attribution under uniform noise."""
    radius = settings.pop("radius")
    ratios, finite = perturbation_ratios(
        explain, model, x, attributions, target, seeds, salt="sensitivity", normal=False, scale=radius, **settings
    )
    zero = attributions.flatten(1).abs().amax(1) == 0
    value = torch.where(finite & ~zero, aggregate(ratios), torch.nan)
    reasons = [
        ZERO_ATTRIBUTION if z else (None if f else NON_FINITE)
        for z, f in zip(zero.tolist(), finite.tolist(), strict=True)
    ]
    return Scores(values={"": value}, reasons=reasons)


def max_sensitivity(
    explain: Explain,
    model: Any,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    seeds: Sequence[int],
    *,
    n_samples: int = 10,
    radius: float = 0.02,
    abs: bool = False,
    normalise: bool = False,
    explain_batch: int = 64,
) -> Scores:
    """Max-sensitivity (Yeh et al. 2019): the largest ``||a(x) - a(x')|| / ||a(x)||`` over ``n_samples``
    inputs x' drawn uniformly from the L-inf ball of ``radius`` around x (lower is better).

    >>> import torch
    >>> from bench import functional as F
    >>> explain = lambda model, x, target, seeds: x.mean(1, keepdim=True)  # the image itself as the map
    >>> x = torch.full((1, 1, 4, 4), 0.5)
    >>> F.max_sensitivity(explain, None, x, explain(None, x, None, None), torch.tensor([0]), [3]).value
    tensor([0.0239], dtype=torch.float64)
    """
    return _sensitivity(
        explain, model, x, attributions, target, seeds, lambda r: r.amax(1),
        n_samples=n_samples, radius=radius, abs=abs, normalise=normalise, explain_batch=explain_batch,
    )  # fmt: skip


def avg_sensitivity(
    explain: Explain,
    model: Any,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    seeds: Sequence[int],
    *,
    n_samples: int = 10,
    radius: float = 0.02,
    abs: bool = False,
    normalise: bool = False,
    explain_batch: int = 64,
) -> Scores:
    """Avg-sensitivity (Yeh et al. 2019): the mean ``||a(x) - a(x')|| / ||a(x)||`` over the draws of
    ``max_sensitivity`` (lower is better).

    >>> import torch
    >>> from bench import functional as F
    >>> explain = lambda model, x, target, seeds: torch.ones_like(x[:, :1])  # ignores the input: never moves
    >>> x = torch.rand(2, 3, 4, 4)
    >>> F.avg_sensitivity(explain, None, x, explain(None, x, None, None), torch.tensor([0, 1]), [3, 4]).value
    tensor([0., 0.], dtype=torch.float64)
    """
    return _sensitivity(
        explain, model, x, attributions, target, seeds, lambda r: r.mean(1),
        n_samples=n_samples, radius=radius, abs=abs, normalise=normalise, explain_batch=explain_batch,
    )  # fmt: skip


def local_lipschitz(
    explain: Explain,
    model: Any,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    seeds: Sequence[int],
    *,
    n_samples: int = 10,
    perturb_std: float = 0.1,
    abs: bool = False,
    normalise: bool = True,
    explain_batch: int = 64,
) -> Scores:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018): the largest ``||a(x) - a(x')|| / ||x - x'||``
    over ``n_samples`` Gaussian perturbations x' = x + N(0, perturb_std^2) (lower is better).

    >>> import torch
    >>> from bench import functional as F
    >>> explain = lambda model, x, target, seeds: 2 * x  # a linear map of the input: its constant is 2
    >>> x = torch.rand(1, 1, 4, 4)
    >>> F.local_lipschitz(explain, None, x, 2 * x, torch.tensor([0]), [3], normalise=False).value
    tensor([2.], dtype=torch.float64)
    """
    ratios, finite = perturbation_ratios(
        explain, model, x, attributions, target, seeds,
        n_samples=n_samples, explain_batch=explain_batch, abs=abs, normalise=normalise,
        salt="local-lipschitz", normal=True, scale=perturb_std,
    )  # fmt: skip
    value = torch.where(finite, ratios.amax(1), torch.nan)
    return Scores(values={"": value}, reasons=[None if ok else NON_FINITE for ok in finite.tolist()])


def standard_ranks(attr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average ranks standardised to mean 0 and (population) variance 1 per map: (N, P) float64, and
    (N,) True where the map is constant (then the row is zeros)."""
    ranks = average_ranks(attr.flatten(1))
    centred = ranks - ranks.mean(1, keepdim=True)
    spread = centred.pow(2).mean(1, keepdim=True).sqrt()
    constant = attr.flatten(1).amax(1) == attr.flatten(1).amin(1)
    return torch.where(constant[:, None], 0.0, centred / spread.clamp(min=1e-300)), constant


def consistency(
    explain: Explain,
    model: Any,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    seeds: Sequence[int],
    *,
    n_reruns: int = 3,
    k_percent: float = 10.0,
    explain_batch: int = 64,
) -> Scores:
    """Consistency across seeds: the original map and ``n_reruns`` reruns (seeds ``stable_hash(seed, "rerun",
    k)``) compared pairwise; main value the mean Spearman correlation, ``topk`` the mean top-k overlap
    (higher is better). A constant run makes the Spearman value NaN.

    >>> import torch
    >>> from bench import functional as F
    >>> explain = lambda model, x, target, seeds: x.mean(1, keepdim=True)  # ignores the seeds: consistent
    >>> x = torch.rand(1, 3, 4, 4)
    >>> scores = F.consistency(explain, None, x, explain(None, x, None, None), torch.tensor([0]), [3])
    >>> scores.value, scores.values["topk"]
    (tensor([1.], dtype=torch.float64), tensor([1.], dtype=torch.float64))
    """
    n, runs = len(x), n_reruns + 1
    total, constant = standard_ranks(attributions)
    counts = topk_members(attributions, k_percent).long()
    finite = torch.ones(n, dtype=torch.bool, device=total.device)

    def make_rows(sample: torch.Tensor, repeat: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        return x[sample], row_seeds(seeds, sample, repeat + 1, "rerun")

    for sample, _, _, attr in explain_repeats(explain, model, target, n, n_reruns, explain_batch, make_rows):
        z, flat = standard_ranks(attr)
        total.index_add_(0, sample, z)
        constant.index_fill_(0, sample[flat], True)
        counts.index_add_(0, sample, topk_members(attr, k_percent).long())
        finite.index_fill_(0, sample[~torch.isfinite(attr.flatten(1)).all(1)], False)
    pixels, pairs = total.shape[1], runs * (runs - 1) / 2
    rho = (total.pow(2).sum(1) - runs * pixels) / (2 * pixels * pairs)
    overlap = (counts * (counts - 1) / 2).sum(1).double() / (pairs * topk_count(pixels, k_percent))
    rho = torch.where(constant | ~finite, torch.nan, rho)
    overlap = torch.where(finite, overlap, torch.nan)
    reasons = [
        None if not c and f else (NON_FINITE if not f else UNDEFINED["spearman"])
        for c, f in zip(constant.tolist(), finite.tolist(), strict=True)
    ]
    return Scores(values={"": rho, "topk": overlap}, reasons=reasons)
