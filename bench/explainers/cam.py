"""Class activation maps (the CAM family), computed natively and batched on the model's device.

Every method goes through one pipeline:

1. ``capture``: one forward pass with a hook on the explained layer that records its output. For
   gradient methods the output is re-rooted as a leaf of the autograd graph, so a single backward
   from the target logits yields its gradient and stops there (nothing is propagated further
   towards the input, and the input need not require grad);
2. ``CAMLayer.spatial``: the output as (N, C, h, w) whatever its layout (CNN "nchw", Swin "nhwc",
   ViT "tokens");
3. per method, channel weights or elementwise weights; the map is the weighted sum over channels;
4. ``finish``: ReLU (``relu``), optional min-max scaling (``normalize``), resize to the input
   (``upsample``).

pytorch-grad-cam (``pytorch_grad_cam``) is the reference. It post-processes every map in numpy and
OpenCV, one image at a time, and always applies ReLU and min-max scaling. Here maps keep their sign
and scale by default, so that scores stay comparable; with ``normalize: true`` (and bilinear
upsampling) they equal pytorch-grad-cam's maps (``tests/test_cam.py`` checks every method).

The layer machinery (``CAMLayer``, ``capture``, ``replaced_output``) and the resizing and scaling of maps
live in ``bench.explainers.cam_layers``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.component import Params
from bench.errors import ConfigError
from bench.explainers.base import Explainer, auto_batch
from bench.explainers.cam_layers import CAMLayer, capture, minmax, replaced_output, upsample_map
from bench.models.base import target_outputs
from bench.types import ImageShape, LoadedModel, Passes

ALL_CONV = "all_conv"  # the `layer` value that sweeps every nn.Conv2d of the model
TYPICAL_CHANNELS = 512  # channels assumed by pass estimates of per-channel methods (ResNet-18/VGG last block)


class CAMParams(Params):
    layer: str | None = Field(
        None,
        description="module path of the explained layer (default: the model's CAM layer); "
        f"'{ALL_CONV}' sweeps every nn.Conv2d of the model, one result per layer",
    )
    relu: bool = Field(True, description="keep positive evidence only (ReLU on the map), as in the papers")
    upsample: Literal["bilinear", "bicubic", "nearest"] = Field(
        "bilinear", description="how the layer-resolution map is resized to the input"
    )
    normalize: bool = Field(
        False,
        description="min-max scale every map to [0, 1] before and after resizing, as pytorch-grad-cam does "
        "(off: maps keep their sign and scale, comparable across images)",
    )


class BatchedCAMParams(CAMParams):
    batch_size: int | None = Field(
        None,
        ge=1,
        le=65536,
        description="perturbed images (one per channel per image) per forward pass, bounds memory; default: "
        "as forward_batch auto (on a CPU about 256k input values, at least 16 images; 32M values on a GPU)",
    )

    def batch_on(self, device: torch.device, values_per_image: int) -> int:
        """The batch size for images of ``values_per_image`` values on ``device``; it changes speed and memory,
        never the maps. A fixed 16 on a CPU made Score-CAM 1.3x its forward passes on ResNet-20 at 32 px
        (benchmarks/peers.py), whose forwards run fastest at 64 images."""
        return self.batch_size if self.batch_size is not None else auto_batch(values_per_image, device.type)


def finish(cam: torch.Tensor, size: tuple[int, int], p: CAMParams) -> torch.Tensor:
    """Layer-resolution maps (N, 1, h, w) -> attributions (N, 1, H, W).

    pytorch-grad-cam applies ReLU, min-max scales, resizes with ``cv2.resize`` and min-max scales
    again (when it averages target layers); ``normalize`` replicates exactly that sequence.
    """
    if p.relu:
        cam = cam.clamp(min=0)
    if p.normalize:
        cam = minmax(cam)
    cam = upsample_map(cam, size, p.upsample)
    return minmax(cam) if p.normalize else cam


# --------------------------------------------------------------------------------------------------------------------
# the explainers


class CAMExplainer(Explainer):
    """Base of the CAM family: a map of the explained layer's channels, weighted per method, upsampled.

    Subclasses implement ``layer_map`` (N, 1, h, w); the base resolves the layer, sweeps layers for
    ``layer: all_conv`` and post-processes the map.
    """

    family = "cam"

    Params = CAMParams
    requires = frozenset({"spatial_layer"})

    def sweeps(self) -> bool:
        sweep: bool = self.params.layer == ALL_CONV
        return sweep

    def expand(self, model: LoadedModel) -> list[tuple[str, Explainer]]:
        """For ``layer: all_conv``, this method at every nn.Conv2d (in ``named_modules`` order); else itself."""
        if not self.sweeps():
            return [("", self)]
        return [(path, type(self)(self.params.model_copy(update={"layer": path}))) for path in conv_layers(model)]

    def supports(self, model: LoadedModel) -> str | None:
        if self.sweeps():
            return None if conv_layers(model) else f"layer: {ALL_CONV} found no nn.Conv2d in the model"
        return super().supports(model)

    def attribute(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        path = self.params.layer or model.spec.target_layer
        if path is None:
            raise ConfigError("the model declares no CAM layer", field="layer", fix="set params.layer")
        if path == ALL_CONV:
            raise ConfigError(
                f"layer: {ALL_CONV} is a sweep: explain with the variants of expand(model)",
                field="layer",
                fix="run it through the runner, which expands the sweep, or name one layer",
            )
        cam = self.layer_map(model, CAMLayer.of(model, path), x, target.to(x.device))
        return finish(cam, (x.shape[-2], x.shape[-1]), self.params)

    @abstractmethod
    def layer_map(self, model: LoadedModel, layer: CAMLayer, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The map at the layer's resolution, before ReLU and resizing: (N, 1, h, w)."""


def conv_layers(model: LoadedModel) -> list[str]:
    """Paths of every nn.Conv2d of the model, in ``named_modules`` order."""
    return [path for path, module in model.module.named_modules() if isinstance(module, nn.Conv2d)]


class GradientCAM(CAMExplainer):
    """Base of the gradient CAMs: activations weighted by a function of the target logit's gradient.

    One forward and one backward (stopping at the layer) per batch.
    """

    requires = frozenset({"gradients", "spatial_layer"})

    def passes(self, image_shape: ImageShape) -> Passes:
        return Passes(1, 1)

    def layer_map(self, model: LoadedModel, layer: CAMLayer, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():  # also when the caller runs under torch.no_grad()
            logits, raw = capture(model, layer, x, with_grad=True)
            (grad,) = torch.autograd.grad(target_outputs(logits, target).sum(), raw, allow_unused=True)
        if grad is None:
            raise ConfigError(
                f"the model's outputs do not depend on layer {layer.path!r}",
                field="layer",
                fix="choose a layer on the path from the input to the logits",
            )
        a, g = layer.spatial(raw.detach()), layer.spatial(grad)
        return (self.weigh(a, g) * a).sum(1, keepdim=True)

    @abstractmethod
    def weigh(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Weights of the activations ``a`` given their gradients ``g`` (both (N, C, h, w)):
        (N, C, 1, 1) per channel or (N, C, h, w) per element."""


class GradCAM(GradientCAM):
    """Grad-CAM (Selvaraju et al. 2017): layer activations weighted by spatially averaged gradients."""

    version = 1

    def weigh(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g.mean((2, 3), keepdim=True)


class GradCAMPlusPlus(GradientCAM):
    """Grad-CAM++ (Chattopadhay et al. 2018): positive gradients weighted by closed-form second-order terms.

    With an exponential of the logit as the score, the second and third derivatives are powers of
    the gradient, so alpha = g^2 / (2 g^2 + sum(A) g^3) (zero where g = 0); the channel weight is
    sum(alpha * relu(g)), exactly as pytorch-grad-cam computes it.
    """

    version = 1

    def weigh(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        g2 = g * g
        alpha = g2 / (2 * g2 + a.sum((2, 3), keepdim=True) * g2 * g + 1e-6)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        return (alpha * g.clamp(min=0)).sum((2, 3), keepdim=True)


class XGradCAM(GradientCAM):
    """XGrad-CAM (Fu et al. 2020): gradients averaged with activation-normalised weights, sum(g * A) / sum(A)."""

    version = 1

    def weigh(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (g * a / (a.sum((2, 3), keepdim=True) + 1e-7)).sum((2, 3), keepdim=True)


class LayerCAM(GradientCAM):
    """Layer-CAM (Jiang et al. 2021): every activation weighted by its own positive gradient."""

    version = 1

    def weigh(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g.clamp(min=0)


class HiResCAM(GradientCAM):
    """HiResCAM (Draelos & Carin 2020): elementwise gradient x activation, summed over channels."""

    version = 1

    def weigh(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g


class EigenCAM(CAMExplainer):
    """Eigen-CAM (Muhammad & Yeasin 2020): projection of the activations on their first principal component.

    Gradient-free and class-agnostic: the target is ignored, every class gets the same map. The
    component's sign is arbitrary (SVD), so it is fixed to make the largest-magnitude value positive
    (flip when |min| > |max|, the rule of pytorch-grad-cam's sign-corrected projection).
    """

    version = 1

    def passes(self, image_shape: ImageShape) -> Passes:
        return Passes(1, 0)

    def layer_map(self, model: LoadedModel, layer: CAMLayer, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _, raw = capture(model, layer, x, with_grad=False)
        return first_component(layer.spatial(raw))


def first_component(a: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N, 1, h, w): each position's channel vector, centred over positions, projected
    on the top right-singular vector of that (h*w, C) matrix; sign fixed as in ``EigenCAM``."""
    n, _, h, w = a.shape
    centred = a.flatten(2).transpose(1, 2)  # (N, h*w, C)
    centred = centred - centred.mean(1, keepdim=True)
    top = torch.linalg.svd(centred, full_matrices=False).Vh[:, :1, :]  # (N, 1, C)
    projection = (centred * top).sum(2)  # (N, h*w)
    flip = projection.amin(1).abs() > projection.amax(1).abs()
    return torch.where(flip[:, None], -projection, projection).view(n, 1, h, w)


def channel_batches(
    n: int, c: int, batch_size: int, device: torch.device
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """The (image, channel) pairs of a batch, ``batch_size`` at a time: (flat slice, image index, channel index)."""
    for start in range(0, n * c, batch_size):
        flat = torch.arange(start, min(start + batch_size, n * c), device=device)
        yield slice(start, start + len(flat)), flat // c, flat % c


class ScoreCAM(CAMExplainer):
    """Score-CAM (Wang et al. 2020): channels weighted by the softmax of the target logit on channel-masked inputs.

    Each channel, upsampled (bilinear, corners aligned) and min-max scaled to [0, 1], masks the image;
    the target logits of the masked images, softmaxed over channels, weigh the activations (the
    pytorch-grad-cam formulation). One forward per channel per image, ``batch_size`` at a time.
    """

    version = 1

    Params = BatchedCAMParams

    def passes(self, image_shape: ImageShape) -> Passes:
        """One forward pass, plus one per channel of the layer: known once the model is, estimated as
        ``TYPICAL_CHANNELS``."""
        return Passes(1 + TYPICAL_CHANNELS, 0)

    def layer_map(self, model: LoadedModel, layer: CAMLayer, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _, raw = capture(model, layer, x, with_grad=False)
        a = layer.spatial(raw)
        n, c = a.shape[:2]
        scores = torch.empty(n * c, device=x.device)
        with torch.no_grad():
            for flat, i, k in channel_batches(n, c, self.params.batch_on(x.device, x[0].numel()), x.device):
                masks = F.interpolate(a[i, k][:, None], size=x.shape[-2:], mode="bilinear", align_corners=True)
                low = masks.amin((2, 3), keepdim=True)
                masks = (masks - low) / (masks.amax((2, 3), keepdim=True) - low + 1e-8)
                scores[flat] = target_outputs(model.module(x[i] * masks), target[i])
        weights = scores.view(n, c).softmax(1)
        return (weights[:, :, None, None] * a).sum(1, keepdim=True)


class AblationCAM(CAMExplainer):
    """Ablation-CAM (Desai & Ramaswamy 2020): channels weighted by the relative drop of the target logit when zeroed.

    weight_k = (y - y_k) / y, with y_k the target logit when channel k of the layer is set to zero
    (in every position; for tokens, in every token). pytorch-grad-cam zeroes channels likewise when
    the layer's minimum is 0 (post-ReLU layers), but otherwise sets them to a large negative value.
    One forward per channel per image, ``batch_size`` at a time, in which the layer itself is not
    computed (its output is replaced), so it costs less than as many full forwards.
    """

    version = 1

    Params = BatchedCAMParams

    def passes(self, image_shape: ImageShape) -> Passes:
        """One forward pass, plus one per channel of the layer: known once the model is, estimated as
        ``TYPICAL_CHANNELS``."""
        return Passes(1 + TYPICAL_CHANNELS, 0)

    def layer_map(self, model: LoadedModel, layer: CAMLayer, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, raw = capture(model, layer, x, with_grad=False)
        a, dim = layer.spatial(raw), layer.channel_dim(raw)
        n, c = a.shape[:2]
        ablated = torch.empty(n * c, device=x.device)
        with torch.no_grad():
            for flat, i, k in channel_batches(n, c, self.params.batch_on(x.device, x[0].numel()), x.device):
                keep = torch.ones(len(k), c, device=x.device, dtype=raw.dtype)
                keep[torch.arange(len(k), device=x.device), k] = 0
                shape = [len(k)] + [1] * (raw.ndim - 1)
                shape[dim] = c
                replacement = raw[i] * keep.view(shape)
                with replaced_output(layer.module, replacement):
                    ablated[flat] = target_outputs(model.module(x[i]), target[i])
        original = target_outputs(logits, target)[:, None]
        weights = (original - ablated.view(n, c)) / original
        return (weights[:, :, None, None] * a).sum(1, keepdim=True)
