"""SmoothGrad (Smilkov et al. 2017): a noise tunnel over any gradient method of this package.

For every image, ``n_samples`` noisy copies x + e with e ~ N(0, sigma^2),
sigma = ``stdev`` x (max(x) - min(x)) of that image (the paper's noise level),
are explained by the base method; per channel, the attributions a are then
averaged (``smoothgrad``: E[a]), squared and averaged (``smoothgrad_sq``:
E[a^2]) or turned into their variance (``vargrad``: E[a^2] - E[a]^2, Adebayo
et al. 2018), as captum's NoiseTunnel does, and only then reduced over
channels. The noise of an image is drawn from its own seed, so the map does
not depend on the batch it comes in.

The expansion is memory-bounded: ``internal_batch_size`` noisy images at most
go through the base method at once (``draw_blocks`` cuts the images x draws
grid into such blocks; Gradient SHAP uses the same blocks).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from pydantic import Field, ValidationError, model_validator

from bench.explainers.base import ReduceFields, Reduction
from bench.explainers.gradient import (
    ChannelExplainer,
    DeepLift,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    Saliency,
)
from bench.seeding import per_sample_rand
from bench.types import ImageShape, LoadedModel, Passes

BASES: dict[str, type[ChannelExplainer]] = {
    "saliency": Saliency,
    "input_x_gradient": InputXGradient,
    "integrated_gradients": IntegratedGradients,
    "guided_backprop": GuidedBackprop,
    "deeplift": DeepLift,
}
NoiseTunnelType = Literal["smoothgrad", "smoothgrad_sq", "vargrad"]


def draw_blocks(n: int, draws: int, budget: int) -> Iterator[tuple[slice, list[slice]]]:
    """Cut the n images x ``draws`` grid into blocks of at most ``budget`` rows.

    Yields (images, [draw slices]): consecutive images whose draws are made
    together, and the slices of their draws that go through the model together
    (images x slice <= budget rows; at least one image and one draw).
    """
    group = max(1, budget // draws)
    for start in range(0, n, group):
        images = slice(start, min(n, start + group))
        step = max(1, budget // (images.stop - images.start))
        yield images, [slice(d, min(draws, d + step)) for d in range(0, draws, step)]


def repeat_rows(values: Sequence[Any], times: int) -> list[Any]:
    """[v0, v0, ..., v1, v1, ...]: per-image values for image-major expanded rows."""
    return [v for v in values for _ in range(times)]


class SmoothGradParams(ReduceFields):
    base: Literal["saliency", "input_x_gradient", "integrated_gradients", "guided_backprop", "deeplift"] = Field(
        "saliency", description="the gradient method whose attributions are averaged over noisy copies"
    )
    base_params: dict[str, Any] = Field(
        default_factory=dict,
        description="params of the base method (validated against its params; the reduction is set here)",
    )
    n_samples: int = Field(50, ge=1, le=10_000, description="noisy copies per image (the paper: 50)")
    stdev: float = Field(
        0.15, ge=0, le=10, description="noise sigma as a fraction of the image's value range (the paper: 0.1-0.2)"
    )
    nt_type: NoiseTunnelType = Field(
        "smoothgrad", description="smoothgrad: mean | smoothgrad_sq: mean of squares | vargrad: variance"
    )
    internal_batch_size: int = Field(64, ge=1, description="noisy images per base-method call (memory bound)")
    reduce: Reduction = Field(
        "abs_sum", description="channel reduction (abs_sum: the grey-scale maps of the SmoothGrad paper's code)"
    )

    @model_validator(mode="after")
    def _valid_base_params(self) -> SmoothGradParams:
        if "reduce" in self.base_params:
            raise ValueError("base_params cannot set reduce: the channels are reduced after smoothing (set reduce)")
        try:
            BASES[self.base].Params(**self.base_params)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise ValueError(f"invalid base_params for {self.base}: {problems}") from None
        return self


class SmoothGrad(ChannelExplainer):
    """SmoothGrad (Smilkov et al. 2017): a base method's attributions averaged over noisy copies of the image."""

    Params = SmoothGradParams
    deterministic = False

    def __init__(self, params: SmoothGradParams | None = None):
        super().__init__(params)
        base_cls = BASES[self.params.base]
        self.base = base_cls(base_cls.Params(**self.params.base_params))

    def passes(self, image_shape: ImageShape) -> Passes:
        passes: Passes = self.base.passes(image_shape) * self.params.n_samples
        return passes

    def noise(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """The noise (N, n_samples, C, H, W) added to the images ``x``, from their seeds."""
        p = self.params
        unit = per_sample_rand(seeds, (p.n_samples, *x.shape[1:]), "smoothgrad-noise", device=x.device, normal=True)
        value_range = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1, 1)
        noise: torch.Tensor = unit.to(x.dtype) * (p.stdev * value_range)
        return noise

    def channel_attributions(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        """Per-channel E[a], E[a^2] or Var[a] over the noisy copies: (N, C, H, W)."""
        p = self.params
        mean = torch.zeros_like(x, dtype=torch.float32)
        mean_sq = torch.zeros_like(mean) if p.nt_type != "smoothgrad" else None
        for images, draw_slices in draw_blocks(len(x), p.n_samples, p.internal_batch_size):
            noise = self.noise(x[images], seeds[images])
            for draws in draw_slices:
                noisy = (x[images, None] + noise[:, draws]).flatten(0, 1)
                m = draws.stop - draws.start
                rows = self.base.channel_attributions(
                    model, noisy, target[images].repeat_interleave(m), repeat_rows(seeds[images], m)
                ).float()
                rows = rows.view(-1, m, *x.shape[1:])
                mean[images] += rows.sum(1)
                if mean_sq is not None:
                    mean_sq[images] += rows.square().sum(1)
        mean /= p.n_samples
        if mean_sq is None:
            return mean
        mean_sq /= p.n_samples
        return mean_sq if p.nt_type == "smoothgrad_sq" else mean_sq - mean.square()
