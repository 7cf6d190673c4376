"""Faithfulness metrics as functions: remove what the attribution calls relevant, read the model's score.

Each takes a ``model`` (any callable from (N, C, H, W) images to (N, K) logits), the images ``x``, their
``attributions`` (N, 1, H, W) and ``target`` classes (N,), and returns ``Scores`` (``.value`` is the main
value, ``.curves`` the curves, ``.reasons`` why a value is NaN). A ``baseline`` is a tensor broadcast to
``x`` or a kind ("zero", "mean", "blur", "noise", "constant" at its default settings; see
``bench.perturb``). The metric classes of ``bench.metrics.faithfulness`` call these with their params;
their docstrings give the definitions and how they relate to Quantus.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from bench.metrics.base import Scores, nan_reasons
from bench.metrics.removal import (
    NON_FINITE,
    OutputKind,
    check_maps,
    normalised_auc,
    ranked_removal_curves,
    removal_counts,
    replaced_scores,
    unit_trapezoid,
)
from bench.metrics.similarity import average_ranks, constant_rows, pearson
from bench.perturb import BaselineKind, baseline_images, pixel_ranks
from bench.seeding import generator

Model = Callable[[torch.Tensor], torch.Tensor]
Baseline = torch.Tensor | BaselineKind
# What a constant attribution scores in faithfulness correlation: no association with the output.
CORRELATION_NO_ANSWER = 0.0


def deletion(
    model: Model,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int | None = 32,
    pixels_per_step: int | None = None,
    baseline: Baseline = "zero",
    seeds: Sequence[int] | None = None,
    output: OutputKind = "probability",
    forward_batch: int = 256,
) -> Scores:
    """Deletion AUC (Petsiuk et al. 2018): the target score as pixels are replaced by the baseline, most
    relevant first, in ``steps`` equal fractions (or ``pixels_per_step`` at a time); the area under the
    curve over the removed fraction (lower is better). Curve: the score after 0..K steps.

    >>> import torch
    >>> from bench import functional as F
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2, bias=False))
    >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 0]]))  # logit 0: the pixel sum
    >>> x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    >>> scores = F.deletion(model, x, x, torch.tensor([0]), steps=4, output="logit")
    >>> scores.curves[""], scores.value
    (tensor([[10.,  6.,  3.,  1.,  0.]]), tensor([3.7500]))
    """
    return _curve(model, x, attributions, target, steps, pixels_per_step, baseline, seeds, output, forward_batch, False)


def insertion(
    model: Model,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int | None = 32,
    pixels_per_step: int | None = None,
    baseline: Baseline = "blur",
    seeds: Sequence[int] | None = None,
    output: OutputKind = "probability",
    forward_batch: int = 256,
) -> Scores:
    """Insertion AUC (Petsiuk et al. 2018): the target score as pixels of the image are restored into the
    baseline, most relevant first; the area under the curve (higher is better).

    >>> import torch
    >>> from bench import functional as F
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2, bias=False))
    >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 0]]))
    >>> x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    >>> F.insertion(model, x, x, torch.tensor([0]), steps=4, baseline="zero", output="logit").curves[""]
    tensor([[ 0.,  4.,  7.,  9., 10.]])
    """
    return _curve(model, x, attributions, target, steps, pixels_per_step, baseline, seeds, output, forward_batch, True)


def _curve(
    model: Model,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    steps: int | None,
    pixels_per_step: int | None,
    baseline: Baseline,
    seeds: Sequence[int] | None,
    output: str,
    forward_batch: int,
    insertion: bool,
) -> Scores:
    """Deletion (or insertion) curves and their normalised AUC."""
    check_maps(x, attributions)
    num_pixels = x.shape[-2] * x.shape[-1]
    counts = removal_counts(num_pixels, steps, pixels_per_step, x.device)
    curves = ranked_removal_curves(
        model,
        x,
        baseline_images(x, baseline, seeds),
        pixel_ranks(attributions),
        target,
        counts,
        insertion=insertion,
        output=output,
        forward_batch=forward_batch,
    )
    if steps is not None:
        auc = normalised_auc(curves)
    else:  # the last step may be partial: integrate over the removed fraction itself
        auc = torch.trapezoid(curves, x=counts.to(curves.dtype) / num_pixels, dim=1)
    return Scores(values={"": auc}, curves={"": curves}, reasons=nan_reasons(auc))


def random_subsets(seeds: Sequence[int], runs: int, size: int, num_pixels: int, device: torch.device) -> torch.Tensor:
    """(N, runs, size) distinct pixel indices per run, drawn from each sample's seed (batch invariant).

    A subset is the ``size`` pixels with the largest uniform keys: a uniform draw without replacement.
    """
    subsets = []
    for seed in seeds:
        keys = torch.rand(runs, num_pixels, generator=generator(seed, "faithfulness-correlation"))
        subsets.append(keys.topk(size, dim=1, sorted=False).indices)
    return torch.stack(subsets).to(device)


def faithfulness_correlation(
    model: Model,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    seeds: Sequence[int],
    *,
    nr_runs: int = 100,
    subset_size: int = 224,
    similarity: str = "pearson",
    baseline: Baseline = "zero",
    output: OutputKind = "logit",
    forward_batch: int = 256,
) -> Scores:
    """Faithfulness correlation (Bhatt et al. 2020): the correlation (``pearson`` or ``spearman``) between
    the attribution summed over ``nr_runs`` random subsets of ``subset_size`` pixels (drawn from ``seeds``)
    and the drop of the target output when the subset is removed (higher is better). A constant attribution
    gives no answer: 0, flagged ``degenerate``; an output that does not move, NaN with the reason.

    >>> import torch
    >>> from bench import functional as F
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2, bias=False))
    >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 0]]))
    >>> x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    >>> F.faithfulness_correlation(model, x, x, torch.tensor([0]), [7], nr_runs=5, subset_size=2).value
    tensor([1.], dtype=torch.float64)
    """
    check_maps(x, attributions)
    n, num_pixels = x.shape[0], x.shape[-2] * x.shape[-1]
    if subset_size >= num_pixels:
        raise ValueError(f"subset_size {subset_size} must be smaller than the {num_pixels} pixels of the images")
    subsets = random_subsets(seeds, nr_runs, subset_size, num_pixels, x.device)  # (N, R, S)
    # row 0 of every image is the untouched image: its "subset" is a dummy pixel past the end
    untouched = torch.full((n, 1, subset_size), num_pixels, device=x.device)
    row_subsets = torch.cat([untouched, subsets], 1).view(n * (nr_runs + 1), subset_size)

    def changed(rows: slice, img: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(len(img), num_pixels + 1, dtype=torch.bool, device=x.device)
        return mask.scatter_(1, row_subsets[rows], True)[:, :num_pixels]

    image_index = torch.arange(n, device=x.device).repeat_interleave(nr_runs + 1)
    scores = replaced_scores(
        model,
        x,
        baseline_images(x, baseline, seeds),
        target,
        image_index,
        changed,
        output=output,
        forward_batch=forward_batch,
    ).view(n, nr_runs + 1)
    drops = scores[:, :1] - scores[:, 1:]
    sums = attributions.flatten(1).gather(1, subsets.view(n, -1)).view(n, nr_runs, -1).sum(-1)
    return _correlation_scores(sums, drops, similarity)


def _correlation_scores(sums: torch.Tensor, drops: torch.Tensor, similarity: str) -> Scores:
    """Faithfulness correlation from the subsets' attribution sums and output drops (N, R)."""
    finite = torch.isfinite(drops).all(1)  # before ranking: ranks of NaN drops would be finite
    if similarity == "spearman":
        sums, drops = average_ranks(sums), average_ranks(drops)
    elif similarity != "pearson":
        raise ValueError(f"similarity must be pearson or spearman, got {similarity!r}")
    corr = torch.where(finite, pearson(sums, drops), torch.nan)
    flat_sums, flat_drops = constant_rows(sums), constant_rows(drops)
    no_answer = flat_sums & finite & ~flat_drops
    reasons = nan_reasons(
        corr,
        [
            (~finite, NON_FINITE),
            (flat_drops, "the model output does not change when the subsets are removed"),
            (flat_sums, "the attribution sums are equal on every subset (constant attribution): no answer"),
        ],
    )
    values = torch.where(no_answer, CORRELATION_NO_ANSWER, corr)
    return Scores(values={"": values}, reasons=reasons, degenerate=no_answer)


def pixel_flipping(
    model: Model,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int | None = 32,
    pixels_per_step: int | None = None,
    baseline: Baseline = "zero",
    seeds: Sequence[int] | None = None,
    output: OutputKind = "probability",
    forward_batch: int = 256,
) -> Scores:
    """Pixel flipping (Bach et al. 2015), as Quantus' PixelFlipping: the curve holds the target score after
    each step of flipping the most relevant pixels to the baseline (not the untouched image); the value is
    its trapezoid with unit spacing (lower is better).

    >>> import torch
    >>> from bench import functional as F
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2, bias=False))
    >>> _ = model[1].weight.data.copy_(torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 0]]))
    >>> x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    >>> scores = F.pixel_flipping(model, x, x, torch.tensor([0]), pixels_per_step=1, steps=None, output="logit")
    >>> scores.curves[""], scores.value
    (tensor([[6., 3., 1., 0.]]), tensor([7.]))
    """
    check_maps(x, attributions)
    counts = removal_counts(x.shape[-2] * x.shape[-1], steps, pixels_per_step, x.device)[1:]
    if len(counts) < 2:
        raise ValueError(
            f"pixel flipping needs at least two steps; pixels_per_step {pixels_per_step} covers the "
            f"{x.shape[-2]}x{x.shape[-1]} images at once"
        )
    curves = ranked_removal_curves(
        model,
        x,
        baseline_images(x, baseline, seeds),
        pixel_ranks(attributions),
        target,
        counts,
        output=output,
        forward_batch=forward_batch,
    )
    auc = unit_trapezoid(curves)
    return Scores(values={"": auc}, curves={"": curves}, reasons=nan_reasons(auc))
