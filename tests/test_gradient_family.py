"""Gradient family: captum cross-checks on identical inputs and draws, completeness, seeds, batches."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from captum.attr import DeepLift as CaptumDeepLift
from captum.attr import DeepLiftShap as CaptumDeepLiftShap
from captum.attr import GradientShap as CaptumGradientShap
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import GuidedGradCam as CaptumGuidedGradCam
from captum.attr import InputXGradient as CaptumInputXGradient
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import NoiseTunnel
from captum.attr import Saliency as CaptumSaliency
from pydantic import ValidationError

from bench.cost import PassCounter
from bench.explainers.base import Explainer, ExplainerContext
from bench.explainers.gradient import DeepLift, GuidedBackprop, GuidedGradCAM, InputXGradient
from bench.explainers.shap import DeepLiftShap, GradientShap
from bench.explainers.smoothgrad import SmoothGrad, draw_blocks
from bench.models.base import prepare
from bench.models.cifar_resnet import IMAGENET_MEAN, IMAGENET_STD, CifarResNet
from bench.models.small_cnn import build_small_cnn
from bench.perturb import BaselineFields, make_baseline
from bench.types import LoadedModel, ModelSpec
from tests.helpers import linear_model

pytestmark = pytest.mark.filterwarnings("ignore:Setting:UserWarning")
SIZE = 16


@pytest.fixture(scope="module")
def cnn() -> LoadedModel:
    torch.manual_seed(0)
    net = build_small_cnn((6, 8), num_classes=4)
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    spec = ModelSpec(num_classes=4, target_layer="net.0", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return prepare(net, spec, torch.device("cpu"))


@pytest.fixture(scope="module")
def resnet() -> LoadedModel:
    """A max-pool-free network (residual additions, strided convolutions, average pooling): there
    captum's DeepLIFT is exactly complete; its max-pool rule is an approximation."""
    torch.manual_seed(0)
    spec = ModelSpec(num_classes=4, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return prepare(CifarResNet(8, num_classes=4), spec, torch.device("cpu"))


def _inputs(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, SIZE, SIZE, generator=g), torch.arange(n) % 4, [500 + i for i in range(n)]


def _background(n: int = 10) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(99))


def _prepared(explainer: Explainer, model: LoadedModel, background: torch.Tensor | None = None) -> Explainer:
    bg = _background() if background is None else background
    explainer.prepare(ExplainerContext(model=model, device=bg.device, seed=0, background=lambda n: bg[:n]))
    return explainer


def _target_scores(model: LoadedModel, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).gather(1, target[:, None]).squeeze(1)


# --- wrapped captum methods: the same numbers as captum on the same inputs ---------------------------------


@pytest.mark.parametrize("baseline", ["zero", "blur"])
def test_wrappers_equal_captum(cnn: LoadedModel, baseline: str) -> None:
    x, target, seeds = _inputs(4)
    base = make_baseline(x, BaselineFields(baseline=baseline))
    layer = cnn.layer("net.0")
    cases: list[tuple[Explainer, Callable[[], torch.Tensor]]] = [
        (
            InputXGradient(InputXGradient.Params(reduce="sum")),
            lambda: CaptumInputXGradient(cnn.module).attribute(x.clone().requires_grad_(), target=target),
        ),
        (
            GuidedBackprop(GuidedBackprop.Params(reduce="sum")),
            lambda: CaptumGuidedBackprop(cnn.module).attribute(x.clone().requires_grad_(), target=target),
        ),
        (
            GuidedGradCAM(GuidedGradCAM.Params(reduce="sum")),
            lambda: CaptumGuidedGradCam(cnn.module, layer).attribute(
                x.clone().requires_grad_(), target=target, interpolate_mode="bilinear"
            ),
        ),
        (
            DeepLift(DeepLift.Params(reduce="sum", baseline=baseline)),
            lambda: CaptumDeepLift(cnn.module).attribute(x.clone().requires_grad_(), baselines=base, target=target),
        ),
    ]
    for explainer, reference in cases:
        ours = explainer.explain(cnn, x, target, seeds)
        torch.testing.assert_close(ours, reference().sum(1, keepdim=True), rtol=1e-5, atol=1e-7)


def test_guided_gradcam_reduction_and_layer_checks(cnn: LoadedModel) -> None:
    x, target, seeds = _inputs(2)
    per_channel = GuidedGradCAM().channel_attributions(cnn, x, target, seeds)
    torch.testing.assert_close(GuidedGradCAM().explain(cnn, x, target, seeds), per_channel.abs().sum(1, keepdim=True))
    tokens = LoadedModel(cnn.module, ModelSpec(num_classes=4, target_layer="net.0", cam_format="tokens"))
    assert GuidedGradCAM().supports(cnn) is None
    assert "tokens" in GuidedGradCAM().supports(tokens)


@pytest.mark.parametrize("baseline", ["zero", "mean", "blur"])
def test_deeplift_completeness(resnet: LoadedModel, baseline: str) -> None:
    """Summation-to-delta (Shrikumar et al.): the map sums to f(x) - f(baseline)."""
    x, target, seeds = _inputs(6)
    params = DeepLift.Params(baseline=baseline)
    attr = DeepLift(params).explain(resnet, x, target, seeds)
    delta = _target_scores(resnet, x, target) - _target_scores(resnet, make_baseline(x, params, seeds), target)
    torch.testing.assert_close(attr.flatten(1).sum(1), delta, rtol=1e-4, atol=1e-5)


# --- SmoothGrad -------------------------------------------------------------------------------------------


def _captum_noise_tunnel(
    monkeypatch: pytest.MonkeyPatch, method: object, noise: torch.Tensor, x: torch.Tensor, **kwargs: object
) -> torch.Tensor:
    """captum's NoiseTunnel fed our noise (N, S, C, H, W) instead of its own draws."""
    flat = noise.flatten(0, 1)
    monkeypatch.setattr(
        NoiseTunnel, "_add_noise_to_input", staticmethod(lambda inp, _sd, k: inp.repeat_interleave(k, 0) + flat)
    )
    return NoiseTunnel(method).attribute(x, nt_samples=noise.shape[1], stdevs=1.0, **kwargs)


@pytest.mark.parametrize(
    ("base", "base_params", "captum_cls", "extra", "nt_type"),
    [
        ("saliency", {}, CaptumSaliency, {"abs": False}, "smoothgrad"),
        ("saliency", {}, CaptumSaliency, {"abs": False}, "smoothgrad_sq"),
        ("saliency", {}, CaptumSaliency, {"abs": False}, "vargrad"),
        ("integrated_gradients", {"n_steps": 4}, CaptumIG, {"n_steps": 4}, "vargrad"),
        ("deeplift", {}, CaptumDeepLift, {}, "smoothgrad"),
    ],
)
def test_smoothgrad_equals_captum_noise_tunnel_on_the_same_noise(
    cnn: LoadedModel,
    monkeypatch: pytest.MonkeyPatch,
    nt_type: str,
    base: str,
    base_params: dict,
    captum_cls: type,
    extra: dict,
) -> None:
    x, target, seeds = _inputs(3)
    sg = SmoothGrad(
        SmoothGrad.Params(base=base, base_params=base_params, n_samples=5, nt_type=nt_type, internal_batch_size=4)
    )
    ours = sg.channel_attributions(cnn, x, target, seeds)
    reference = _captum_noise_tunnel(
        monkeypatch, captum_cls(cnn.module), sg.noise(x, seeds), x, nt_type=nt_type, target=target, **extra
    )
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(sg.explain(cnn, x, target, seeds), reference.abs().sum(1, keepdim=True))


def test_smoothgrad_agrees_with_captum_in_distribution(cnn: LoadedModel) -> None:
    """With their own random draws, the two SmoothGrad means differ by no more than sampling error.

    Per pixel and channel, z = (mean_ours - mean_captum) / sqrt((var_ours + var_captum) / S) is
    standard normal when both estimate the same expectation (the variances are VarGrad).
    """
    x, target, seeds = _inputs(1, seed=7)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0.0, 1.0  # value range 1: captum's absolute sigma equals ours
    s, stdev = 400, 0.15

    def ours(nt_type: str) -> torch.Tensor:
        params = SmoothGrad.Params(n_samples=s, stdev=stdev, nt_type=nt_type, internal_batch_size=200)
        return SmoothGrad(params).channel_attributions(cnn, x, target, seeds)

    def captum(nt_type: str) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            nt = NoiseTunnel(CaptumSaliency(cnn.module))
            return nt.attribute(x, nt_type=nt_type, nt_samples=s, stdevs=stdev, target=target, abs=False)

    m1, v1, m2, v2 = ours("smoothgrad"), ours("vargrad"), captum("smoothgrad"), captum("vargrad")
    spread = ((v1 + v2) / s).sqrt()
    z = ((m1 - m2) / spread)[spread > 1e-9]
    assert z.numel() > 0.9 * m1.numel()
    assert z.abs().mean() < 1.0  # sqrt(2 / pi) = 0.80 expected
    assert (z.abs() > 4).float().mean() < 0.005
    assert (m1 - m2).abs().max() < 0.2 * m1.abs().max()


def test_smoothgrad_noise_is_scaled_to_each_images_range() -> None:
    x = torch.zeros(2, 3, 4, 4)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 1.0, 0.5
    sg = SmoothGrad(SmoothGrad.Params(n_samples=4000, stdev=0.2))
    noise = sg.noise(x, [1, 2])
    assert noise.shape == (2, 4000, 3, 4, 4)
    torch.testing.assert_close(noise.flatten(1).std(1), torch.tensor([0.2, 0.1]), rtol=0.02, atol=0)


def test_smoothgrad_validates_base_params() -> None:
    sg = SmoothGrad(SmoothGrad.Params(base="integrated_gradients", base_params={"n_steps": 8}))
    assert sg.base.params.n_steps == 8
    with pytest.raises(ValidationError, match="integrated_gradients: n_step"):
        SmoothGrad.Params(base="integrated_gradients", base_params={"n_step": 8})
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        SmoothGrad.Params(base="integrated_gradients", base_params={"n_steps": 1})
    with pytest.raises(ValidationError, match="cannot set reduce"):
        SmoothGrad.Params(base="saliency", base_params={"reduce": "sum"})


def test_draw_blocks_cover_the_grid_within_the_budget() -> None:
    for n, draws, budget in [(5, 3, 7), (3, 10, 4), (4, 4, 1), (2, 50, 64), (7, 1, 3)]:
        seen = torch.zeros(n, draws, dtype=torch.long)
        for images, slices in draw_blocks(n, draws, budget):
            for d in slices:
                assert (images.stop - images.start) * (d.stop - d.start) <= max(budget, 1)
                seen[images, d] += 1
        assert torch.all(seen == 1)


# --- Gradient SHAP and DeepLIFT-SHAP ------------------------------------------------------------------------


def test_gradient_shap_equals_captum_on_the_same_draws(cnn: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    x, target, seeds = _inputs(3)
    bg = _background(10)
    gs = _prepared(
        GradientShap(GradientShap.Params(background_size=10, n_samples=7, stdev=0.1, internal_batch_size=5)), cnn, bg
    )
    ours = gs.channel_attributions(cnn, x, target, seeds)
    index, alpha, noise = gs.draws(x, seeds, len(bg))
    reference = CaptumGradientShap(cnn.module)
    with monkeypatch.context() as m:
        m.setattr(np.random, "choice", lambda _n, size: index.flatten().numpy()[:size])
        m.setattr(np.random, "uniform", lambda _lo, _hi, size: alpha.flatten().double().numpy()[:size])
        flat = noise.flatten(0, 1)
        m.setattr(
            NoiseTunnel, "_add_noise_to_input", staticmethod(lambda inp, _sd, k: inp.repeat_interleave(k, 0) + flat)
        )
        expected = reference.attribute(x, baselines=bg, n_samples=7, stdevs=0.1, target=target)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-8)


def test_gradient_shap_draws_are_per_sample_and_uniform() -> None:
    gs = GradientShap(GradientShap.Params(n_samples=20000, stdev=0.0))
    x = torch.rand(2, 3, 2, 2)
    index, alpha, noise = gs.draws(x, [4, 5], num_background=10)
    assert noise is None and index.min() == 0 and index.max() == 9
    counts = torch.bincount(index.flatten(), minlength=10).float() / index.numel()
    torch.testing.assert_close(counts, torch.full((10,), 0.1), atol=0.01, rtol=0)
    assert alpha.min() >= 0 and alpha.max() < 1 and abs(alpha.mean().item() - 0.5) < 0.01
    again, _, _ = gs.draws(x[1:], [5], num_background=10)
    assert torch.equal(again[0], index[1])


def test_gradient_shap_completeness_on_a_linear_model() -> None:
    """f linear: every draw satisfies completeness exactly; the map sums to f(x) - E_b f(b) in expectation."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 6, 6, generator=g)
    model = linear_model(w)
    x, bg = torch.rand(2, 3, 6, 6, generator=g), torch.rand(16, 3, 6, 6, generator=g)
    target = torch.zeros(2, dtype=torch.long)
    f = lambda t: (t * w).flatten(1).sum(1)  # noqa: E731
    # one background image, no noise: exact
    one = _prepared(GradientShap(GradientShap.Params(background_size=1, n_samples=3)), model, bg[:1])
    torch.testing.assert_close(one.explain(model, x, target, [1, 2]).flatten(1).sum(1), f(x) - f(bg[:1]))
    # 16 background images and noise: unbiased, within 4 standard errors of the expectation
    s, stdev = 4000, 0.05
    gs = _prepared(GradientShap(GradientShap.Params(background_size=16, n_samples=s, stdev=stdev)), model, bg)
    total = gs.explain(model, x, target, [1, 2]).flatten(1).sum(1)
    error = (f(bg).var() + stdev**2 * w.square().sum()).sqrt() / s**0.5
    assert torch.all((total - (f(x) - f(bg).mean())).abs() < 4 * error)


@pytest.mark.parametrize("model_name", ["cnn", "resnet"])
def test_deeplift_shap_equals_captum(request: pytest.FixtureRequest, model_name: str) -> None:
    model = request.getfixturevalue(model_name)
    x, target, seeds = _inputs(3)
    bg = _background(10)
    ours = _prepared(DeepLiftShap(DeepLiftShap.Params(background_size=10, internal_batch_size=7)), model, bg)
    per_channel = ours.channel_attributions(model, x, target, seeds)
    expected = CaptumDeepLiftShap(model.module).attribute(x.clone().requires_grad_(), baselines=bg, target=target)
    torch.testing.assert_close(per_channel, expected, rtol=1e-5, atol=1e-8)


def test_deeplift_shap_completeness(resnet: LoadedModel) -> None:
    """The map sums to f(x) - mean_b f(b) over the background (DeepLIFT's completeness, averaged)."""
    x, target, seeds = _inputs(3)
    bg = _background(10)
    explainer = _prepared(DeepLiftShap(DeepLiftShap.Params(background_size=10)), resnet, bg)
    attr = explainer.explain(resnet, x, target, seeds)
    expected = _target_scores(resnet, x, target) - torch.stack(
        [_target_scores(resnet, bg, torch.full((10,), int(t))).mean() for t in target]
    )
    torch.testing.assert_close(attr.flatten(1).sum(1), expected, rtol=1e-4, atol=1e-5)


def test_background_methods_need_prepare(cnn: LoadedModel) -> None:
    x, target, seeds = _inputs(2)
    for cls in (GradientShap, DeepLiftShap):
        with pytest.raises(RuntimeError, match="background set"):
            cls().explain(cnn, x, target, seeds)


# --- every method of the family: batches, seeds, passes ---------------------------------------------------


def _family(model: LoadedModel) -> dict[str, Explainer]:
    return {
        "input_x_gradient": InputXGradient(),
        "guided_backprop": GuidedBackprop(),
        "guided_gradcam": GuidedGradCAM(),
        "deeplift": DeepLift(DeepLift.Params(baseline="noise")),
        "smoothgrad": SmoothGrad(SmoothGrad.Params(n_samples=6, internal_batch_size=5)),
        "smoothgrad_ig": SmoothGrad(
            SmoothGrad.Params(base="integrated_gradients", base_params={"n_steps": 3}, n_samples=3, nt_type="vargrad")
        ),
        "gradient_shap": _prepared(GradientShap(GradientShap.Params(n_samples=5, stdev=0.1)), model),
        "deeplift_shap": _prepared(DeepLiftShap(DeepLiftShap.Params(background_size=4, internal_batch_size=6)), model),
    }


@pytest.mark.parametrize(
    "name",
    [
        "input_x_gradient",
        "guided_backprop",
        "guided_gradcam",
        "deeplift",
        "smoothgrad",
        "smoothgrad_ig",
        "gradient_shap",
        "deeplift_shap",
    ],
)
def test_batches_seeds_and_passes(cnn: LoadedModel, name: str) -> None:
    explainer = _family(cnn)[name]
    x, target, seeds = _inputs(8)
    with PassCounter(cnn.module) as counted:
        whole = explainer.explain(cnn, x, target, seeds)
    assert whole.shape == (8, 1, SIZE, SIZE) and torch.isfinite(whole).all() and whole.abs().sum() > 0
    halves = torch.cat([explainer.explain(cnn, x[i : i + 4], target[i : i + 4], seeds[i : i + 4]) for i in (0, 4)])
    torch.testing.assert_close(whole, halves, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(explainer.explain(cnn, x, target, seeds), whole, rtol=0, atol=0)
    assert counted.forward_images / 8 == explainer.passes(tuple(x.shape[1:])).forward
    assert counted.backward_images / 8 == explainer.passes(tuple(x.shape[1:])).backward
    other = explainer.explain(cnn, x, target, [s + 1000 for s in seeds])
    if explainer.deterministic and name != "deeplift":  # deeplift: a noise baseline, drawn from the seeds
        torch.testing.assert_close(other, whole, rtol=0, atol=0)
    else:
        assert not torch.allclose(other, whole)
