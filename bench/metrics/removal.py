"""The perturbation engine: replace pixels by a baseline, in any order, and read the model's target score.

Every perturbation metric (``bench.metrics.faithfulness``, ``bench.metrics.road``, the region
metrics) is built from these pieces. Perturbed images are made on the model's device from a
per-row pixel mask and go through the model in chunks of ``forward_batch`` images
(``chunked_scores``), so memory is bounded and the cost is that of the forward passes.

- ``StepFields``: how many pixels each step removes (``steps`` fractions or ``pixels_per_step``);
- ``chunked_scores`` / ``replaced_scores`` / ``ranked_removal_scores`` / ``ranked_removal_curves``:
  target scores of rows (image, pixels changed), built chunk by chunk;
- ``normalised_auc`` / ``unit_trapezoid``: the two areas the metrics report;
- ``check_attribution_shape`` / ``output_scores``: per-batch bookkeeping.

Ties in a ranking break by pixel (or region) position, row-major (``bench.perturb.pixel_ranks``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from pydantic import Field, model_validator

from bench.component import Params
from bench.explainers.base import auto_batch
from bench.metrics.base import MetricInput
from bench.models.base import target_outputs
from bench.perturb import pixel_ranks
from bench.types import LoadedModel

OutputKind = Literal["probability", "logit"]
NON_FINITE = "the model returned a non-finite score"
Model = Callable[[torch.Tensor], torch.Tensor]  # images -> logits: a LoadedModel, or any function (bench.functional)


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
        """Images per forward pass for images like ``x``: ``forward_batch`` capped by ``capped_batch``."""
        return capped_batch(self.forward_batch, x)


def capped_batch(forward_batch: int, x: torch.Tensor) -> int:
    """``forward_batch`` capped by the size that suits images like ``x`` on their device
    (``bench.explainers.base.auto_batch``); it changes speed and memory, never the scores.

    Measured on 2 CPU cores, ResNet-50 at 224 px: 182 ms/image at 64 images per pass against 117 at 16 with
    glibc's default allocator, 72 against 57 with the tuned one; uncapped, the 136 images of a deletion curve
    of 8 images went through at once. A cap, not a new default, so the params (part of every result's
    identity, which ``xbench compare`` matches) stay as they were.
    """
    return min(forward_batch, auto_batch(x[0].numel(), x.device.type))


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
        return removal_counts(num_pixels, self.steps, self.pixels_per_step, device)

    def steps_for(self, num_pixels: int) -> int:
        """Steps (K) that images of ``num_pixels`` pixels take: ``steps``, or ceil(P / ``pixels_per_step``)."""
        if self.steps is not None:
            return self.steps
        return math.ceil(num_pixels / (self.pixels_per_step or 1))  # one of the two is set (validated)


def removal_counts(
    num_pixels: int, steps: int | None, pixels_per_step: int | None, device: torch.device
) -> torch.Tensor:
    """Pixels removed after each step, from 0 to ``num_pixels``: ``steps`` equal fractions (``step_counts``), or
    ``pixels_per_step`` at a time with a last partial step: (K+1,) int64. Exactly one of the two is set."""
    if steps is not None:
        return step_counts(num_pixels, steps, device)
    if pixels_per_step is None:
        raise ValueError("set steps or pixels_per_step")
    k = math.ceil(num_pixels / pixels_per_step)
    return (torch.arange(k + 1, device=device) * pixels_per_step).clamp(max=num_pixels)


# ----------------------------------------------------------------------------- the perturbation engine


def step_counts(num_pixels: int, steps: int, device: torch.device) -> torch.Tensor:
    """Pixels removed after each step: round(k / steps * P) for k = 0..steps."""
    return torch.round(torch.arange(steps + 1, device=device, dtype=torch.float64) * num_pixels / steps).long()


def target_scores(model: Model, images: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    """The model's probability (or logit) of ``target`` for each image: (B,) float32."""
    return target_outputs(model(images).float(), target, output)


@torch.no_grad()
def chunked_scores(
    model: Model,
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
    model: Model,
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

    batch = capped_batch(forward_batch, source)
    return chunked_scores(model, len(image_index), build, output=output, forward_batch=batch, device=source.device)


def ranked_removal_scores(
    model: Model,
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
    model: Model,
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
    model: Model,
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
    check_maps(inp.batch.x, inp.attributions, inp.batch.ids)


def check_maps(x: torch.Tensor, attr: torch.Tensor, ids: Sequence[str] | None = None) -> None:
    """Raise ValueError naming the samples (``ids``, else their positions) unless ``attr`` is (N, 1, H, W)
    for images ``x`` (N, C, H, W)."""
    ids = [str(i) for i in range(len(x))] if ids is None else ids
    if attr.dim() != 4 or attr.shape[0] != x.shape[0] or attr.shape[1] != 1 or attr.shape[-2:] != x.shape[-2:]:
        raise ValueError(
            f"attributions of shape {tuple(attr.shape)} do not match images of shape {tuple(x.shape)} "
            f"(expected (N, 1, H, W)) for samples {', '.join(ids)}"
        )


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
