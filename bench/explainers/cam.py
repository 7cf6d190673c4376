"""Class activation map explainers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from pydantic import Field

from bench.component import Params
from bench.explainers.base import Explainer
from bench.types import LoadedModel


class CAMParams(Params):
    layer: str | None = Field(None, description="module path of the explained layer (default: the model's CAM layer)")
    relu: bool = Field(True, description="keep positive evidence only (ReLU on the map), as in the paper")
    upsample: Literal["bilinear", "bicubic", "nearest"] = Field(
        "bilinear", description="how the layer-resolution map is resized to the input"
    )


def upsample_map(cam: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(N, 1, h, w) -> (N, 1, H, W)."""
    if tuple(cam.shape[-2:]) == tuple(size):
        return cam
    align = False if mode in ("bilinear", "bicubic") else None
    return F.interpolate(cam, size=size, mode=mode, align_corners=align)


class GradCAM(Explainer):
    """Grad-CAM (Selvaraju et al. 2017): layer activations weighted by pooled gradients, upsampled."""

    Params = CAMParams
    requires = frozenset({"gradients", "spatial_layer"})

    def attribute(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        layer = model.layer(self.params.layer or model.spec.target_layer)
        cam = LayerGradCam(model.module, layer).attribute(x, target=target, relu_attributions=self.params.relu)
        return upsample_map(cam, tuple(x.shape[-2:]), self.params.upsample)
