"""The comparisons of ``benchmarks/peers.py``: each xbench component and its counterpart, on shared inputs.

Peers are called as their documentation shows, with their defaults (a new
user's call), on the same model object, images, attributions, targets and batch
size: Quantus metrics get ``batch_size`` = the images of the call;
pytorch-grad-cam and captum explain the whole batch at once; zennit runs its
EpsilonPlusFlat composite with its ResNet canonizer. Models have random weights
(timings do not depend on them); images are smooth colour fields (SLIC finds
superpixels in them, as in photographs), attributions are random (no ties).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import quantus
import torch
import torchvision
from captum import attr as captum
from pytorch_grad_cam import AblationCAM, EigenCAM, GradCAM, GradCAMPlusPlus, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from bench.explainers import cam
from bench.explainers.base import Explainer
from bench.explainers.gradient import IntegratedGradients, Saliency
from bench.explainers.lrp import LRP
from bench.explainers.perturbation import Lime, Occlusion
from bench.explainers.rise import RISE
from bench.explainers.superpixels import slic_segments
from bench.metrics.base import Metric, MetricInput
from bench.metrics.complexity import Sparseness
from bench.metrics.faithfulness import (
    IROF,
    Deletion,
    FaithfulnessCorrelation,
    Insertion,
    PixelFlipping,
    RegionPerturbation,
)
from bench.metrics.localisation import EnergyPointingGame, PixelAUROC, PointingGame, RelevanceRankAccuracy
from bench.metrics.quantus_ import COMPAT_INIT, install_trapz_shim
from bench.metrics.stability import MaxSensitivity
from bench.models.base import prepare
from bench.models.cifar_resnet import IMAGENET_MEAN, IMAGENET_STD, CifarResNet
from bench.models.small_cnn import build_small_cnn
from bench.types import Batch, LoadedModel, ModelSpec

install_trapz_shim()
QUIET = {"disable_warnings": True, "display_progressbar": False}
RAW = {"abs": False, "normalise": False, **QUIET}


@dataclass
class Case:
    """One comparison: xbench's call and its peer's on the same inputs (``peer_fn`` None: no peer)."""

    name: str  # e.g. "deletion (16 steps)"
    model: str  # the setup's label, e.g. "resnet50 224px"
    images: int  # images per call (both sides)
    xbench: Callable[[], Any]
    peer: str | None = None
    peer_fn: Callable[[], Any] | None = None
    net: LoadedModel | None = None  # the model whose passes are counted (None: model-free)
    note: str = ""


@dataclass
class Setup:
    """A model at one input size with its shared inputs; ``model`` None for model-free metrics."""

    label: str
    model: LoadedModel | None
    x: torch.Tensor
    attr: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor
    batch_sizes: tuple[int, ...]  # candidates of the best-batch sweep of the limit

    def inp(self, n: int, explainer: Explainer | None = None) -> MetricInput:
        batch = Batch(x=self.x[:n], label=self.target[:n], ids=[f"s{i}" for i in range(n)], target=self.target[:n],
                      mask=self.mask[:n])  # fmt: skip
        return MetricInput(model=self.model, batch=batch, attributions=self.attr[:n], seeds=list(range(n)),
                           explainer=explainer)  # fmt: skip

    def quantus(self, n: int) -> dict[str, Any]:
        module = self.model.module if self.model is not None else build_small_cnn((4, 4), 2).eval()
        return {"model": module, "x_batch": self.x[:n].numpy(), "y_batch": self.target[:n].numpy(),
                "a_batch": self.attr[:n].numpy(), "device": "cpu", "channel_first": True, "batch_size": n}  # fmt: skip


def make_setup(label: str, net: torch.nn.Module | None, size: int, n: int, sizes: tuple[int, ...]) -> Setup:
    classes = 10 if size <= 64 else 1000
    spec = ModelSpec(num_classes=classes, mean=IMAGENET_MEAN, std=IMAGENET_STD, target_layer=_layer(net))
    model = prepare(net, spec, torch.device("cpu")) if net is not None else None
    g = torch.Generator().manual_seed(0)
    side = max(4, size // 32)
    coarse = torch.nn.functional.interpolate(torch.rand(n, 3, side, side, generator=g), size=(size, size),
                                             mode="bilinear", align_corners=False)  # fmt: skip
    x = 0.95 * coarse + 0.05 * torch.rand(n, 3, size, size, generator=g)
    attr = torch.rand(n, 1, size, size, generator=g)
    mask = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    mask[:, :, size // 4 : size // 2, size // 3 : 3 * size // 4] = 1
    if model is not None:
        with torch.no_grad():
            target = model(x).argmax(1)
    else:
        target = torch.zeros(n, dtype=torch.long)
    return Setup(label, model, x, attr, target, mask, sizes)


def _layer(net: torch.nn.Module | None) -> str | None:
    if isinstance(net, torchvision.models.ResNet):
        return "net.layer4"
    if isinstance(net, CifarResNet):
        return "net.layer3"
    return "net.0" if net is not None else None


# ----------------------------------------------------------------------------- peers' calls


def pgc_call(cls: type, s: Setup, n: int, layer: str, **kwargs: Any) -> Callable[[], Any]:
    """pytorch-grad-cam on the batch (it needs an input that requires grad: the parameters are frozen)."""
    assert s.model is not None
    ref = cls(model=s.model.module, target_layers=[s.model.module.get_submodule(layer)], **kwargs)
    targets = [ClassifierOutputTarget(int(t)) for t in s.target[:n]]
    leaf = s.x[:n].detach().requires_grad_(True)

    def run() -> Any:
        with contextlib.redirect_stderr(io.StringIO()):  # its progress bars
            return ref(input_tensor=leaf, targets=targets)

    return run


def captum_layer_gradcam(s: Setup, n: int) -> Callable[[], Any]:
    """captum's LayerGradCam, upsampled to the input as xbench's maps are."""
    assert s.model is not None
    method = captum.LayerGradCam(s.model.module, s.model.module.get_submodule(s.model.spec.target_layer))
    x, target = s.x[:n], s.target[:n]
    return lambda: captum.LayerAttribution.interpolate(method.attribute(x, target=target), x.shape[-2:], "bilinear")


def zennit_lrp(s: Setup, n: int) -> Callable[[], Any]:
    """zennit's EpsilonPlusFlat with its ResNet canonizer (ResNets; merged batch norms otherwise)."""
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    from bench.explainers.lrp_rules import CifarBasicBlockCanonizer

    assert s.model is not None
    canonizers = (
        [ResNetCanonizer(), CifarBasicBlockCanonizer()] if "resnet" in s.label else [SequentialMergeBatchNorm()]
    )
    x, target = s.x[:n], s.target[:n]

    def run() -> Any:
        with Gradient(s.model.module, EpsilonPlusFlat(canonizers=canonizers)) as attributor:
            return attributor(x, lambda out: torch.nn.functional.one_hot(target, out.shape[1]) * out.detach())[1]

    return run


def explain(explainer: Explainer, s: Setup, n: int) -> Callable[[], Any]:
    assert s.model is not None
    return lambda: explainer.explain(s.model, s.x[:n], s.target[:n], list(range(n)))


def score(metric: Metric, s: Setup, n: int, explainer: Explainer | None = None) -> Callable[[], Any]:
    return lambda: metric.score(s.inp(n, explainer))


def quantus_call(metric: Callable[[], Any], s: Setup, n: int, **extra: Any) -> Callable[[], Any]:
    return lambda: metric()(**s.quantus(n), **extra)


def quantus_explain(explainer: Explainer, spec: ModelSpec) -> Callable[..., np.ndarray]:
    """The same xbench explainer as a Quantus ``explain_func``."""

    def run(model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: Any) -> np.ndarray:
        lm = LoadedModel(module=model, spec=spec)
        x, t = torch.as_tensor(inputs), torch.as_tensor(targets)
        return explainer.explain(lm, x, t, list(range(len(x)))).numpy()

    return run


# ----------------------------------------------------------------------------- the comparisons


def model_cases(s: Setup, n: int, quick: bool, size: int) -> list[Case]:
    """Explainers and faithfulness metrics on one model; fewer and smaller with ``quick``."""
    m, label, big = s.model, s.label, size >= 224
    assert m is not None
    layer = m.spec.target_layer
    pixels = size * size
    steps = 24  # Quantus' features_in_step (3 * pixels / steps) must divide the pixels: 24 does at every size

    few = 2 if big else n  # images for the costlier comparisons at 224 px (deletion keeps the 8)

    def case(name: str, xb: Callable, peer: str | None = None, fn: Callable | None = None, k: int = n,
             note: str = "", model: bool = True) -> Case:  # fmt: skip
        return Case(name, label, k, xb, peer, fn, m if model else None, note)

    out = [
        case("gradcam", explain(cam.GradCAM(), s, n), "pytorch-grad-cam GradCAM", pgc_call(GradCAM, s, n, layer)),
        case("gradcam", explain(cam.GradCAM(), s, n), "captum LayerGradCam", captum_layer_gradcam(s, n)),
        case("eigencam", explain(cam.EigenCAM(), s, n), "pytorch-grad-cam EigenCAM", pgc_call(EigenCAM, s, n, layer)),
        case("saliency", explain(Saliency(), s, n), "captum Saliency",
             lambda: captum.Saliency(m.module).attribute(s.x[:n].detach().requires_grad_(), target=s.target[:n])),
        case(f"deletion ({steps} steps)", score(Deletion(Deletion.Params(steps=steps)), s, n),
             f"quantus PixelFlipping ({steps} steps)",
             quantus_call(lambda: quantus.PixelFlipping(features_in_step=3 * pixels // steps, perturb_baseline="black",
                                                        **QUIET), s, n),
             note="Quantus' PixelFlipping is the deletion curve without its first point (the untouched image): "
                  "one forward per image fewer"),
        case(f"faithfulness_correlation ({'20' if big else '100'} subsets)",
             score(FaithfulnessCorrelation(FaithfulnessCorrelation.Params(nr_runs=20 if big else 100)), s, few),
             "quantus FaithfulnessCorrelation",
             quantus_call(lambda: quantus.FaithfulnessCorrelation(nr_runs=20 if big else 100, subset_size=3 * 224,
                                                                  perturb_baseline=0.0, return_aggregate=False,
                                                                  **QUIET), s, few), k=few),
    ]  # fmt: skip
    if not quick or not big:
        k = 2 if big else n
        channel_layer = "net.layer1.0.conv1" if big else layer  # 64 channels: 64 forwards per image
        ig16 = IntegratedGradients.Params(n_steps=16)
        out += [
            case("integrated_gradients (16 steps)", explain(IntegratedGradients(ig16), s, k),
                 "captum IntegratedGradients",
                 lambda: captum.IntegratedGradients(m.module).attribute(s.x[:k], target=s.target[:k], n_steps=16), k=k),
            case("scorecam (64 channels)", explain(cam.ScoreCAM(cam.ScoreCAM.Params(layer=channel_layer)), s, k),
                 "pytorch-grad-cam ScoreCAM", pgc_call(ScoreCAM, s, k, channel_layer), k=k),
            case("lrp (epsilon_plus_flat)", explain(LRP(), s, n), "zennit EpsilonPlusFlat", zennit_lrp(s, n)),
            case(f"pixel_flipping ({steps} steps)",
                 score(PixelFlipping(PixelFlipping.Params(pixels_per_step=pixels // steps)), s, few),
                 f"quantus PixelFlipping ({steps} steps)",
                 quantus_call(lambda: quantus.PixelFlipping(features_in_step=3 * pixels // steps,
                                                            perturb_baseline="black", **QUIET), s, few), k=few),
            case(f"insertion ({steps} steps)", score(Insertion(Insertion.Params(steps=steps)), s, few), k=few),
            case("rise (500 masks)" if not big else "rise (128 masks)",
                 explain(RISE(RISE.Params(n_masks=128 if big else 500)), s, k), k=k),
        ]  # fmt: skip
    if not quick:
        k = 2 if big else n
        window, stride = (32, 32) if big else (8, 4)
        patch = 16 if big else 8
        channel_layer = "net.layer1.0.conv1" if big else layer
        ablation = cam.AblationCAM.Params(layer=channel_layer)
        out += [
            case("gradcam_pp", explain(cam.GradCAMPlusPlus(), s, n), "pytorch-grad-cam GradCAMPlusPlus",
                 pgc_call(GradCAMPlusPlus, s, n, layer)),
            case("ablationcam (64 channels)", explain(cam.AblationCAM(ablation), s, k),
                 "pytorch-grad-cam AblationCAM", pgc_call(AblationCAM, s, k, channel_layer), k=k),
            case(f"occlusion (window {window}, stride {stride})",
                 explain(Occlusion(Occlusion.Params(window=window, stride=stride)), s, k), "captum Occlusion",
                 lambda: captum.Occlusion(m.module).attribute(s.x[:k], target=s.target[:k], strides=(3, stride, stride),
                                                              sliding_window_shapes=(3, window, window)), k=k),
            case("region_perturbation (24 regions)",
                 score(RegionPerturbation(RegionPerturbation.Params(patch_size=patch, regions_evaluation=24)), s, few),
                 "quantus RegionPerturbation",
                 quantus_call(lambda: quantus.RegionPerturbation(patch_size=patch, regions_evaluation=24,
                                                                 perturb_baseline=0.0, **QUIET), s, few), k=few),
            case("irof", score(IROF(IROF.Params(baseline="constant", baseline_value=0.5)), s, k), "quantus IROF",
                 quantus_call(lambda: quantus.IROF(**COMPAT_INIT["IROF"], perturb_baseline=0.5, return_aggregate=False,
                                                   **QUIET), s, k), k=k),
        ]  # fmt: skip
        if not big:
            segments = [slic_segments(img, 50, 10.0)[None, None] for img in s.x[:4]]
            sal = Saliency()
            out += [
                case("lime (200 samples)", explain(Lime(Lime.Params(n_samples=200)), s, 4), "captum Lime",
                     lambda: [captum.Lime(m.module).attribute(s.x[i : i + 1], target=s.target[i : i + 1],
                                                              feature_mask=segments[i], n_samples=200)
                              for i in range(4)], k=4),
                case("max_sensitivity (saliency, 10 draws)",
                     score(MaxSensitivity(MaxSensitivity.Params(n_samples=10)), s, n, sal),
                     "quantus MaxSensitivity",
                     quantus_call(lambda: quantus.MaxSensitivity(nr_samples=10, lower_bound=0.02, **RAW), s, n,
                                  explain_func=quantus_explain(sal, m.spec))),
            ]  # fmt: skip
    return out


def map_cases(s: Setup, n: int) -> list[Case]:
    """Localisation and complexity metrics: no model pass, the metric's own arithmetic."""
    pairs: list[tuple[str, Metric, Callable[[], Any], dict[str, Any]]] = [
        ("pointing_game", PointingGame(), lambda: quantus.PointingGame(**RAW), {}),
        ("energy_pointing_game", EnergyPointingGame(), lambda: quantus.RelevanceMassAccuracy(**RAW), {}),
        ("relevance_rank_accuracy", RelevanceRankAccuracy(), lambda: quantus.RelevanceRankAccuracy(**RAW), {}),
        ("pixel_auroc", PixelAUROC(), lambda: quantus.AUC(**RAW), {}),
        ("sparseness", Sparseness(), lambda: quantus.Sparseness(**QUIET), {}),
    ]
    out = []
    for name, metric, peer, extra in pairs:
        kwargs = {"s_batch": s.mask[:n].numpy(), **extra} if name != "sparseness" else extra
        out.append(Case(name, s.label, n, score(metric, s, n), f"quantus {peer().__class__.__name__}",
                        quantus_call(peer, s, n, **kwargs)))  # fmt: skip
    return out


def build_cases(quick: bool, log: Callable[[str], None]) -> list[tuple[Setup, list[Case]]]:
    """(setup, its comparisons) for every model; ResNet-50 at 224 px is the headline."""
    torch.manual_seed(0)
    n50, n20 = (2, 16) if quick else (8, 64)
    r50 = make_setup("resnet50 224px", torchvision.models.resnet50(weights=None), 224, n50,
                     (2, 4, 8) if quick else (1, 2, 4, 8, 16, 32))  # fmt: skip
    r20 = make_setup("cifar_resnet20 32px", CifarResNet(20, 10), 32, n20,
                     (16, 64, 256) if quick else (16, 32, 64, 128, 256, 512))  # fmt: skip
    n_cnn = 16 if quick else 50  # 50: the quickstart's batch
    cnn = make_setup("small_cnn 64px (quickstart)", build_small_cnn((16, 32, 64, 64), 5), 64, n_cnn,
                     (16, 64, 256) if quick else (16, 32, 64, 128, 256, 512))  # fmt: skip
    maps = make_setup("maps 224px", None, 224, 64, ())
    out = [(r50, model_cases(r50, n50, quick, 224)), (r20, model_cases(r20, n20, quick, 32))]
    quickstart = ("deletion", "saliency", "integrated", "gradcam")
    out.append((cnn, [c for c in model_cases(cnn, n_cnn, True, 64) if c.name.startswith(quickstart)]))
    out.append((maps, map_cases(maps, 64)))
    return out
