"""Faithfulness: does removing what the explainer calls relevant change the model's output?

Every metric here replaces pixels (all channels of a pixel together) by a
baseline (``bench.perturb``) and reads the model's softmax probability (or
logit) of the target. All perturbed images of a batch go through the model in
chunks of ``forward_batch`` images (``chunked_scores``), built on the model's
device from a per-row pixel mask, so the cost is that of the forward passes.

- ``deletion`` / ``insertion`` (Petsiuk et al. 2018, RISE): pixels removed
  (inserted) most relevant first in ``steps`` equal fractions or
  ``pixels_per_step`` pixels at a time; the normalised AUC over the removed
  fraction.
- ``faithfulness_correlation`` (Bhatt et al. 2020): correlation between the
  attribution summed over random pixel subsets and the drop of the output when
  those subsets are removed.
- ``pixel_flipping`` (Bach et al. 2015) and ``region_perturbation`` (Samek et
  al. 2016): the curves and AUCs as Quantus 0.6 reports them.
- ``irof`` (Rieger & Hansen 2020): area over the curve of the relative class
  score as SLIC superpixels are removed in order of mean relevance.

Ties in a ranking break by pixel (or region) position, row-major, so a
constant attribution removes pixels in reading order: a defined, deterministic
result (the same for deletion, pixel flipping, region perturbation and IROF).
Scores that are undefined (a zero-variance correlation, a zero reference score,
a model that returns NaN) are NaN with a per-sample reason, never 0.

Pixel counts differ from Quantus in one way: Quantus counts channel values
(``features``) where xbench counts pixels, so Quantus' ``features_in_step`` and
``subset_size`` are C times xbench's ``pixels_per_step`` and ``subset_size``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from bench.component import Params
from bench.explainers.base import forward_batch_size
from bench.explainers.superpixels import slic_segments
from bench.metrics.base import Metric, MetricInput, Scores
from bench.perturb import BaselineFields, BaselineKind, make_baseline, pixel_ranks
from bench.seeding import generator
from bench.types import Direction, LoadedModel, Passes

OutputKind = Literal["probability", "logit"]
ESTIMATE_PIXELS = 224 * 224  # image size assumed by pass estimates that depend on it (`xbench validate`)
NON_FINITE = "the model returned a non-finite score"


# ----------------------------------------------------------------------------- shared parameters


class OutputFields(Params):
    output: OutputKind = Field("probability", description="softmax probability or raw logit of the target")
    forward_batch: int = Field(
        256,
        ge=1,
        le=65536,
        description="most perturbed images per forward pass; fewer where the images are large (as forward_batch "
        "auto of the perturbation explainers: about 256k input values, at least 16 images, on a CPU)",
    )

    def forward_batch_on(self, x: torch.Tensor) -> int:
        """Images per forward pass for images like ``x``: ``forward_batch``, capped by the size that suits the
        image size and device (``bench.explainers.base.forward_batch_size``). Measured on 2 CPU cores,
        ResNet-50 at 224 px: 182 ms/image at 64 images per pass against 117 at 16 with glibc's default
        allocator, 72 against 57 with the tuned one; uncapped, the 136 images of a deletion curve of 8
        images went through at once. A cap, not a new default, so the params (part of every result's
        identity, which ``xbench compare`` matches) stay as they were."""
        return min(self.forward_batch, forward_batch_size("auto", x))


class StepFields(Params):
    """How many pixels each step removes: ``steps`` equal fractions, or ``pixels_per_step`` at a time.

    Exactly one governs; giving ``pixels_per_step`` switches ``steps`` off.
    """

    steps: int | None = Field(
        32, ge=1, le=4096, description="number of equal pixel fractions from 0 to all pixels (or pixels_per_step)"
    )
    pixels_per_step: int | None = Field(
        None, ge=1, description="pixels (all channels) removed per step, the last step may be partial; replaces steps"
    )

    @model_validator(mode="before")
    @classmethod
    def _pixels_per_step_replaces_steps(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("pixels_per_step") is not None:
            if data.get("steps") is not None:
                raise ValueError("set either steps or pixels_per_step, not both")
            data = {**data, "steps": None}
        return data

    @model_validator(mode="after")
    def _one_governs(self) -> StepFields:
        if (self.steps is None) == (self.pixels_per_step is None):
            raise ValueError("set exactly one of steps and pixels_per_step")
        return self

    def counts(self, num_pixels: int, device: torch.device) -> torch.Tensor:
        """Pixels removed after each step, from 0 (the untouched image) to ``num_pixels``: (K+1,) int64."""
        if self.steps is not None:
            return step_counts(num_pixels, self.steps, device)
        k = math.ceil(num_pixels / self.pixels_per_step)
        return (torch.arange(k + 1, device=device) * self.pixels_per_step).clamp(max=num_pixels)

    def estimated_steps(self) -> int:
        """Steps per image for pass estimates (``pixels_per_step`` assumes a 224 x 224 image)."""
        return self.steps if self.steps is not None else math.ceil(ESTIMATE_PIXELS / self.pixels_per_step)


class PerturbationCurveParams(StepFields, BaselineFields, OutputFields):
    pass


class InsertionParams(PerturbationCurveParams):
    baseline: BaselineKind = Field("blur", description="what not-yet-inserted pixels are (RISE: a blurred image)")


# ----------------------------------------------------------------------------- the perturbation engine


def step_counts(num_pixels: int, steps: int, device: torch.device) -> torch.Tensor:
    """Pixels removed after each step: round(k / steps * P) for k = 0..steps."""
    return torch.round(torch.arange(steps + 1, device=device, dtype=torch.float64) * num_pixels / steps).long()


def target_scores(model: LoadedModel, images: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    """The model's probability (or logit) of ``target`` for each image: (B,) float32."""
    logits = model(images).float()
    if output == "probability":
        logits = logits.softmax(dim=1)
    return logits.gather(1, target[:, None]).squeeze(1)


@torch.no_grad()
def chunked_scores(
    model: LoadedModel,
    n_rows: int,
    build: Callable[[slice], tuple[torch.Tensor, torch.Tensor]],
    *,
    output: str,
    forward_batch: int,
    device: torch.device,
) -> torch.Tensor:
    """Target scores of ``n_rows`` images that ``build(rows) -> (images, targets)`` makes a chunk
    of at most ``forward_batch`` at a time (so memory is bounded): (n_rows,) float32."""
    out = torch.empty(n_rows, device=device, dtype=torch.float32)
    for start in range(0, n_rows, forward_batch):
        rows = slice(start, min(start + forward_batch, n_rows))
        images, targets = build(rows)
        out[rows] = target_scores(model, images, targets, output)
    return out


def replaced_scores(
    model: LoadedModel,
    source: torch.Tensor,
    replacement: torch.Tensor,
    target: torch.Tensor,
    image_index: torch.Tensor,
    changed: Callable[[slice, torch.Tensor], torch.Tensor],
    *,
    output: str,
    forward_batch: int,
) -> torch.Tensor:
    """Scores of rows r = images ``source[image_index[r]]`` whose pixels ``changed(rows, images) -> (B, P)``
    are taken from ``replacement``: (R,) float32."""
    h, w = source.shape[-2:]

    def build(rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        img = image_index[rows]
        weight = changed(rows, img).reshape(-1, 1, h, w).to(source.dtype)
        # lerp with weights 0/1 is exact (torch computes end - diff * (1 - w) for w >= 0.5) and,
        # on the CPU, about 30x faster than torch.where with a mask broadcast over the channels
        return torch.lerp(source.index_select(0, img), replacement.index_select(0, img), weight), target[img]

    return chunked_scores(
        model, len(image_index), build, output=output, forward_batch=forward_batch, device=source.device
    )


def ranked_removal_scores(
    model: LoadedModel,
    x: torch.Tensor,
    baseline: torch.Tensor,
    ranks: torch.Tensor,
    target: torch.Tensor,
    image_index: torch.Tensor,
    removed: torch.Tensor,
    *,
    insertion: bool = False,
    output: str,
    forward_batch: int,
) -> torch.Tensor:
    """Scores of rows r: image ``image_index[r]`` with its pixels of rank < ``removed[r]`` taken from the
    baseline (deletion) or, for insertion, the baseline with those pixels taken from the image.

    ``ranks`` (N, P) orders the pixels of each image (0 = removed first); a region
    method gives every pixel its region's rank and counts ``removed`` in regions.
    """
    source, replacement = (baseline, x) if insertion else (x, baseline)
    return replaced_scores(
        model,
        source,
        replacement,
        target,
        image_index,
        lambda rows, img: ranks[img] < removed[rows, None],
        output=output,
        forward_batch=forward_batch,
    )


def ranked_removal_curves(
    model: LoadedModel,
    x: torch.Tensor,
    baseline: torch.Tensor,
    ranks: torch.Tensor,
    target: torch.Tensor,
    counts: torch.Tensor,
    *,
    insertion: bool = False,
    output: str,
    forward_batch: int,
) -> torch.Tensor:
    """Scores after removing ``counts[k]`` ranked pixels (or regions), for every image and k: (N, K)."""
    n, k = x.shape[0], len(counts)
    image_index = torch.arange(n, device=x.device).repeat_interleave(k)
    removed = counts.to(x.device).repeat(n)
    scores = ranked_removal_scores(
        model,
        x,
        baseline,
        ranks,
        target,
        image_index,
        removed,
        insertion=insertion,
        output=output,
        forward_batch=forward_batch,
    )
    return scores.view(n, k)


@torch.no_grad()
def perturbation_curves(
    model: LoadedModel,
    x: torch.Tensor,
    baseline: torch.Tensor,
    attr: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int,
    insertion: bool,
    output: str,
    forward_batch: int,
) -> torch.Tensor:
    """Model score of the target after each step: (N, steps + 1).

    Deletion starts from ``x`` and replaces the most relevant pixels by the
    baseline; insertion starts from the baseline and restores them.
    """
    counts = step_counts(x.shape[-2] * x.shape[-1], steps, x.device)
    return ranked_removal_curves(
        model,
        x,
        baseline,
        pixel_ranks(attr),
        target,
        counts,
        insertion=insertion,
        output=output,
        forward_batch=forward_batch,
    )


def normalised_auc(curves: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under (N, K+1) curves sampled evenly on [0, 1]."""
    steps = curves.shape[1] - 1
    return (curves[:, :-1] + curves[:, 1:]).sum(dim=1) / (2 * steps)


def unit_trapezoid(curves: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under (N, K) curves with unit spacing (``np.trapz(curve, dx=1)``, Quantus' AUC)."""
    return (curves[:, :-1] + curves[:, 1:]).sum(dim=1) / 2


# ----------------------------------------------------------------------------- per-sample bookkeeping


def check_attribution_shape(inp: MetricInput) -> None:
    """Raise ValueError naming the samples when the attributions do not match the images' pixels."""
    x, attr = inp.batch.x, inp.attributions
    if attr.dim() != 4 or attr.shape[0] != x.shape[0] or attr.shape[1] != 1 or attr.shape[-2:] != x.shape[-2:]:
        raise ValueError(
            f"attributions of shape {tuple(attr.shape)} do not match images of shape {tuple(x.shape)} "
            f"(expected (N, 1, H, W)) for samples {', '.join(inp.batch.ids)}"
        )


def nan_reasons(values: torch.Tensor, causes: Sequence[tuple[torch.Tensor, str]] = ()) -> list[str | None]:
    """Why each NaN in ``values`` (N,) is NaN: the first of ``causes`` (mask, text) that holds for the
    sample, else a non-finite model output; None for the samples that have a value."""
    undefined = torch.isnan(values).tolist()
    flags = [(mask.tolist(), text) for mask, text in causes]
    reasons: list[str | None] = []
    for i, nan in enumerate(undefined):
        reasons.append(next((text for mask, text in flags if mask[i]), NON_FINITE) if nan else None)
    return reasons


def output_scores(model: LoadedModel, x: torch.Tensor, target: torch.Tensor, p: OutputFields) -> torch.Tensor:
    """Target scores of the unperturbed images, in chunks of ``forward_batch``: (N,)."""
    return chunked_scores(
        model,
        len(x),
        lambda rows: (x[rows], target[rows]),
        output=p.output,
        forward_batch=p.forward_batch_on(x),
        device=x.device,
    )


# ----------------------------------------------------------------------------- deletion and insertion


class _CurveMetric(Metric):
    Params = PerturbationCurveParams
    insertion: bool = False

    def passes(self) -> Passes:
        return Passes(self.params.estimated_steps() + 1, 0)

    def score(self, inp: MetricInput) -> Scores:
        check_attribution_shape(inp)
        p = self.params
        x = inp.batch.x
        num_pixels = x.shape[-2] * x.shape[-1]
        counts = p.counts(num_pixels, x.device)
        curves = ranked_removal_curves(
            inp.model,
            x,
            make_baseline(x, p, inp.seeds),
            pixel_ranks(inp.attributions),
            inp.batch.target,
            counts,
            insertion=self.insertion,
            output=p.output,
            forward_batch=p.forward_batch_on(x),
        )
        if p.steps is not None:
            auc = normalised_auc(curves)
        else:  # the last step may be partial: integrate over the removed fraction itself
            auc = torch.trapezoid(curves, x=counts.to(curves.dtype) / num_pixels, dim=1)
        return Scores(values={"": auc}, curves={"": curves}, reasons=nan_reasons(auc))


class Deletion(_CurveMetric):
    """Deletion AUC: target score as the most relevant pixels are removed first (lower is better)."""

    outputs: ClassVar[dict[str, Direction]] = {"": Direction.LOWER}
    insertion = False


class Insertion(_CurveMetric):
    """Insertion AUC: target score as the most relevant pixels are restored first (higher is better)."""

    Params = InsertionParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}
    insertion = True


# ----------------------------------------------------------------------------- faithfulness correlation


class FaithfulnessCorrelationParams(BaselineFields, OutputFields):
    nr_runs: int = Field(100, ge=2, le=100_000, description="random pixel subsets per image")
    subset_size: int = Field(
        224, ge=1, description="pixels (all channels) per subset; Quantus' subset_size counts C values per pixel"
    )
    similarity: Literal["pearson", "spearman"] = Field(
        "pearson", description="correlation between subset attribution sums and output drops"
    )
    output: OutputKind = Field("logit", description="softmax probability or raw logit of the target (Quantus: logit)")


def random_subsets(seeds: Sequence[int], runs: int, size: int, num_pixels: int, device: torch.device) -> torch.Tensor:
    """(N, runs, size) distinct pixel indices per run, drawn from each sample's seed (batch invariant).

    A subset is the ``size`` pixels with the largest uniform keys: a uniform draw without replacement.
    """
    subsets = []
    for seed in seeds:
        keys = torch.rand(runs, num_pixels, generator=generator(seed, "faithfulness-correlation"))
        subsets.append(keys.topk(size, dim=1, sorted=False).indices)
    return torch.stack(subsets).to(device)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks along dim 1 of (N, K) with ties given their average rank (scipy's rankdata)."""
    ordered = values.sort(dim=1).values.contiguous()
    below = torch.searchsorted(ordered, values.contiguous(), right=False)
    up_to = torch.searchsorted(ordered, values.contiguous(), right=True)
    return (below + 1 + up_to).to(torch.float64) / 2


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row Pearson correlation of (N, K) tensors in float64, and which rows of a and b are constant."""
    a, b = a.double(), b.double()
    da, db = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    va, vb = (da * da).sum(1), (db * db).sum(1)
    flat_a, flat_b = va == 0, vb == 0
    r = (da * db).sum(1) / (va.sqrt() * vb.sqrt())
    r = torch.where(flat_a | flat_b, torch.nan, r.clamp(-1, 1))
    return r, flat_a, flat_b


class FaithfulnessCorrelation(Metric):
    """Faithfulness correlation (Bhatt et al. 2020): attribution of random subsets vs the output drop they cause.

    For each of ``nr_runs`` random subsets of ``subset_size`` pixels (drawn from
    the sample's seed), the pixels are replaced by the baseline and the drop
    f(x) - f(x_S) of the target output is correlated (Pearson or Spearman) with
    the sum of the attribution over S. Equals Quantus' FaithfulnessCorrelation
    given the same subsets (Quantus draws channel values with numpy's global RNG
    and counts C per pixel). A constant attribution (all subset sums equal) or a
    model whose output does not move gives NaN with the reason.
    """

    Params = FaithfulnessCorrelationParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}

    def passes(self) -> Passes:
        return Passes(self.params.nr_runs + 1, 0)

    def score(self, inp: MetricInput) -> Scores:
        check_attribution_shape(inp)
        p = self.params
        x, target = inp.batch.x, inp.batch.target
        n, num_pixels = x.shape[0], x.shape[-2] * x.shape[-1]
        if p.subset_size >= num_pixels:
            raise ValueError(
                f"subset_size {p.subset_size} must be smaller than the {num_pixels} pixels of the images "
                f"(samples {', '.join(inp.batch.ids)})"
            )
        subsets = random_subsets(inp.seeds, p.nr_runs, p.subset_size, num_pixels, x.device)  # (N, R, S)
        # row 0 of every image is the untouched image: its "subset" is a dummy pixel past the end
        untouched = torch.full((n, 1, p.subset_size), num_pixels, device=x.device)
        row_subsets = torch.cat([untouched, subsets], 1).view(n * (p.nr_runs + 1), p.subset_size)

        def changed(rows: slice, img: torch.Tensor) -> torch.Tensor:
            mask = torch.zeros(len(img), num_pixels + 1, dtype=torch.bool, device=x.device)
            return mask.scatter_(1, row_subsets[rows], True)[:, :num_pixels]

        image_index = torch.arange(n, device=x.device).repeat_interleave(p.nr_runs + 1)
        scores = replaced_scores(
            inp.model,
            x,
            make_baseline(x, p, inp.seeds),
            target,
            image_index,
            changed,
            output=p.output,
            forward_batch=p.forward_batch_on(x),
        ).view(n, p.nr_runs + 1)
        drops = scores[:, :1] - scores[:, 1:]
        sums = inp.attributions.flatten(1).gather(1, subsets.view(n, -1)).view(n, p.nr_runs, -1).sum(-1)
        if p.similarity == "spearman":
            sums, drops = average_ranks(sums), average_ranks(drops)
        corr, flat_sums, flat_drops = pearson_rows(sums, drops)
        finite = torch.isfinite(drops).all(1)
        reasons = nan_reasons(
            corr,
            [
                (~finite, NON_FINITE),
                (flat_sums, "the attribution sums are equal on every subset (constant attribution)"),
                (flat_drops, "the model output does not change when the subsets are removed"),
            ],
        )
        return Scores(values={"": corr}, reasons=reasons)


# ----------------------------------------------------------------------------- pixel flipping


class PixelFlippingParams(StepFields, BaselineFields, OutputFields):
    pass


class PixelFlipping(Metric):
    """Pixel flipping (Bach et al. 2015): AUC of the target score as the most relevant pixels are flipped first.

    Pixels are replaced by the baseline most relevant first, ``pixels_per_step``
    (or a ``steps``-th of the image) at a time; the curve holds the score after
    each step (not the untouched image) and the value is its trapezoid with unit
    spacing, as Quantus' PixelFlipping with ``return_auc_per_sample`` (lower is
    better). Quantus' ``features_in_step`` is C x ``pixels_per_step``.
    """

    Params = PixelFlippingParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.LOWER}

    def passes(self) -> Passes:
        return Passes(self.params.estimated_steps(), 0)

    def score(self, inp: MetricInput) -> Scores:
        check_attribution_shape(inp)
        p = self.params
        x = inp.batch.x
        counts = p.counts(x.shape[-2] * x.shape[-1], x.device)[1:]
        if len(counts) < 2:
            raise ValueError(
                f"pixel flipping needs at least two steps; pixels_per_step {p.pixels_per_step} covers the "
                f"{x.shape[-2]}x{x.shape[-1]} images of samples {', '.join(inp.batch.ids)} at once"
            )
        curves = ranked_removal_curves(
            inp.model,
            x,
            make_baseline(x, p, inp.seeds),
            pixel_ranks(inp.attributions),
            inp.batch.target,
            counts,
            output=p.output,
            forward_batch=p.forward_batch_on(x),
        )
        auc = unit_trapezoid(curves)
        return Scores(values={"": auc}, curves={"": curves}, reasons=nan_reasons(auc))


# ----------------------------------------------------------------------------- region perturbation


class RegionPerturbationParams(BaselineFields, OutputFields):
    patch_size: int = Field(8, ge=1, le=1024, description="side of the square regions (a non-overlapping grid)")
    regions_evaluation: int = Field(100, ge=2, le=100_000, description="regions removed, one per step")
    order: Literal["morf", "lerf", "random"] = Field(
        "morf", description="most relevant first, least relevant first, or a random order (seeded per sample)"
    )


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


class RegionPerturbation(Metric):
    """Region perturbation (Samek et al. 2016): the drop of the target score as square regions are removed.

    The image is cut into ``patch_size`` regions (Quantus' padded grid), ordered
    by their summed attribution (``order``), and removed one per step for
    ``regions_evaluation`` steps; the curve holds f(x) - f(x_k), as Quantus'
    RegionPerturbation returns it. Outputs: "" its trapezoid with unit spacing
    (Quantus' AUC) and ``aopc`` = the mean drop over k = 0..L (Samek's AOPC).
    For ``morf`` both are higher-is-better (a faithful map makes the score drop
    early; Quantus labels the metric lower-is-better), for ``lerf`` lower;
    ``random`` is a control ordered like ``morf``.
    """

    Params = RegionPerturbationParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER, "aopc": Direction.HIGHER}

    def __init__(self, params: RegionPerturbationParams | None = None):
        super().__init__(params)
        direction = Direction.LOWER if self.params.order == "lerf" else Direction.HIGHER
        self.outputs = {"": direction, "aopc": direction}

    def passes(self) -> Passes:
        p = self.params
        regions = math.ceil(224 / p.patch_size) ** 2
        return Passes(min(p.regions_evaluation, regions) + 1, 0)

    def score(self, inp: MetricInput) -> Scores:
        check_attribution_shape(inp)
        p = self.params
        x, attr = inp.batch.x, inp.attributions
        n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        region, n_regions = patch_grid(h, w, p.patch_size, x.device)
        region = region.expand(n, -1)
        sums = torch.zeros(n, n_regions, device=x.device, dtype=torch.float64)
        sums.scatter_add_(1, region, attr.flatten(1).double())
        if p.order == "random":
            keys = torch.stack([torch.rand(n_regions, generator=generator(s, "region-order")) for s in inp.seeds])
            sums = keys.to(x.device, torch.float64)
        ranks = pixel_ranks(-sums if p.order == "lerf" else sums).gather(1, region)  # region ranks, ties by id
        if n_regions < 2:
            raise ValueError(
                f"region perturbation needs at least two regions; patch_size {p.patch_size} covers the "
                f"{h}x{w} images of samples {', '.join(inp.batch.ids)} at once"
            )
        counts = torch.arange(min(p.regions_evaluation, n_regions) + 1, device=x.device)  # 0: the untouched image
        scores = ranked_removal_curves(
            inp.model,
            x,
            make_baseline(x, p, inp.seeds),
            ranks,
            inp.batch.target,
            counts,
            output=p.output,
            forward_batch=p.forward_batch_on(x),
        )
        drops = scores[:, :1] - scores[:, 1:]
        auc = unit_trapezoid(drops)
        aopc = drops.sum(1) / (drops.shape[1] + 1)
        return Scores(values={"": auc, "aopc": aopc}, curves={"": drops}, reasons=nan_reasons(auc))


# ----------------------------------------------------------------------------- IROF


class IROFParams(BaselineFields, OutputFields):
    baseline: BaselineKind = Field(
        "mean", description="what removed superpixels become (IROF: the image's per-channel mean)"
    )
    n_segments: int = Field(100, ge=2, le=100_000, description="SLIC: approximate number of superpixels (Quantus)")
    compactness: float = Field(10.0, gt=0, le=1000, description="SLIC: colour vs space trade-off (Quantus: 10)")


def segment_means(values: torch.Tensor, segments: torch.Tensor, k_max: int) -> torch.Tensor:
    """Mean of ``values`` (N, P) over each segment id of ``segments`` (N, P): (N, k_max) float64, with
    -inf for ids an image does not have (so that they rank last)."""
    shape = (values.shape[0], k_max)
    totals = torch.zeros(shape, device=values.device, dtype=torch.float64).scatter_add_(1, segments, values.double())
    pixels = torch.zeros(shape, device=values.device, dtype=torch.float64).scatter_add_(
        1, segments, torch.ones_like(segments, dtype=torch.float64)
    )
    return torch.where(pixels > 0, totals / pixels.clamp(min=1), -torch.inf)


class IROF(Metric):
    """IROF (Rieger & Hansen 2020): area over the relative class score as superpixels are removed by mean relevance.

    Each image is segmented with SLIC (scikit-image, Quantus' call and defaults,
    on the CPU: part of the method's cost); superpixels are removed (replaced by
    the baseline) in order of decreasing mean attribution, one per step, and
    p_k = f(x_k) / f(x) is recorded. The value is K - trapz(p_1..p_K) with unit
    spacing, Quantus' IROF "AOC" (higher is better; it grows with the number of
    superpixels K, so compare explainers at the same ``n_segments``).

    Differences from Quantus 0.6, which fails on RGB images (its mask has one
    channel) unless given a mask-broadcasting ``perturb_func``: its ``mean``
    baseline is the mean of the whole current (already perturbed) batch over
    all channels, xbench's is each image's per-channel mean; with images of
    different superpixel counts in one batch Quantus' zero padding lowers the
    shorter curves' AOC by p_K / 2, xbench scores each image on its own; SLIC
    results with a single segment are re-segmented without the connectivity
    step (``bench.explainers.superpixels``) where Quantus stops. The curve is
    stored padded with NaN to the batch's largest K. A zero reference score
    f(x) or fewer than two superpixels give NaN with the reason.
    """

    Params = IROFParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}

    def passes(self) -> Passes:
        return Passes(self.params.n_segments + 1, 0)

    def score(self, inp: MetricInput) -> Scores:
        check_attribution_shape(inp)
        p = self.params
        x, attr, target = inp.batch.x, inp.attributions, inp.batch.target
        n, dev = x.shape[0], x.device
        segments = torch.stack([slic_segments(img, p.n_segments, p.compactness) for img in x]).to(dev).flatten(1)
        sizes = segments.amax(1) + 1  # (N,) superpixels per image
        k_max = int(sizes.max())
        ranks = pixel_ranks(segment_means(attr.flatten(1), segments, k_max)).gather(1, segments)
        steps = sizes + 1  # rows: (image, superpixels removed), 0 = the untouched image
        image_index = torch.arange(n, device=dev).repeat_interleave(steps)
        removed = torch.arange(len(image_index), device=dev) - (steps.cumsum(0) - steps)[image_index]
        scores = ranked_removal_scores(
            inp.model,
            x,
            make_baseline(x, p, inp.seeds),
            ranks,
            target,
            image_index,
            removed,
            output=p.output,
            forward_batch=p.forward_batch_on(x),
        )
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
