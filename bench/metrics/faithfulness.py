"""Deletion and insertion (Petsiuk et al. 2018, RISE): does removing what the
explainer calls relevant destroy the prediction, and does adding it restore it?

Pixels are removed (or inserted) in order of decreasing attribution, all
channels of a pixel together, in ``steps`` equal fractions of the image. The
score after each step is the model's softmax probability (or logit) of the
target; the AUC is the normalised trapezoid over the fraction axis [0, 1].
All N x (steps + 1) perturbed images go through the model in batches of
``forward_batch`` on the model's device.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from bench.metrics.base import Metric, MetricInput, Scores
from bench.perturb import BaselineFields, BaselineKind, make_baseline, pixel_ranks
from bench.types import Direction, LoadedModel, Passes


class PerturbationCurveParams(BaselineFields):
    steps: int = Field(32, ge=1, le=4096, description="number of equal pixel fractions from 0 to all pixels")
    output: Literal["probability", "logit"] = Field(
        "probability", description="softmax probability or raw logit of the target"
    )
    forward_batch: int = Field(256, ge=1, description="perturbed images per forward pass (memory bound)")


def step_counts(num_pixels: int, steps: int, device: torch.device) -> torch.Tensor:
    """Pixels removed after each step: round(k / steps * P) for k = 0..steps."""
    return torch.round(torch.arange(steps + 1, device=device, dtype=torch.float64) * num_pixels / steps).long()


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
    n, _c, h, w = x.shape
    ranks = pixel_ranks(attr)  # (N, P)
    counts = step_counts(h * w, steps, x.device)  # (K+1,)
    k1 = steps + 1
    curves = torch.empty(n * k1, device=x.device, dtype=torch.float32)
    for start in range(0, n * k1, forward_batch):
        rows = torch.arange(start, min(start + forward_batch, n * k1), device=x.device)
        img_idx, step_idx = rows // k1, rows % k1
        changed = (ranks[img_idx] < counts[step_idx, None]).view(-1, 1, h, w)  # pixels taken from the "other" image
        src, dst = (baseline, x) if insertion else (x, baseline)
        images = torch.where(changed, dst[img_idx], src[img_idx])
        logits = model(images).float()
        if output == "probability":
            logits = logits.softmax(dim=1)
        curves[rows] = logits.gather(1, target[img_idx, None]).squeeze(1)
    return curves.view(n, k1)


def normalised_auc(curves: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under (N, K+1) curves sampled evenly on [0, 1]."""
    steps = curves.shape[1] - 1
    return (curves[:, :-1] + curves[:, 1:]).sum(dim=1) / (2 * steps)


class InsertionParams(PerturbationCurveParams):
    baseline: BaselineKind = Field("blur", description="what not-yet-inserted pixels are (RISE: a blurred image)")


class _CurveMetric(Metric):
    Params = PerturbationCurveParams
    insertion: bool = False

    def passes(self) -> Passes:
        return Passes(self.params.steps + 1, 0)

    def score(self, inp: MetricInput) -> Scores:
        p = self.params
        x = inp.batch.x
        curves = perturbation_curves(
            inp.model,
            x,
            make_baseline(x, p, inp.seeds),
            inp.attributions,
            inp.batch.target,
            steps=p.steps,
            insertion=self.insertion,
            output=p.output,
            forward_batch=p.forward_batch,
        )
        return Scores(values={"": normalised_auc(curves)}, curves={"": curves})


class Deletion(_CurveMetric):
    """Deletion AUC: target score as the most relevant pixels are removed first (lower is better)."""

    outputs: ClassVar[dict[str, Direction]] = {"": Direction.LOWER}
    insertion = False


class Insertion(_CurveMetric):
    """Insertion AUC: target score as the most relevant pixels are restored first (higher is better)."""

    Params = InsertionParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}
    insertion = True
