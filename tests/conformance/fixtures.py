"""Tiny models, images and masks the conformance harness runs every component on (milliseconds each)."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torchvision.models import VisionTransformer

from bench.cost import PassCounter
from bench.explainers.base import Explainer, ExplainerContext
from bench.models.base import ImageClassifier, prepare
from bench.models.small_cnn import build_small_cnn
from bench.types import Batch, ImageShape, LoadedModel, ModelSpec, Passes

CPU = torch.device("cpu")
CLASSES = 4
SHAPE: ImageShape = (3, 16, 16)  # the images of every check
OTHER_SHAPE: ImageShape = (3, 24, 20)  # a second, non-square size for the pass estimates


def tiny_cnn(target_layer: str | None = "net.0") -> LoadedModel:
    """A 3-block CNN (8, 16, 16 channels, batch norm, global pooling): takes any image size."""
    torch.manual_seed(0)
    net = build_small_cnn((8, 16, 16), num_classes=CLASSES)
    spec = ModelSpec(num_classes=CLASSES, target_layer=target_layer, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return prepare(net, spec, CPU)


def tiny_vit() -> LoadedModel:
    """A 2-block torchvision ViT on 24x24 inputs (4x4 patches of 6 pixels); other sizes are resized inside."""
    torch.manual_seed(0)
    net = VisionTransformer(image_size=24, patch_size=6, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=CLASSES)  # fmt: skip
    nn.init.normal_(net.heads.head.weight, std=0.5)  # torchvision zero-initialises the head: no gradients
    spec = ModelSpec(
        num_classes=CLASSES,
        input_size=(24, 24),
        target_layer="net.encoder.layers.encoder_layer_1.ln_1",
        cam_format="tokens",
        token_grid=(4, 4),
        prefix_tokens=1,
    )
    return prepare(net, spec, CPU)


def nan_model(model: LoadedModel) -> LoadedModel:
    """A copy of ``model`` whose first layer's weights are NaN: every logit is NaN, and every gradient (layer
    names unchanged, so CAM layers resolve; randomising the top layers, as MPRT does, leaves it NaN): what
    metrics must report, not hide."""
    module = copy.deepcopy(model.module)
    first = next(m for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    with torch.no_grad():
        first.weight.fill_(float("nan"))
    return LoadedModel(module=module, spec=model.spec, info={})


def images(n: int, shape: ImageShape = SHAPE, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """``n`` smooth random images in [0, 1] (SLIC finds superpixels in them), targets and per-sample seeds."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    coarse = torch.rand(n, c, max(2, h // 4), max(2, w // 4), generator=g)
    smooth = nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    x = (0.9 * smooth + 0.1 * torch.rand(n, c, h, w, generator=g)).clamp(0, 1)
    return x, torch.arange(n) % CLASSES, [1000 + 17 * i for i in range(n)]


def masks(n: int, shape: ImageShape = SHAPE) -> torch.Tensor:
    """(N, 1, H, W) uint8 masks: a rectangle of object (1) per image with a void (255) border, the rest 0."""
    _, h, w = shape
    out = torch.zeros(n, 1, h, w, dtype=torch.uint8)
    for i in range(n):
        top, left = i % (h // 2), (2 * i) % (w // 2)
        out[i, 0, top : top + h // 3, left : left + w // 3] = 255
        out[i, 0, top + 1 : top + h // 3 - 1, left + 1 : left + w // 3 - 1] = 1
    return out


def batch(n: int, shape: ImageShape = SHAPE, seed: int = 1) -> tuple[Batch, list[int]]:
    """A Batch of ``n`` images with masks and targets, and the samples' seeds."""
    x, target, seeds = images(n, shape, seed)
    b = Batch(x=x, label=target.clone(), ids=[f"s{i}" for i in range(n)], mask=masks(n, shape), target=target)
    return b, seeds


def background(n: int, shape: ImageShape = SHAPE) -> torch.Tensor:
    return images(n, shape, seed=5)[0]


def prepared(explainer: Explainer, model: LoadedModel, shape: ImageShape = SHAPE) -> Explainer:
    """The explainer after ``prepare`` for ``model`` (SHAP methods take a background set of ``shape`` images)."""
    explainer.prepare(ExplainerContext(model=model, device=CPU, seed=0, background=lambda k: background(k, shape)))
    return explainer


def hooks(module: nn.Module) -> int:
    """Hooks registered anywhere in ``module`` (a component must leave none behind)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in module.modules())


@contextmanager
def counting(model: LoadedModel, copies: bool = False) -> Iterator[PassCounter]:
    """``bench.cost.PassCounter`` on the model; with ``copies``, forward passes of any ``ImageClassifier``
    (deep copies of the model, which MPRT randomises) count too."""
    with PassCounter(model.module) as counter:
        if not copies:
            yield counter
            return

        def on_forward(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(module, ImageClassifier) and module is not model.module:
                counter._on_forward(module, _inputs, output)

        handle = nn.modules.module.register_module_forward_hook(on_forward)
        try:
            yield counter
        finally:
            handle.remove()


def per_image(counter: PassCounter, n: int) -> Passes:
    return Passes(counter.forward_images / n, counter.backward_images / n)


def layer_channels(model: LoadedModel) -> int:
    """Channels of the model's CAM layer output (one forward with a hook)."""
    seen: list[int] = []
    handle = model.layer(model.spec.target_layer).register_forward_hook(lambda _m, _i, out: seen.append(out.shape[1]))
    with torch.no_grad():
        model(images(1)[0])
    handle.remove()
    return seen[0]


def same(a: torch.Tensor, b: torch.Tensor, rtol: float = 0.0, atol: float = 0.0) -> None:
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=True)


def sample_seeds(seeds: Sequence[int], offset: int) -> list[int]:
    return [s + offset for s in seeds]
