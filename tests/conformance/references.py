"""External reference implementations the conformance entries name: the same maps from the field's libraries.

Each reference is ``(explainer, model, x, target, seeds) -> (N, 1, H, W)``, computed by captum or
pytorch-grad-cam on the same model and inputs, with the explainer's params translated. Methods whose
cross-check needs more set-up (fixed draws, a model without batch norm) name the test that does it instead.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence

import pytorch_grad_cam as pgc
import pytorch_grad_cam.eigen_cam
import torch
from captum.attr import DeepLift, GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients, Occlusion
from captum.attr import Saliency as CaptumSaliency
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

from bench.explainers.base import Explainer, reduce_channels
from bench.perturb import make_baseline
from bench.types import LoadedModel

Reference = Callable[[Explainer, LoadedModel, torch.Tensor, torch.Tensor, Sequence[int]], torch.Tensor]


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.clone().requires_grad_(True)


def captum_saliency(e: Explainer, m: LoadedModel, x: torch.Tensor, t: torch.Tensor, s: Sequence[int]) -> torch.Tensor:
    return reduce_channels(CaptumSaliency(m.module).attribute(_leaf(x), target=t, abs=False), e.params.reduce)


def captum_input_x_gradient(e: Explainer, m: LoadedModel, x: torch.Tensor, t: torch.Tensor, s: Sequence[int]):
    return reduce_channels(InputXGradient(m.module).attribute(_leaf(x), target=t), e.params.reduce)


def captum_integrated_gradients(e: Explainer, m: LoadedModel, x: torch.Tensor, t: torch.Tensor, s: Sequence[int]):
    p = e.params
    attr = IntegratedGradients(m.module).attribute(
        x, baselines=make_baseline(x, p, s), target=t, n_steps=p.n_steps, method=p.method
    )
    return reduce_channels(attr, p.reduce)


def captum_guided_backprop(e: Explainer, m: LoadedModel, x: torch.Tensor, t: torch.Tensor, s: Sequence[int]):
    return reduce_channels(GuidedBackprop(m.module).attribute(_leaf(x), target=t), e.params.reduce)


def captum_guided_gradcam(e: Explainer, m: LoadedModel, x: torch.Tensor, t: torch.Tensor, s: Sequence[int]):
    layer = m.layer(m.spec.target_layer)
    attr = GuidedGradCam(m.module, layer).attribute(_leaf(x), target=t, interpolate_mode=e.params.upsample)
    return reduce_channels(attr, e.params.reduce)


def captum_deeplift(e: Explainer, m: LoadedModel, x: torch.Tensor, t: torch.Tensor, s: Sequence[int]):
    attr = DeepLift(m.module).attribute(_leaf(x), baselines=make_baseline(x, e.params, s), target=t)
    return reduce_channels(attr, e.params.reduce)


def captum_occlusion(e: Explainer, m: LoadedModel, x: torch.Tensor, t: torch.Tensor, s: Sequence[int]):
    p, c = e.params, x.shape[1]
    attr = Occlusion(m.module).attribute(
        x,
        sliding_window_shapes=(c, p.window, p.window),
        strides=(c, p.stride, p.stride),
        baselines=make_baseline(x, p, s),
        target=t,
    )
    return reduce_channels(attr, p.reduce)


GRAD_CAM_CLASSES = {
    "gradcam": pgc.GradCAM,
    "gradcam_pp": pgc.GradCAMPlusPlus,
    "xgradcam": pgc.XGradCAM,
    "layercam": pgc.LayerCAM,
    "hirescam": pgc.HiResCAM,
    "eigencam": pgc.EigenCAM,
    "scorecam": pgc.ScoreCAM,
    "ablationcam": pgc.AblationCAM,
}


@contextlib.contextmanager
def _sign_corrected_eigencam():
    """pytorch-grad-cam's Eigen-CAM with its own sign-corrected projection: xbench fixes the SVD's arbitrary
    sign with that rule (the largest-magnitude value positive)."""
    saved = pytorch_grad_cam.eigen_cam.get_2d_projection
    pytorch_grad_cam.eigen_cam.get_2d_projection = get_2d_projection_with_sign_correction
    try:
        yield
    finally:
        pytorch_grad_cam.eigen_cam.get_2d_projection = saved


def pytorch_grad_cam_maps(e: Explainer, m: LoadedModel, x: torch.Tensor, t: torch.Tensor, s: Sequence[int]):
    """pytorch-grad-cam's maps (ReLU, min-max scaled, resized: ``normalize: true`` here) at the model's layer."""
    cls = GRAD_CAM_CLASSES[e.name]
    layer = m.module.get_submodule(e.params.layer or m.spec.target_layer)
    with (
        _sign_corrected_eigencam(),
        cls(model=m.module, target_layers=[layer]) as ref,
        contextlib.redirect_stderr(io.StringIO()),  # tqdm bars of Score-CAM and Ablation-CAM
    ):
        out = ref(input_tensor=_leaf(x), targets=[ClassifierOutputTarget(int(c)) for c in t])
    return torch.from_numpy(out)[:, None]
