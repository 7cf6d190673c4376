"""Gradient-based explainers backed by captum.

Each of them first computes per-channel attributions (N, C, H, W)
(``channel_attributions``) and then reduces the channels with its ``reduce``
param. SmoothGrad wraps any of them through ``channel_attributions``: its
noise average, square or variance is taken per channel, before the reduction,
as in the paper and in captum's NoiseTunnel.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from types import ModuleType
from typing import Literal, cast

import torch
from pydantic import Field

from bench.explainers.base import Explainer, ReduceFields, Reduction, forward_batch_size, reduce_channels
from bench.perturb import BaselineFields, make_baseline
from bench.types import ImageShape, LoadedModel, Passes


def captum_attr() -> ModuleType:
    """``captum.attr``, imported on first use: about half a second that ``xbench list`` and ``validate`` skip."""
    import captum.attr

    module: ModuleType = captum.attr
    return module


class ChannelExplainer(Explainer):
    """An explainer whose per-channel attributions exist before the channel reduction."""

    family = "gradient"

    requires = frozenset({"gradients"})

    @abstractmethod
    def channel_attributions(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        """Attributions (N, C, H, W) for ``x`` (N, C, H, W) towards ``target`` (N,)."""

    def attribute(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        return reduce_channels(self.channel_attributions(model, x, target, seeds), self.params.reduce)


def _grad_input(x: torch.Tensor) -> torch.Tensor:
    """A leaf copy of ``x`` that captum can differentiate to (the caller's tensor stays untouched)."""
    return x.detach().requires_grad_(True)


class SaliencyParams(ReduceFields):
    reduce: Reduction = Field("max_abs", description="channel reduction (the paper takes the max of |gradient|)")


class Saliency(ChannelExplainer):
    """Vanilla gradient of the target logit w.r.t. the pixels (Simonyan et al. 2014)."""

    Params = SaliencyParams

    def channel_attributions(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        grads: torch.Tensor = captum_attr().Saliency(model.module).attribute(_grad_input(x), target=target, abs=False)
        return grads


class InputXGradientParams(ReduceFields):
    reduce: Reduction = Field(
        "sum", description="channel reduction (sum: a pixel's share of the first-order Taylor term, the default)"
    )


class InputXGradient(ChannelExplainer):
    """Input times gradient (Shrikumar et al. 2016): the first-order Taylor contribution of each pixel."""

    Params = InputXGradientParams

    def channel_attributions(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        attribution: torch.Tensor = captum_attr().InputXGradient(model.module).attribute(_grad_input(x), target=target)
        return attribution


class GuidedBackpropParams(ReduceFields):
    reduce: Reduction = Field(
        "abs_sum", description="channel reduction (abs_sum: the grey-scale maps of the SmoothGrad authors' code)"
    )


class GuidedBackprop(ChannelExplainer):
    """Guided backpropagation (Springenberg et al. 2015): gradients with negative ReLU signals zeroed.

    captum overrides the backward pass of the model's ``nn.ReLU`` modules; ReLUs
    called as functions are not guided.
    """

    Params = GuidedBackpropParams

    def channel_attributions(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        attribution: torch.Tensor = captum_attr().GuidedBackprop(model.module).attribute(_grad_input(x), target=target)
        return attribution


class GuidedGradCAMParams(GuidedBackpropParams):
    layer: str | None = Field(None, description="module path of the Grad-CAM layer (default: the model's CAM layer)")
    upsample: Literal["bilinear", "bicubic", "nearest", "area"] = Field(
        "bilinear", description="how the layer-resolution Grad-CAM map is resized to the input (the paper: bilinear)"
    )


class GuidedGradCAM(ChannelExplainer):
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop times the upsampled Grad-CAM map (captum)."""

    Params = GuidedGradCAMParams
    requires = frozenset({"gradients", "spatial_layer"})

    def supports(self, model: LoadedModel) -> str | None:
        if model.spec.cam_format != "nchw" and self.params.layer is None:
            return f"Guided Grad-CAM needs an (N, C, h, w) layer; the model's CAM layer is {model.spec.cam_format}"
        return super().supports(model)

    def passes(self, image_shape: ImageShape) -> Passes:
        return Passes(2, 2)  # captum runs Grad-CAM and guided backprop separately

    def channel_attributions(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        # cast: supports() refuses a model without a CAM layer when params.layer is unset
        layer = model.layer(cast(str, self.params.layer or model.spec.target_layer))
        attribution: torch.Tensor = (
            captum_attr()
            .GuidedGradCam(model.module, layer)
            .attribute(_grad_input(x), target=target, interpolate_mode=self.params.upsample)
        )
        return attribution


class DeepLiftParams(ReduceFields, BaselineFields):
    reduce: Reduction = Field(
        "sum", description="channel reduction (sum keeps summation-to-delta: the map sums to f(x) - f(baseline))"
    )


class DeepLift(ChannelExplainer):
    """DeepLIFT with the Rescale rule (Shrikumar et al. 2017, captum): contributions relative to a baseline.

    captum overrides the backward pass of the model's non-linear modules (ReLU,
    max-pool, ...); a module object used twice in one forward pass breaks it.
    The map sums to f(x) - f(baseline) exactly on networks without max-pooling;
    captum's max-pool rule is an approximation (a few percent off on a small CNN).
    """

    Params = DeepLiftParams

    def passes(self, image_shape: ImageShape) -> Passes:
        return Passes(2, 2)  # the image and its baseline go through the model together

    def channel_attributions(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        baseline = make_baseline(x, self.params, seeds)
        attribution: torch.Tensor = (
            captum_attr().DeepLift(model.module).attribute(_grad_input(x), baselines=baseline, target=target)
        )
        return attribution


class IntegratedGradientsParams(ReduceFields, BaselineFields):
    n_steps: int = Field(32, ge=2, le=1024, description="points on the path from baseline to image")
    method: Literal["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"] = Field(
        "gausslegendre", description="captum's approximation of the path integral"
    )
    internal_batch_size: int | None = Field(
        None,
        ge=1,
        description="images x steps per forward/backward pass (default: bounded like forward_batch auto, "
        "all steps of an image in one pass where they fit)",
    )


class IntegratedGradients(ChannelExplainer):
    """Integrated Gradients (Sundararajan et al. 2017): path integral of gradients from a baseline."""

    Params = IntegratedGradientsParams

    def passes(self, image_shape: ImageShape) -> Passes:
        return Passes(self.params.n_steps, self.params.n_steps)

    def channel_attributions(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        p = self.params
        baseline = make_baseline(x, p, seeds)
        method = captum_attr().IntegratedGradients(model.module)

        def integrate(rows: slice, internal: int | None) -> torch.Tensor:
            attribution: torch.Tensor = method.attribute(x[rows], baselines=baseline[rows], target=target[rows],
                                                         n_steps=p.n_steps, method=p.method,
                                                         internal_batch_size=internal)  # fmt: skip
            return attribution

        if p.internal_batch_size is not None:
            return integrate(slice(None), p.internal_batch_size)
        # Bounded by default: the quickstart's 50 images x 32 steps in one pass held 2.5 GB of activations.
        # Whole images per pass (their steps together, as unbounded), split into steps only when one
        # image's steps exceed the budget.
        budget = forward_batch_size("auto", x)
        images = max(1, budget // p.n_steps)
        internal = budget if p.n_steps > budget else None
        return torch.cat([integrate(slice(i, i + images), internal) for i in range(0, len(x), images)])
