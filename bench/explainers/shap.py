"""SHAP explainers with a background set (Lundberg & Lee 2017).

Both take their reference images from the dataset: ``prepare`` asks the cell's
context for ``background_size`` images (drawn, stratified and seeded, from the
train split by the runner) and keeps them for every batch of the cell.

Gradient SHAP (expected gradients, Erion et al. 2021) estimates, per image x,

    phi(x) = E_{b ~ background, alpha ~ U(0,1), e ~ N(0, stdev^2)}
             [ (x + e - b) * grad f(b + alpha (x + e - b)) ]

from ``n_samples`` draws made from the image's own seed (batch invariant); it
is written natively with captum's gradient and cross-checked against captum's
GradientShap on identical draws. DeepLIFT-SHAP averages DeepLIFT (Rescale)
attributions over every background image, as captum's DeepLiftShap does; it is
deterministic given the background. Both go through the model in blocks of at
most ``internal_batch_size`` expanded images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field

from bench.explainers.base import ExplainerContext, ReduceFields, Reduction
from bench.explainers.gradient import ChannelExplainer, captum_attr
from bench.explainers.smoothgrad import draw_blocks
from bench.seeding import per_sample_rand
from bench.types import ImageShape, LoadedModel, Passes


class BackgroundFields(ReduceFields):
    background_size: int = Field(
        100, ge=1, le=10_000, description="reference images drawn from the train split (the study: 100)"
    )
    internal_batch_size: int = Field(64, ge=1, description="expanded images per forward/backward pass (memory bound)")
    reduce: Reduction = Field(
        "sum", description="channel reduction (sum keeps the SHAP property: the map sums to f(x) - E[f(baseline)])"
    )


class BackgroundExplainer(ChannelExplainer):
    """A SHAP-style explainer whose reference distribution is a background set taken in ``prepare``."""

    Params = BackgroundFields

    def __init__(self, params: BackgroundFields | None = None):
        super().__init__(params)
        self.background: torch.Tensor | None = None

    def prepare(self, ctx: ExplainerContext) -> None:
        self.background = ctx.background(self.params.background_size)

    def background_for(self, x: torch.Tensor) -> torch.Tensor:
        """The background set (B, C, H, W) on ``x``'s device; an error when ``prepare`` was not called."""
        if self.background is None:
            raise RuntimeError(f"{self.name or type(self).__name__} needs a background set: call prepare(ctx) first")
        if tuple(self.background.shape[1:]) != tuple(x.shape[1:]):
            raise RuntimeError(
                f"background images are {tuple(self.background.shape[1:])}, the images {tuple(x.shape[1:])}"
            )
        return self.background.to(device=x.device, dtype=x.dtype)


class GradientShapParams(BackgroundFields):
    n_samples: int = Field(50, ge=1, le=100_000, description="(baseline, alpha, noise) draws per image")
    stdev: float = Field(
        0.0, ge=0, le=10, description="sigma of the Gaussian noise added to the image, in pixel units (captum: 0)"
    )


class GradientShap(BackgroundExplainer):
    """Gradient SHAP (Lundberg & Lee 2017): expected gradients x (image - baseline) over a background set."""

    Params = GradientShapParams
    deterministic = False

    def passes(self, image_shape: ImageShape) -> Passes:
        return Passes(self.params.n_samples, self.params.n_samples)

    def draws(
        self, x: torch.Tensor, seeds: Sequence[int], num_background: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Per image, from its seed: background indices (N, S) int64, alphas (N, S) and noise (N, S, C, H, W)."""
        p, s = self.params, self.params.n_samples
        u = per_sample_rand(seeds, (s,), "gradient-shap-baseline", device=x.device)
        index = (u * num_background).long().clamp_(max=num_background - 1)
        alpha = per_sample_rand(seeds, (s,), "gradient-shap-alpha", device=x.device).to(x.dtype)
        if p.stdev == 0:
            return index, alpha, None
        noise = per_sample_rand(seeds, (s, *x.shape[1:]), "gradient-shap-noise", device=x.device, normal=True)
        return index, alpha, noise.to(x.dtype) * p.stdev

    def channel_attributions(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        p = self.params
        background = self.background_for(x)
        saliency = captum_attr().Saliency(model.module)
        total = torch.zeros_like(x, dtype=torch.float32)
        for images, draw_slices in draw_blocks(len(x), p.n_samples, p.internal_batch_size):
            index, alpha, noise = self.draws(x[images], seeds[images], len(background))
            for draws in draw_slices:
                k, m = images.stop - images.start, draws.stop - draws.start
                inputs = x[images, None].expand(k, m, *x.shape[1:])
                if noise is not None:
                    inputs = inputs + noise[:, draws]
                inputs = inputs.flatten(0, 1)
                base = background[index[:, draws].flatten()]
                a = alpha[:, draws].reshape(-1, 1, 1, 1)
                points = (a * inputs + (1 - a) * base).detach().requires_grad_(True)
                grads = saliency.attribute(points, target=target[images].repeat_interleave(m), abs=False)
                total[images] += ((inputs - base) * grads).float().view(k, m, *x.shape[1:]).sum(1)
        mean: torch.Tensor = total / p.n_samples
        return mean


class DeepLiftShap(BackgroundExplainer):
    """DeepLIFT-SHAP (Lundberg & Lee 2017, captum): DeepLIFT attributions averaged over a background set."""

    def passes(self, image_shape: ImageShape) -> Passes:
        b = self.params.background_size
        return Passes(2 * b, 2 * b)  # every (image, background image) pair, both through the model

    def channel_attributions(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        background = self.background_for(x)
        deeplift = captum_attr().DeepLift(model.module)
        total = torch.zeros_like(x, dtype=torch.float32)
        for images, draw_slices in draw_blocks(len(x), len(background), self.params.internal_batch_size):
            for refs in draw_slices:
                k, m = images.stop - images.start, refs.stop - refs.start
                inputs = x[images].repeat_interleave(m, dim=0).detach().requires_grad_(True)
                baselines = background[refs].repeat(k, 1, 1, 1)
                attr = deeplift.attribute(inputs, baselines=baselines, target=target[images].repeat_interleave(m))
                total[images] += attr.float().view(k, m, *x.shape[1:]).sum(1)
        return total / len(background)
