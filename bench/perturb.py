"""Reference ("baseline") images and pixel orderings shared by explainers and metrics.

A baseline is what a pixel becomes when it is removed: black (``zero``), the
image's per-channel mean (``mean``), a Gaussian blur of the image (``blur``, as
in RISE's insertion metric), seeded uniform noise (``noise``) or a constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from bench.component import Params
from bench.seeding import per_sample_rand

BaselineKind = Literal["zero", "mean", "blur", "noise", "constant"]


class BaselineFields(Params):
    """Parameters of a baseline; components whose params inherit this take them flat."""

    baseline: BaselineKind = Field("zero", description="what removed pixels become: zero|mean|blur|noise|constant")
    blur_kernel: int = Field(11, ge=3, le=255, description="blur baseline: Gaussian kernel size (odd)")
    blur_sigma: float = Field(5.0, gt=0, description="blur baseline: Gaussian sigma in pixels")
    baseline_value: float = Field(0.0, description="constant baseline: the pixel value")

    @model_validator(mode="after")
    def _odd_kernel(self) -> BaselineFields:
        if self.blur_kernel % 2 == 0:
            raise ValueError("blur_kernel must be odd")
        return self


def make_baseline(x: torch.Tensor, p: BaselineFields, seeds: Sequence[int] | None = None) -> torch.Tensor:
    """The baseline image for every image in ``x`` (N, C, H, W), on ``x``'s device."""
    if p.baseline == "zero":
        return torch.zeros_like(x)
    if p.baseline == "constant":
        return torch.full_like(x, p.baseline_value)
    if p.baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()
    if p.baseline == "blur":
        kernel = min(p.blur_kernel, 2 * (min(x.shape[-2:]) // 2) - 1)  # torchvision needs kernel <= size
        return gaussian_blur(x, kernel, p.blur_sigma)
    if p.baseline == "noise":
        if seeds is None:
            raise ValueError("the noise baseline needs per-sample seeds")
        return per_sample_rand(seeds, x.shape[1:], "baseline-noise", device=x.device).to(x.dtype)
    raise ValueError(f"unknown baseline {p.baseline!r}")


def gaussian_blur(x: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Gaussian blur of (N, C, H, W) float images with an odd ``kernel`` and reflected borders.

    The same operations as torchvision's ``gaussian_blur`` (a normalised 2-D kernel, reflect
    padding, a grouped convolution), so the same numbers, without importing torchvision (whose
    import costs seconds: it loads ``torch._dynamo``). ``tests/test_faithfulness.py`` compares them. Never
    autocast: under ``precision: bf16`` the convolution returned bf16 images, which deletion and insertion
    could not mix with the float32 images (``torch.lerp`` refused them).
    """
    with torch.autocast(device_type=x.device.type, enabled=False):  # a baseline in the images' own precision
        half = (kernel - 1) * 0.5
        pdf = torch.exp(-0.5 * (torch.linspace(-half, half, kernel, dtype=x.dtype, device=x.device) / sigma).pow(2))
        k1 = pdf / pdf.sum()
        k2 = torch.mm(k1[:, None], k1[None, :]).expand(x.shape[-3], 1, kernel, kernel)
        padded = F.pad(x, [kernel // 2] * 4, mode="reflect")
        return F.conv2d(padded, k2, groups=x.shape[-3])


def pixel_ranks(attr: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel by decreasing attribution: (N, 1, H, W) -> (N, H*W) int64.

    Rank 0 is the most relevant pixel. Ties break by pixel position (row-major), so
    the order is deterministic and the same on every device.
    """
    flat = attr.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def baseline_images(
    x: torch.Tensor, baseline: torch.Tensor | BaselineKind, seeds: Sequence[int] | None = None
) -> torch.Tensor:
    """What removed pixels of ``x`` (N, C, H, W) become, for the functional API: ``baseline`` itself when it is
    a tensor (broadcast to ``x``'s shape, on its device), else the baseline of that kind with the default
    settings of ``BaselineFields`` (``noise`` draws from ``seeds``)."""
    if isinstance(baseline, torch.Tensor):
        return baseline.to(device=x.device, dtype=x.dtype).expand_as(x)
    return make_baseline(x, BaselineFields(baseline=baseline), seeds)
