"""Control explainers that do not look at the model: the floor any real explainer must beat.

``random`` is chance level; ``gaussian_blob`` is a centre bias (objects tend to
be in the middle of photographs, so a centred blob scores well on localisation
without explaining anything); ``sobel`` is an edge detector (maps that follow
edges can look plausible and still ignore the model, Adebayo et al. 2018).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import Field

from bench.component import Params
from bench.explainers.base import Explainer
from bench.perturb import gaussian_blur
from bench.seeding import per_sample_rand
from bench.types import ImageShape, LoadedModel, Passes

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B in grey


class ModelFreeExplainer(Explainer):
    """A control: its maps depend on the images at most, never on the model."""

    family = "control"
    control = True

    def passes(self, image_shape: ImageShape) -> Passes:
        return Passes(0, 0)


class RandomAttribution(ModelFreeExplainer):
    """Uniform random attributions, drawn per sample from its seed (the chance-level control)."""

    deterministic = False

    def attribute(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        return per_sample_rand(seeds, (1, *x.shape[-2:]), "random-attribution", device=x.device)


class GaussianBlobParams(Params):
    sigma: float = Field(0.25, gt=0, le=10, description="standard deviation as a fraction of the image's shorter side")


def gaussian_blob(h: int, w: int, sigma: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W) isotropic Gaussian exp(-r^2 / (2 s^2)) around the image centre, peak 1, s = sigma * min(H, W)."""
    s = sigma * min(h, w)
    rows = torch.arange(h, device=device, dtype=torch.float32) - (h - 1) / 2
    cols = torch.arange(w, device=device, dtype=torch.float32) - (w - 1) / 2
    return torch.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) / (2 * s * s))


class GaussianBlob(ModelFreeExplainer):
    """A centred isotropic Gaussian, the same for every image (the centre-bias control)."""

    Params = GaussianBlobParams

    def attribute(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        h, w = x.shape[-2:]
        return gaussian_blob(h, w, self.params.sigma, x.device).expand(len(x), 1, h, w).contiguous()


class SobelParams(Params):
    blur_sigma: float = Field(
        0.0, ge=0, le=100, description="Gaussian pre-smoothing sigma in pixels (0: none), to ignore fine texture"
    )


def greyscale(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 1, H, W): BT.601 luma of RGB images, the channel mean otherwise."""
    if x.shape[1] == 3:
        return torch.einsum("nchw,c->nhw", x, x.new_tensor(LUMA))[:, None]
    return x.mean(1, keepdim=True)


def sobel_magnitude(grey: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude sqrt(gx^2 + gy^2) of (N, 1, H, W) images with 3x3 Sobel filters.

    Borders are replicated, so a flat image has zero gradient everywhere, its border included.
    """
    smooth = grey.new_tensor([1.0, 2.0, 1.0])
    diff = grey.new_tensor([-1.0, 0.0, 1.0])
    kernels = torch.stack([torch.outer(smooth, diff), torch.outer(diff, smooth)])[:, None]  # (2, 1, 3, 3): gx, gy
    grads = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    return grads.square().sum(1, keepdim=True).sqrt()


class SobelEdges(ModelFreeExplainer):
    """Sobel gradient magnitude of the grey-scale image (the edge-detector control)."""

    Params = SobelParams

    def attribute(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        grey = greyscale(x.float())
        sigma = self.params.blur_sigma
        if sigma > 0:
            kernel = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(grey.shape[-2:]) // 2) - 1)  # odd, within the image
            if kernel >= 3:
                grey = gaussian_blur(grey, kernel, sigma)
        return sobel_magnitude(grey)
