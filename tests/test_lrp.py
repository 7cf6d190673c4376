"""LRP (zennit): conservation, the epsilon-rule identity, cross-checks with zennit, model hygiene, support."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import (
    EpsilonAlpha2Beta1,
    EpsilonAlpha2Beta1Flat,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    LayerMapComposite,
    layer_map_base,
)
from zennit.core import Composite
from zennit.rules import Epsilon
from zennit.torchvision import ResNetCanonizer
from zennit.types import Linear as AnyLinear

from bench.errors import ConfigError
from bench.explainers.lrp import LRP, LRPParams, auto_canonizer
from bench.models.base import prepare
from bench.models.cifar_resnet import CifarResNet
from bench.models.small_cnn import build_small_cnn
from bench.models.vgg_cifar import build_vgg13_cifar
from bench.types import LoadedModel, ModelSpec, Passes

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
COMPOSITES = [
    "epsilon",
    "epsilon_plus",
    "epsilon_plus_flat",
    "epsilon_gamma_box",
    "epsilon_alpha2_beta1",
    "epsilon_alpha2_beta1_flat",
]


def _model(net: nn.Module, num_classes: int = 4, **spec) -> LoadedModel:
    return prepare(net, ModelSpec(num_classes=num_classes, mean=MEAN, std=STD, **spec), torch.device("cpu"))


def _vgg_like(bias: bool, seed: int = 0) -> nn.Module:
    """Conv-ReLU-maxpool features, average pooling, a dense head: every layer type VGG has.

    He-initialised, so that activations stay of order 1 and the rules' stabilisers (1e-6) stay negligible.
    """
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=bias),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=bias),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1, bias=bias),
            nn.ReLU(),
        ),
        nn.Sequential(
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(64, 32, bias=bias),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(32, 4, bias=bias),
        ),
    )
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight)
    return net


def _randomise_batch_norms(net: nn.Module, seed: int, shift: bool = True) -> nn.Module:
    """Batch norms that are far from the identity, so that merging them matters; ``shift=False``
    keeps them bias-free (zero mean and beta), so the merged convolutions have no bias."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1 if shift else torch.zeros(n))
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1 if shift else torch.zeros(n))
    return net


def _images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _logit(model: LoadedModel, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).gather(1, target[:, None]).squeeze(1)


def _normalised(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _zennit_reference(net: nn.Module, z: torch.Tensor, target: torch.Tensor, composite: Composite) -> torch.Tensor:
    """zennit's own Gradient attributor on ``net`` (no wrapper) at the normalised input, from the logit."""
    with Gradient(net, composite) as attributor:
        _, relevance = attributor(z.clone(), lambda o: nn.functional.one_hot(target, o.shape[1]).to(o) * o.detach())
    return relevance.sum(1, keepdim=True)


def _zennit_composite(name: str, canonizers: list) -> Composite:
    """The composite built directly from zennit, with zennit's defaults."""
    std, mean = torch.tensor(STD).view(1, 3, 1, 1), torch.tensor(MEAN).view(1, 3, 1, 1)
    if name == "epsilon":
        return LayerMapComposite([*layer_map_base(), (AnyLinear, Epsilon())], canonizers=canonizers)
    if name == "epsilon_gamma_box":
        return EpsilonGammaBox(low=-mean / std, high=(1 - mean) / std, canonizers=canonizers)
    classes = {
        "epsilon_plus": EpsilonPlus,
        "epsilon_plus_flat": EpsilonPlusFlat,
        "epsilon_alpha2_beta1": EpsilonAlpha2Beta1,
        "epsilon_alpha2_beta1_flat": EpsilonAlpha2Beta1Flat,
    }
    return classes[name](canonizers=canonizers)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _hooks(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in module.modules())


def _lrp(**params) -> LRP:
    return LRP(LRPParams(**params))


# --- the rules themselves -----------------------------------------------------------------


def test_epsilon_rule_is_gradient_times_input_and_sums_to_the_logit() -> None:
    """On a bias-free ReLU net, LRP-epsilon (epsilon -> 0) equals gradient x input at the normalised
    input, and the relevance sums to the target logit (Bach et al. 2015; Ancona et al. 2018)."""
    model = _model(_vgg_like(bias=False))
    x, target = _images(4, 16), torch.tensor([0, 1, 2, 3])
    relevance = _lrp(composite="epsilon", epsilon=1e-9).explain(model, x, target)

    z = _normalised(x).requires_grad_(True)
    logit = model.module.net(z).gather(1, target[:, None]).sum()
    (grad,) = torch.autograd.grad(logit, z)
    expected = (z * grad).sum(1, keepdim=True).detach()
    assert _relative_error(relevance, expected) < 1e-4
    torch.testing.assert_close(relevance.flatten(1).sum(1), _logit(model, x, target), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("composite", COMPOSITES)
def test_composites_conserve_the_logit_without_biases(composite: str) -> None:
    """Flat, ZBox, z+, gamma and alpha-beta rules all redistribute what they receive, so on a
    bias-free net the map sums to the logit up to the stabilisers (1e-6 per layer): within 1e-4
    relative. Biases (and batch norms merged into convolutions) absorb relevance, so trained nets
    conserve only approximately."""
    model = _model(_vgg_like(bias=False, seed=3))
    x, target = _images(4, 16, seed=2), torch.tensor([3, 2, 1, 0])
    relevance = _lrp(composite=composite).explain(model, x, target)
    torch.testing.assert_close(relevance.flatten(1).sum(1), _logit(model, x, target), rtol=1e-4, atol=1e-5)


def test_start_one_sums_to_one() -> None:
    model = _model(_vgg_like(bias=False))
    x, target = _images(3, 16), torch.tensor([0, 1, 2])
    relevance = _lrp(start="one").explain(model, x, target)
    torch.testing.assert_close(relevance.flatten(1).sum(1), torch.ones(3), rtol=1e-4, atol=1e-5)


def test_resizing_model_returns_image_resolution_and_conserves() -> None:
    """A model that resizes 16x16 images to 20x20 inside: the relevance comes back on the 16x16
    grid through the resize's transposed (convex) weights, so it still sums to the logit."""
    model = _model(_vgg_like(bias=False), input_size=(20, 20))
    x, target = _images(2, 16), torch.tensor([1, 2])
    relevance = _lrp(composite="epsilon", epsilon=1e-9).explain(model, x, target)
    assert relevance.shape == (2, 1, 16, 16)
    torch.testing.assert_close(relevance.flatten(1).sum(1), _logit(model, x, target), rtol=1e-4, atol=1e-5)


# --- cross-checks with zennit applied directly ----------------------------------------------


@pytest.mark.parametrize("composite", COMPOSITES)
def test_matches_zennit_on_a_vgg_like_cnn(composite: str) -> None:
    model = _model(_vgg_like(bias=True, seed=5))
    x, target = _images(4, 16, seed=6), torch.tensor([0, 3, 1, 2])
    ours = _lrp(composite=composite).explain(model, x, target)
    reference = _zennit_reference(model.module.net, _normalised(x), target, _zennit_composite(composite, []))
    assert _relative_error(ours, reference) < 1e-6


@pytest.mark.slow
def test_matches_zennit_on_resnet18() -> None:
    """torchvision's blocks call one nn.ReLU twice; zennit's ResNetCanonizer handles it (Pass rule).
    The default composite; the others are cross-checked on the VGG-like net."""
    torch.manual_seed(0)
    net = _randomise_batch_norms(torchvision.models.resnet18(weights=None, num_classes=5), seed=0)
    model = _model(net, num_classes=5)
    assert auto_canonizer(model.module) == "resnet"
    x, target = _images(2, 64, seed=7), torch.tensor([1, 4])
    ours = _lrp().explain(model, x, target)
    composite = _zennit_composite("epsilon_plus_flat", [ResNetCanonizer()])
    reference = _zennit_reference(model.module.net, _normalised(x), target, composite)
    assert torch.isfinite(ours).all()
    assert _relative_error(ours, reference) < 1e-6


# --- bench's CIFAR ResNet: the residual sum --------------------------------------------------


def test_cifar_resnet_sum_canonizer_conserves_and_plain_addition_does_not() -> None:
    """With the Sum canonizer the residual addition splits relevance between its branches; as a
    plain gradient pass-through (canonizer merge_bn) both branches get all of it."""
    torch.manual_seed(0)
    net = _randomise_batch_norms(CifarResNet(8, num_classes=4), seed=1, shift=False)
    net.linear.bias.data.zero_()
    model = _model(net)
    assert auto_canonizer(model.module) == "resnet"
    x, target = _images(4, 32), torch.tensor([0, 1, 2, 3])
    logit = _logit(model, x, target)
    summed = _lrp(composite="epsilon", epsilon=1e-9).explain(model, x, target).flatten(1).sum(1)
    torch.testing.assert_close(summed, logit, rtol=1e-4, atol=1e-5)
    added = _lrp(composite="epsilon", epsilon=1e-9, canonizer="merge_bn").explain(model, x, target)
    assert ((added.flatten(1).sum(1) - logit).abs() > 0.25 * logit.abs()).all()  # measured: off by 60-400 %


def _block_state(model: LoadedModel) -> tuple[dict[str, torch.Tensor], int, list[str]]:
    state = {k: v.clone() for k, v in model.module.state_dict().items()}
    overridden = [n for n, m in model.module.named_modules() if {"forward", "canonizer_sum"} & set(vars(m))]
    overridden += [n for n, m in model.module.named_modules() if "canonizer_sum" in m._modules]
    return state, _hooks(model.module), overridden


def _assert_untouched(model: LoadedModel, before: tuple[dict[str, torch.Tensor], int, list[str]]) -> None:
    state, hooks, overridden = _block_state(model)
    assert state.keys() == before[0].keys()
    assert all(torch.equal(before[0][k], v) for k, v in state.items()), "batch norm merging must be undone"
    assert hooks == before[1] and not overridden
    assert all(not p.requires_grad for p in model.module.parameters())
    assert not model.module.training


def test_model_is_restored_after_success_and_after_an_error() -> None:
    torch.manual_seed(0)
    model = _model(_randomise_batch_norms(CifarResNet(8, num_classes=4), seed=2))
    before = _block_state(model)
    assert before[1] == 0 and not before[2]
    x, target = _images(2, 32), torch.tensor([0, 1])
    for composite in ("epsilon_gamma_box", "epsilon_plus_flat"):
        _lrp(composite=composite).explain(model, x, target)
        _assert_untouched(model, before)
    with pytest.raises(RuntimeError):  # fails in the model's forward, with canonizers and hooks in place
        _lrp().explain(model, torch.rand(2, 4, 32, 32), target)
    _assert_untouched(model, before)


# --- the study's models: contract, batch invariance, determinism --------------------------------


@pytest.fixture(scope="module", params=["vgg13_cifar", "cifar_resnet20"])
def study_model(request: pytest.FixtureRequest) -> LoadedModel:
    torch.manual_seed(0)
    if request.param == "vgg13_cifar":
        return _model(build_vgg13_cifar(10), num_classes=10)
    return _model(_randomise_batch_norms(CifarResNet(20, num_classes=10), seed=3), num_classes=10)


@pytest.mark.slow
def test_study_models(study_model: LoadedModel) -> None:
    x, target = _images(8, 32, seed=9), torch.arange(8) % 10
    lrp = _lrp()
    assert lrp.supports(study_model) is None
    whole = lrp.explain(study_model, x, target)
    assert whole.shape == (8, 1, 32, 32) and whole.dtype == torch.float32 and torch.isfinite(whole).all()
    assert whole.abs().sum() > 0
    halves = torch.cat([lrp.explain(study_model, x[i : i + 4], target[i : i + 4]) for i in (0, 4)])
    torch.testing.assert_close(whole, halves, rtol=1e-4, atol=1e-6 * whole.abs().max().item())
    torch.testing.assert_close(lrp.explain(study_model, x, target), whole, rtol=0, atol=0)


# --- what LRP supports ------------------------------------------------------------------------


def test_auto_canonizer_follows_the_architecture() -> None:
    assert auto_canonizer(_model(build_small_cnn((4, 4), 4)).module) == "merge_bn"
    assert auto_canonizer(_model(_vgg_like(bias=True)).module) == "none"


def test_supports_cnns_and_refuses_other_layers_by_type() -> None:
    lrp = _lrp()
    for net in (build_small_cnn((4, 4), 4), torchvision.models.squeezenet1_1(num_classes=4), _vgg_like(True)):
        assert lrp.supports(_model(net)) is None
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16, num_classes=4
    )
    reason = lrp.supports(_model(vit))
    listed = (reason or "").split(";")[0]
    assert "MultiheadAttention" in listed and "LayerNorm" in listed and "Conv2d" not in listed
    densenet = torchvision.models.DenseNet(growth_rate=4, block_config=(1, 1), num_init_features=8, num_classes=4)
    reason = lrp.supports(_model(densenet))
    assert reason is not None and "_DenseLayer" in reason
    plain_bn = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4)
    )
    assert "without affine" in (lrp.supports(_model(plain_bn)) or "")


def test_refuses_unsupported_models_before_touching_them() -> None:
    """zennit's batch-norm merge fails halfway on DenseNet and leaves weights changed: never start it."""
    densenet = torchvision.models.DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, num_classes=4)
    model = _model(densenet)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    with pytest.raises(ConfigError, match="_DenseLayer"):
        _lrp().explain(model, _images(1, 32), torch.tensor([0]))
    assert all(torch.equal(before[k], v) for k, v in model.module.state_dict().items())


def test_params_and_passes() -> None:
    assert _lrp().passes((3, 32, 32)) == Passes(1, 1)
    defaults = LRPParams()
    assert (defaults.composite, defaults.canonizer, defaults.reduce, defaults.start) == (
        "epsilon_plus_flat",
        "auto",
        "sum",
        "logit",
    )
    with pytest.raises(ValueError):
        LRPParams(composite="zplus")
    with pytest.raises(ValueError):
        LRPParams(epsilon=0)
