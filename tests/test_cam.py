"""The native CAM family: cross-checks against pytorch-grad-cam and captum, layouts, sweeps, properties."""

from __future__ import annotations

import contextlib
import io

import pytest
import pytorch_grad_cam as pgc
import pytorch_grad_cam.eigen_cam
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import LayerGradCam
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection, get_2d_projection_with_sign_correction
from torch import nn

from bench.errors import ConfigError
from bench.explainers import cam
from bench.models.base import prepare
from bench.models.small_cnn import build_small_cnn
from bench.models.vgg_cifar import build_vgg13_cifar
from bench.types import LoadedModel, ModelSpec
from tests.helpers import linear_model

CPU = torch.device("cpu")
METHODS: dict[str, tuple[type[cam.CAMExplainer], type]] = {
    "gradcam": (cam.GradCAM, pgc.GradCAM),
    "gradcam_pp": (cam.GradCAMPlusPlus, pgc.GradCAMPlusPlus),
    "xgradcam": (cam.XGradCAM, pgc.XGradCAM),
    "layercam": (cam.LayerCAM, pgc.LayerCAM),
    "hirescam": (cam.HiResCAM, pgc.HiResCAM),
    "eigencam": (cam.EigenCAM, pgc.EigenCAM),
    "scorecam": (cam.ScoreCAM, pgc.ScoreCAM),
    "ablationcam": (cam.AblationCAM, pgc.AblationCAM),
}


def _explainer(name: str, **params) -> cam.CAMExplainer:
    cls = METHODS[name][0]
    return cls(cls.Params(**params))


def _hooks(model: LoadedModel) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.module.modules()
    )


def _images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def cnn() -> LoadedModel:
    torch.manual_seed(0)
    net = build_small_cnn((8, 16, 16), num_classes=4)
    spec = ModelSpec(num_classes=4, target_layer="net.0", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return prepare(net, spec, CPU)


@pytest.fixture(scope="module")
def resnet18() -> LoadedModel:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    return prepare(net, ModelSpec(num_classes=10, target_layer="net.layer4"), CPU)


@pytest.fixture(scope="module")
def vit() -> LoadedModel:
    torch.manual_seed(0)
    net = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=4
    )
    nn.init.normal_(net.heads.head.weight, std=0.5)  # torchvision zero-initialises the head: no gradients
    spec = ModelSpec(
        num_classes=4,
        target_layer="net.encoder.layers.encoder_layer_1.ln_1",
        cam_format="tokens",
        token_grid=(4, 4),
        prefix_tokens=1,
    )
    return prepare(net, spec, CPU)


def _reference(
    name: str, model: LoadedModel, path: str, x: torch.Tensor, target: torch.Tensor, reshape=None
) -> torch.Tensor:
    """pytorch-grad-cam's maps on the same wrapped model. The input requires grad because the
    parameters are frozen (otherwise the layer output would not take part in autograd)."""
    with (
        METHODS[name][1](
            model=model.module, target_layers=[model.module.get_submodule(path)], reshape_transform=reshape
        ) as ref,
        contextlib.redirect_stderr(io.StringIO()),  # tqdm bars of Score-CAM and Ablation-CAM
    ):
        out = ref(input_tensor=x.clone().requires_grad_(True), targets=[ClassifierOutputTarget(int(t)) for t in target])
    return torch.from_numpy(out)[:, None]


@pytest.fixture
def sign_corrected_eigencam(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytorch-grad-cam's Eigen-CAM with its own sign-corrected projection: the SVD sign is arbitrary,
    and xbench fixes it with that rule (the largest-magnitude value positive)."""
    monkeypatch.setattr(pytorch_grad_cam.eigen_cam, "get_2d_projection", get_2d_projection_with_sign_correction)


# ---------------------------------------------------------------------------------------------------------------------
# cross-checks


@pytest.mark.usefixtures("sign_corrected_eigencam")
@pytest.mark.parametrize("name", list(METHODS))
def test_normalized_maps_match_pytorch_grad_cam_small_cnn(name: str, cnn: LoadedModel) -> None:
    x, target = _images(4, 24), torch.tensor([0, 1, 2, 3])
    ours = _explainer(name, normalize=True).explain(cnn, x, target)
    ref = _reference(name, cnn, "net.0", x, target)
    assert (ours - ref).abs().max() < 1e-4
    assert ours.amax() > 0.99  # maps are not degenerate: the comparison means something


@pytest.mark.usefixtures("sign_corrected_eigencam")
@pytest.mark.parametrize("name", list(METHODS))
def test_normalized_maps_match_pytorch_grad_cam_resnet18(name: str, resnet18: LoadedModel) -> None:
    """At layer3 (4x4 at 64x64) and layer4 (2x2, the spec's layer); Score-CAM and Ablation-CAM, which need a
    forward per channel, on one image at layer1 (64 channels, 16x16)."""
    per_channel = name in ("scorecam", "ablationcam")
    x, target = (_images(1, 64), torch.tensor([3])) if per_channel else (_images(2, 64), torch.tensor([3, 7]))
    for path in ["net.layer1"] if per_channel else ["net.layer3", "net.layer4"]:
        ours = _explainer(name, normalize=True, layer=path).explain(resnet18, x, target)
        assert (ours - _reference(name, resnet18, path, x, target)).abs().max() < 1e-4, path


@pytest.mark.usefixtures("sign_corrected_eigencam")
@pytest.mark.parametrize("name", [n for n in METHODS if n != "ablationcam"])
def test_tokens_layout_matches_pytorch_grad_cam_on_a_vit(name: str, vit: LoadedModel) -> None:
    """ViT tokens: the class token dropped, 16 patch tokens folded to 4x4 (pytorch-grad-cam's reshape_transform).
    (Its Ablation-CAM puts -1e7 in ablated channels when the layer's minimum is not 0, as here.)"""
    x, target = _images(2, 32), torch.tensor([1, 2])

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 1:].reshape(tokens.shape[0], 4, 4, tokens.shape[2]).permute(0, 3, 1, 2)

    ours = _explainer(name, normalize=True).explain(vit, x, target)
    ref = _reference(name, vit, vit.spec.target_layer, x, target, reshape=reshape)
    assert (ours - ref).abs().max() < 1e-4


def test_raw_gradcam_matches_captum(cnn: LoadedModel, resnet18: LoadedModel) -> None:
    """Without ReLU and before upsampling, Grad-CAM is captum's LayerGradCam; with them, LayerGradCam + bilinear."""
    for model, size, path in ((cnn, 24, "net.0"), (resnet18, 64, "net.layer3")):
        x, target = _images(3, size), torch.tensor([0, 1, 3])
        raw = cam.GradCAM().layer_map(model, cam.CAMLayer.of(model, path), x, target)
        expected = LayerGradCam(model.module, model.layer(path)).attribute(x, target=target, relu_attributions=False)
        torch.testing.assert_close(raw, expected, rtol=0, atol=1e-5)
        default = cam.GradCAM(cam.GradCAM.Params(layer=path)).explain(model, x, target)
        upsampled = F.interpolate(expected.clamp(min=0), size=(size, size), mode="bilinear", align_corners=False)
        torch.testing.assert_close(default, upsampled, rtol=0, atol=1e-5)


def test_eigencam_is_the_first_principal_component_up_to_sign(resnet18: LoadedModel) -> None:
    """The raw projection equals pytorch-grad-cam's ``get_2d_projection`` up to the arbitrary SVD sign, and is
    class-agnostic (the same map for every target)."""
    x = _images(3, 64)
    _, raw = cam.capture(resnet18, cam.CAMLayer.of(resnet18, "net.layer3"), x, with_grad=False)
    ours = cam.first_component(raw)[:, 0]
    ref = torch.from_numpy(get_2d_projection(raw.numpy()))
    torch.testing.assert_close(ours.abs(), ref.abs(), rtol=0, atol=1e-4)
    eigen = cam.EigenCAM(cam.EigenCAM.Params(layer="net.layer3"))
    torch.testing.assert_close(
        eigen.explain(resnet18, x, torch.tensor([0, 1, 2])), eigen.explain(resnet18, x, torch.tensor([5, 6, 7]))
    )


# ---------------------------------------------------------------------------------------------------------------------
# properties


class QuadrantGate(nn.Module):
    """Keeps channel k of a (N, 4, H, W) map in quadrant k only (0: top left, 1: top right, 2, 3: bottom)."""

    def __init__(self, size: int):
        super().__init__()
        gate = torch.zeros(4, size, size)
        half = size // 2
        for k in range(4):
            row, col = divmod(k, 2)
            gate[k, row * half : (row + 1) * half, col * half : (col + 1) * half] = 1
        self.register_buffer("gate", gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate


def quadrant_model(size: int = 16) -> LoadedModel:
    """Class k's evidence is channel k, which exists in quadrant k only: a positive conv, a fixed gate, average
    pooling and a head that favours channel k for class k (10 on the diagonal, 1 elsewhere)."""
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    nn.init.constant_(conv.weight, 0.1)
    head = nn.Linear(4, 4, bias=False)
    nn.init.constant_(head.weight, 1.0)
    head.weight.data += 9 * torch.eye(4)
    net = nn.Sequential(conv, nn.ReLU(), QuadrantGate(size), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    return prepare(net, ModelSpec(num_classes=4, target_layer="net.2"), CPU)


@pytest.mark.parametrize("name", [n for n in METHODS if n != "eigencam"])
def test_map_peaks_in_the_quadrant_that_holds_the_evidence(name: str) -> None:
    model = quadrant_model(16)
    x = _images(8, 16, seed=3) * 0.5 + 0.25
    target = torch.arange(8) % 4
    attr = _explainer(name).explain(model, x, target)
    peak = attr.flatten(1).argmax(1)
    rows, cols = peak // 16, peak % 16
    assert torch.equal((rows >= 8).long() * 2 + (cols >= 8).long(), target)


def test_gradcam_on_the_quadrant_model_is_analytic() -> None:
    """d logit_k / d A_j = W[k, j] / (h w) everywhere, so the Grad-CAM map is sum_j W[k, j] A_j / (h w)."""
    model = quadrant_model(16)
    x, target = _images(4, 16, seed=3), torch.tensor([0, 1, 2, 3])
    _, a = cam.capture(model, cam.CAMLayer.of(model, "net.2"), x, with_grad=False)
    weight = model.module.net[5].weight
    expected = torch.einsum("nj,njhw->nhw", weight[target], a)[:, None] / 256
    torch.testing.assert_close(cam.GradCAM(cam.GradCAM.Params(relu=False)).explain(model, x, target), expected)


@pytest.mark.parametrize("name", list(METHODS))
def test_batch_invariance(name: str, cnn: LoadedModel) -> None:
    """A batch of 8 equals two batches of 4."""
    explainer = _explainer(name)
    x, target = _images(8, 24), torch.arange(8) % 4
    whole = explainer.explain(cnn, x, target)
    halves = torch.cat([explainer.explain(cnn, x[i : i + 4], target[i : i + 4]) for i in (0, 4)])
    torch.testing.assert_close(whole, halves, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["scorecam", "ablationcam"])
def test_internal_batch_size_does_not_change_results(name: str, cnn: LoadedModel) -> None:
    x, target = _images(2, 24), torch.tensor([0, 3])
    maps = [_explainer(name, batch_size=b).explain(cnn, x, target) for b in (1, 5, 1000)]
    for other in maps[1:]:
        torch.testing.assert_close(other, maps[0], rtol=1e-4, atol=1e-6)


def test_scale_and_sign_are_kept_unless_normalized(cnn: LoadedModel) -> None:
    x, target = _images(4, 24), torch.tensor([0, 1, 2, 3])
    signed = cam.HiResCAM(cam.HiResCAM.Params(relu=False)).explain(cnn, x, target)
    assert signed.amin() < 0 < signed.amax()
    raw = cam.HiResCAM().layer_map(cnn, cam.CAMLayer.of(cnn, "net.0"), x, target)
    expected = cam.upsample_map(raw.clamp(min=0), (24, 24), "bilinear")  # ReLU first, then resize
    torch.testing.assert_close(cam.HiResCAM().explain(cnn, x, target), expected)
    scaled = cam.HiResCAM(cam.HiResCAM.Params(normalize=True)).explain(cnn, x, target)
    assert scaled.amin() == 0 and scaled.amax() == pytest.approx(1, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# layers: layouts, sweeps, errors, hygiene


def test_token_maps_fold_the_patch_grid(vit: LoadedModel) -> None:
    """Tokens: the map at patch (r, c) comes from token 1 + 4 r + c; other layers of a tokens model are read
    as tokens when 3-D and as nchw when 4-D (the patch embedding)."""
    x, target = _images(2, 32), torch.tensor([0, 3])
    layer = cam.CAMLayer.of(vit, vit.spec.target_layer)
    _, tokens = cam.capture(vit, layer, x, with_grad=False)
    spatial = layer.spatial(tokens)
    assert spatial.shape == (2, 32, 4, 4)
    torch.testing.assert_close(spatial[:, :, 2, 3], tokens[:, 1 + 4 * 2 + 3])
    for path in ("net.encoder.layers.encoder_layer_0.ln_1", "net.conv_proj"):
        out = cam.GradCAM(cam.GradCAM.Params(layer=path)).explain(vit, x, target)
        assert out.shape == (2, 1, 32, 32) and out.amax() > 0


def test_nhwc_layout_is_permuted(cnn: LoadedModel) -> None:
    """A Swin-like channels-last layer: the same maps as the channels-first layer it permutes."""
    net = nn.Sequential(cnn.module.net[0], Permute(0, 2, 3, 1), Permute(0, 3, 1, 2), cnn.module.net[1])
    spec = ModelSpec(num_classes=4, target_layer="net.1", cam_format="nhwc", mean=(0.5,) * 3, std=(0.25,) * 3)
    nhwc = prepare(net, spec, CPU)
    x, target = _images(3, 24), torch.tensor([0, 1, 2])
    for name in METHODS:
        torch.testing.assert_close(
            _explainer(name).explain(nhwc, x, target), _explainer(name).explain(cnn, x, target), rtol=1e-4, atol=1e-6
        )


class Permute(nn.Module):
    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


def test_layer_sweep_covers_every_conv_of_vgg13_in_order() -> None:
    torch.manual_seed(0)
    model = prepare(build_vgg13_cifar(10), ModelSpec(num_classes=10, target_layer="net.0.12"), CPU)
    sweep = cam.LayerCAM(cam.LayerCAM.Params(layer="all_conv", relu=False))
    assert sweep.sweeps() and sweep.supports(model) is None
    variants = sweep.expand(model)
    paths = ["net.0.0", "net.0.2", "net.0.5", "net.0.7", "net.0.10", "net.0.12"]
    assert [suffix for suffix, _ in variants] == paths
    for path, variant in variants:
        assert type(variant) is cam.LayerCAM and variant.params.layer == path and not variant.params.relu
        assert not variant.sweeps() and variant.expand(model) == [("", variant)]
    out = variants[0][1].explain(model, _images(1, 32), torch.tensor([1]))
    assert out.shape == (1, 1, 32, 32)
    single = cam.LayerCAM()
    assert not single.sweeps() and single.expand(model) == [("", single)]
    with pytest.raises(ConfigError, match="sweep"):
        sweep.explain(model, _images(1, 32), torch.tensor([1]))


def test_supports_names_what_is_missing(cnn: LoadedModel) -> None:
    no_layer = prepare(build_small_cnn((4, 4), 2), ModelSpec(num_classes=2), CPU)
    assert "spatial layer" in cam.ScoreCAM().supports(no_layer)
    assert cam.ScoreCAM(cam.ScoreCAM.Params(layer="net.0")).supports(no_layer) is None
    no_conv = linear_model(torch.ones(3, 8, 8))
    assert "no nn.Conv2d" in cam.GradCAM(cam.GradCAM.Params(layer="all_conv")).supports(no_conv)
    assert cam.EigenCAM().supports(cnn) is None


@pytest.mark.parametrize("name", list(METHODS))
def test_non_spatial_layer_is_a_config_error_and_leaves_no_hooks(name: str, cnn: LoadedModel) -> None:
    hooks = _hooks(cnn)
    with pytest.raises(ConfigError, match=r"outputs shape \(2, 4\), not a spatial feature map"):
        _explainer(name, layer="net.1.2").explain(cnn, _images(2, 24), torch.tensor([0, 1]))
    assert _hooks(cnn) == hooks


class SharedReLU(nn.Module):
    """Calls its ``relu`` twice per forward and never calls ``spare``."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu, self.spare, self.head = (
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.ReLU(),
            nn.Linear(4, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.relu(self.conv(x)) - 0.5).mean((2, 3)))


def test_a_layer_must_run_exactly_once() -> None:
    """The activation of a module called twice (or never) per forward pass is ambiguous (or absent)."""
    model = prepare(SharedReLU(), ModelSpec(num_classes=2, target_layer="net.conv"), CPU)
    x, target = _images(1, 8), torch.tensor([0])
    assert cam.GradCAM().explain(model, x, target).shape == (1, 1, 8, 8)
    for path, times in (("net.relu", 2), ("net.spare", 0)):
        hooks = _hooks(model)
        with pytest.raises(ConfigError, match=f"ran {times} times"):
            cam.GradCAM(cam.GradCAM.Params(layer=path)).explain(model, x, target)
        assert _hooks(model) == hooks


@pytest.mark.parametrize("name", list(METHODS))
def test_model_and_input_are_untouched(name: str, cnn: LoadedModel) -> None:
    """No hooks left, parameters unchanged, frozen and without grads, eval mode, also under no_grad and for an
    input that requires grad."""
    before = {k: v.clone() for k, v in cnn.module.state_dict().items()}
    hooks = _hooks(cnn)
    x, target = _images(2, 24).requires_grad_(True), torch.tensor([0, 1])
    with torch.no_grad():
        out = _explainer(name).explain(cnn, x, target)
    assert torch.isfinite(out).all() and x.grad is None and _hooks(cnn) == hooks and not cnn.module.training
    assert not any("forward" in m.__dict__ for m in cnn.module.modules())  # Ablation-CAM's stand-in is gone
    assert all(torch.equal(before[k], v) for k, v in cnn.module.state_dict().items())
    assert all(not p.requires_grad and p.grad is None for p in cnn.module.parameters())


def test_replaced_output_is_restored_on_errors() -> None:
    layer = nn.ReLU()
    with pytest.raises(ValueError), cam.replaced_output(layer, torch.zeros(1)):
        assert torch.equal(layer(torch.ones(3)), torch.zeros(1))
        raise ValueError
    assert "forward" not in layer.__dict__ and torch.equal(layer(-torch.ones(2)), torch.zeros(2))


def test_default_forward_batch_depends_on_the_device() -> None:
    """As forward_batch auto: by the image size on a CPU, large batches on a GPU."""
    params = cam.ScoreCAM.Params()
    assert params.batch_on(torch.device("cpu"), 3 * 32 * 32) == 85
    assert params.batch_on(torch.device("cpu"), 3 * 224 * 224) == 16
    assert params.batch_on(torch.device("cuda"), 3 * 224 * 224) == 222
    assert cam.ScoreCAM.Params(batch_size=3).batch_on(torch.device("cuda"), 3 * 224 * 224) == 3


def test_passes() -> None:
    assert cam.GradCAM().passes((3, 32, 32)).backward == 1 and cam.EigenCAM().passes((3, 32, 32)).backward == 0
    assert cam.ScoreCAM().passes((3, 32, 32)).forward == 1 + cam.TYPICAL_CHANNELS
