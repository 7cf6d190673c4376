"""The explainer contract, checked for every registered explainer on a small CNN."""

from __future__ import annotations

import pytest
import torch

from bench.errors import ConfigError
from bench.explainers.base import ExplainerContext
from bench.models.base import prepare
from bench.models.small_cnn import build_small_cnn
from bench.registry import EXPLAINERS, load_builtin_components
from bench.types import LoadedModel, ModelSpec

load_builtin_components()
ALL = EXPLAINERS.names()


@pytest.fixture(scope="module")
def cnn() -> LoadedModel:
    torch.manual_seed(0)
    net = build_small_cnn((8, 16, 16), num_classes=4)
    spec = ModelSpec(num_classes=4, target_layer="net.0", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return prepare(net, spec, torch.device("cpu"))


@pytest.fixture(scope="module")
def vit() -> LoadedModel:
    """A tiny torchvision ViT (24x24 images, 6x6 patches) for the transformer-only explainers."""
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    net = VisionTransformer(
        image_size=24, patch_size=6, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=4
    )
    spec = ModelSpec(
        num_classes=4,
        target_layer="net.encoder.layers.encoder_layer_1.ln_1",
        cam_format="tokens",
        token_grid=(4, 4),
        prefix_tokens=1,
    )
    return prepare(net, spec, torch.device("cpu"))


def _ready(name: str, cnn: LoadedModel, vit: LoadedModel):
    """The explainer with default params, prepared for the first of (cnn, vit) it supports."""
    explainer = EXPLAINERS.get(name)()
    model = cnn if explainer.supports(cnn) is None else vit
    if explainer.supports(model) is not None:
        pytest.skip(f"{name} applies to neither test model: {explainer.supports(model)}")
    background = torch.rand(8, 3, 24, 24, generator=torch.Generator().manual_seed(5))
    explainer.prepare(
        ExplainerContext(model=model, device=torch.device("cpu"), seed=0, background=lambda n: background[:n])
    )
    return explainer, model


def _inputs(n: int = 8, size: int = 24):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=g), torch.arange(n) % 4, [1000 + i for i in range(n)]


def _hooks(model: LoadedModel) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.module.modules()
    )


@pytest.mark.parametrize("name", ALL)
def test_contract(name: str, cnn: LoadedModel, vit: LoadedModel) -> None:
    explainer, cnn = _ready(name, cnn, vit)
    x, target, seeds = _inputs()
    before = {k: v.clone() for k, v in cnn.module.state_dict().items()}
    hooks = _hooks(cnn)
    x_copy = x.clone()
    out = explainer.explain(cnn, x, target, seeds)
    assert out.shape == (8, 1, 24, 24) and out.dtype == torch.float32 and out.device == x.device
    assert torch.isfinite(out).all() and not out.requires_grad
    assert torch.equal(x, x_copy), "the input must not be modified"
    assert not cnn.module.training and _hooks(cnn) == hooks
    assert all(torch.equal(before[k], v) for k, v in cnn.module.state_dict().items())
    assert all(not p.requires_grad for p in cnn.module.parameters())
    again = explainer.explain(cnn, x, target, seeds)
    torch.testing.assert_close(out, again, rtol=0, atol=0)  # same seeds, same numbers


@pytest.mark.parametrize("name", ALL)
def test_batch_invariance(name: str, cnn: LoadedModel, vit: LoadedModel) -> None:
    """A batch of 8 equals two batches of 4 (stochastic methods too: they draw per-sample seeds)."""
    explainer, cnn = _ready(name, cnn, vit)
    x, target, seeds = _inputs()
    whole = explainer.explain(cnn, x, target, seeds)
    halves = torch.cat([explainer.explain(cnn, x[i : i + 4], target[i : i + 4], seeds[i : i + 4]) for i in (0, 4)])
    torch.testing.assert_close(whole, halves, rtol=1e-4, atol=1e-6)


def test_integrated_gradients_completeness(cnn: LoadedModel) -> None:
    """Sum of attributions = f(x) - f(baseline) for the target logit (Sundararajan et al., axiom)."""
    ig = EXPLAINERS.get("integrated_gradients")(EXPLAINERS.get("integrated_gradients").Params(n_steps=128))
    x, target, seeds = _inputs(4)
    attr = ig.explain(cnn, x, target, seeds)
    with torch.no_grad():
        logits = cnn(x).gather(1, target[:, None]).squeeze(1)
        base = cnn(torch.zeros_like(x)).gather(1, target[:, None]).squeeze(1)
    torch.testing.assert_close(attr.flatten(1).sum(1), logits - base, rtol=0.02, atol=0.02)


def test_gradcam_unknown_layer_lists_the_layers(cnn: LoadedModel) -> None:
    gradcam = EXPLAINERS.get("gradcam")(EXPLAINERS.get("gradcam").Params(layer="net.features.99"))
    x, target, seeds = _inputs(2)
    with pytest.raises(ConfigError) as info:
        gradcam.explain(cnn, x, target, seeds)
    assert "net.0" in str(info.value) and "no layer 'net.features.99'" in str(info.value)


def test_gradcam_needs_a_layer() -> None:
    net = build_small_cnn((4, 4), num_classes=2)
    model = prepare(net, ModelSpec(num_classes=2, target_layer=None), torch.device("cpu"))
    assert "spatial layer" in EXPLAINERS.get("gradcam")().supports(model)
    assert EXPLAINERS.get("saliency")().supports(model) is None
