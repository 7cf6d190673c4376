"""Where a CAM looks and how its map is read: the explained layer, its output captured in one forward pass, and
the resizing and scaling of the maps (the pipeline of ``bench.explainers.cam``).

``capture`` records the layer's output with a forward hook; for gradient methods the output is re-rooted as a
leaf of the autograd graph, so a single backward from the target logits yields its gradient and stops there.
``CAMLayer.spatial`` reads that output as (N, C, h, w) whatever its layout (CNN "nchw", Swin "nhwc", ViT
"tokens"). ``replaced_output`` lets Ablation-CAM skip the layer's own computation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import ConfigError
from bench.types import LoadedModel, ModelSpec

Layout = Literal["nchw", "nhwc", "tokens"]
_SPATIAL_FIX = "choose a layer whose output is a feature map (N, C, h, w), e.g. the last convolutional block"


# --------------------------------------------------------------------------------------------------------------------
# the explained layer: where it is, how its output is laid out, how to capture it


@dataclass(frozen=True)
class CAMLayer:
    """The explained layer of a model and how to read its output as an (N, C, h, w) feature map.

    The spec's ``cam_format`` describes its own ``target_layer``. Another layer, named explicitly, is
    taken as "nchw", unless the spec says "tokens" and the layer's output is 3-D (N, T, C).
    """

    path: str
    module: nn.Module
    spec: ModelSpec

    @classmethod
    def of(cls, model: LoadedModel, path: str) -> CAMLayer:
        return cls(path, model.layer(path), model.spec)

    def layout(self, raw: torch.Tensor) -> Layout:
        if self.path == self.spec.target_layer:
            return self.spec.cam_format
        return "tokens" if raw.ndim == 3 and self.spec.cam_format == "tokens" else "nchw"

    def channel_dim(self, raw: torch.Tensor) -> int:
        """The channel axis of the layer's raw output."""
        return 1 if self.layout(raw) == "nchw" else raw.ndim - 1

    def spatial(self, raw: torch.Tensor) -> torch.Tensor:
        """The raw output (or its gradient) as (N, C, h, w); a ConfigError when it is not a feature map."""
        layout = self.layout(raw)
        if layout == "tokens":
            return self._tokens(raw)
        if raw.ndim != 4:
            raise ConfigError(
                f"layer {self.path!r} outputs shape {tuple(raw.shape)}, not a spatial feature map "
                f"({layout}: 4 dimensions expected)",
                field="layer",
                fix=_SPATIAL_FIX,
            )
        return raw.permute(0, 3, 1, 2) if layout == "nhwc" else raw

    def _tokens(self, raw: torch.Tensor) -> torch.Tensor:
        """(N, T, C) tokens -> (N, C, h, w): drop the leading non-patch tokens, fold the patch grid."""
        grid, prefix = self.spec.token_grid, self.spec.prefix_tokens
        if raw.ndim != 3 or grid is None or raw.shape[1] - prefix != grid[0] * grid[1]:
            raise ConfigError(
                f"layer {self.path!r} outputs shape {tuple(raw.shape)}, which is not {prefix} prefix token(s) "
                f"followed by a {grid} grid of patch tokens",
                field="layer",
                fix="choose a transformer block whose output is (N, tokens, C); check the model's token_grid",
            )
        n, _, c = raw.shape
        return raw[:, prefix:].reshape(n, grid[0], grid[1], c).permute(0, 3, 1, 2)


@contextmanager
def forward_hook(module: nn.Module, hook: Callable[[nn.Module, Any, Any], Any]) -> Iterator[None]:
    """``hook`` registered on ``module`` for the duration of the block, removed even on errors."""
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def replaced_output(module: nn.Module, value: torch.Tensor) -> Iterator[None]:
    """``module`` returns ``value`` without computing anything for the duration of the block.

    Its ``forward`` is shadowed by an instance attribute and restored afterwards, even on errors; unlike
    a forward hook that overwrites the output, the module's own computation (a whole ResNet stage when
    it is the CAM layer) is skipped. pytorch-grad-cam swaps the module in its parent to the same end.
    """
    previous = module.__dict__.get("forward")
    module.forward = lambda *args, **kwargs: value
    try:
        yield
    finally:
        if previous is None:
            del module.forward
        else:
            module.forward = previous


def capture(model: LoadedModel, layer: CAMLayer, x: torch.Tensor, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass: (logits, the layer's raw output).

    With ``with_grad`` the layer's output is returned as a leaf that requires grad and the rest of the
    forward runs from a copy of it, so ``torch.autograd.grad(score, output)`` gives the layer gradient
    with a backward pass that stops at the layer (the copy keeps in-place operations downstream, like
    ResNet's ``out += identity``, legal). The layer must run exactly once per forward pass: the
    activation of a module called several times (a shared ReLU) would be ambiguous.
    """
    seen: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> torch.Tensor | None:
        if not isinstance(output, torch.Tensor):
            raise ConfigError(
                f"layer {layer.path!r} returns a {type(output).__name__}, not a tensor", field="layer", fix=_SPATIAL_FIX
            )
        seen.append(output.detach().requires_grad_(with_grad))
        return seen[-1].clone() if with_grad else None

    with torch.set_grad_enabled(with_grad), forward_hook(layer.module, hook):
        logits = model.module(x.detach())
    if len(seen) != 1:
        raise ConfigError(
            f"layer {layer.path!r} ran {len(seen)} times in one forward pass; a CAM needs a layer that runs once",
            field="layer",
            fix="choose a module that is not shared or skipped, e.g. a whole block rather than its ReLU",
        )
    return logits, seen[0]


# --------------------------------------------------------------------------------------------------------------------
# post-processing shared by every method


def upsample_map(cam: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(N, 1, h, w) -> (N, 1, H, W); bilinear and bicubic sample pixel centres (align_corners=False),
    which is what OpenCV's ``cv2.resize`` (pytorch-grad-cam) does too."""
    if tuple(cam.shape[-2:]) == tuple(size):
        return cam
    align = False if mode in ("bilinear", "bicubic") else None
    return F.interpolate(cam, size=size, mode=mode, align_corners=align)


def minmax(maps: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Every map (N, ...) scaled to [0, 1]: (m - min) / (max - min + eps), pytorch-grad-cam's ``scale_cam_image``."""
    flat = maps.flatten(1)
    low = flat.amin(1).view(-1, *[1] * (maps.ndim - 1))
    shifted = maps - low
    return shifted / (shifted.flatten(1).amax(1).view_as(low) + eps)
