"""Properties of particular explainers on a small CNN (the contract of every explainer is checked by the
conformance harness, tests/conformance/test_explainers.py)."""

from __future__ import annotations

import pytest
import torch

from bench.errors import ConfigError
from bench.models.base import prepare
from bench.models.small_cnn import build_small_cnn
from bench.registry import EXPLAINERS, load_builtin_components
from bench.types import LoadedModel, ModelSpec

load_builtin_components()


@pytest.fixture(scope="module")
def cnn() -> LoadedModel:
    torch.manual_seed(0)
    net = build_small_cnn((8, 16, 16), num_classes=4)
    spec = ModelSpec(num_classes=4, target_layer="net.0", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return prepare(net, spec, torch.device("cpu"))


def _inputs(n: int = 8, size: int = 24):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=g), torch.arange(n) % 4, [1000 + i for i in range(n)]


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
