"""The gradient, SHAP, perturbation and control explainers against the model passes they cannot avoid.

For every method the script records, during a warm-up call, each forward call of the model: its
batch size and whether a backward pass followed (the output took part in autograd). The method's
*pass limit* is the time of replaying exactly those calls on the bare model (random images of the
same shapes: forward, plus a backward to the input where the method had one), so the ratio
method / limit is everything the method adds to the model passes: captum's bookkeeping, baselines,
noise, superpixels (SLIC), surrogate fits. Both are medians of ``--repeats`` runs, measured in
alternation so that load on the machine affects both alike. Weights are random: timings do not
depend on them. The model-free controls have no limit; their time per image is shown alone.

Models: a CIFAR ResNet-20 at 32x32 and the small CNN of the quickstart (widths 16/32/64/64) at 32x32.

    python benchmarks/bench_perturbation.py [--repeats 3] [--batch 32] [--slow-batch 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bench.explainers.base import Explainer, ExplainerContext
from bench.explainers.controls import GaussianBlob, SobelEdges
from bench.explainers.gradient import (
    DeepLift,
    GuidedBackprop,
    GuidedGradCAM,
    InputXGradient,
    IntegratedGradients,
    Saliency,
)
from bench.explainers.perturbation import KernelShap, Lime, Occlusion
from bench.explainers.shap import DeepLiftShap, GradientShap
from bench.explainers.smoothgrad import SmoothGrad
from bench.models.base import prepare
from bench.models.cifar_resnet import IMAGENET_MEAN, IMAGENET_STD, CifarResNet
from bench.models.small_cnn import build_small_cnn
from bench.types import LoadedModel, ModelSpec

SIZE = 32
SLOW = {"smoothgrad", "gradient_shap", "deeplift_shap", "occlusion", "lime", "kernel_shap"}


def methods() -> dict[str, Explainer]:
    """Every method at its default params (Guided Grad-CAM explains the model's CAM layer)."""
    return {
        "saliency": Saliency(),
        "input_x_gradient": InputXGradient(),
        "guided_backprop": GuidedBackprop(),
        "guided_gradcam": GuidedGradCAM(),
        "deeplift": DeepLift(),
        "integrated_gradients": IntegratedGradients(),
        "smoothgrad": SmoothGrad(),
        "gradient_shap": GradientShap(),
        "deeplift_shap": DeepLiftShap(),
        "occlusion": Occlusion(),
        "lime": Lime(),
        "kernel_shap": KernelShap(),
        "gaussian_blob": GaussianBlob(),
        "sobel": SobelEdges(),
    }


@dataclass
class Call:
    """One forward call of the model during an explanation."""

    batch: int
    backward: bool


class CallRecorder:
    """Records the batch size of every forward call of ``module`` and whether its output needed gradients."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.calls: list[Call] = []

    def _hook(self, _m: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        self.calls.append(Call(output.shape[0], output.requires_grad))

    def __enter__(self) -> CallRecorder:
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


def replay(model: LoadedModel, calls: list[Call]) -> Callable[[], None]:
    """A function that runs the recorded model calls on the bare model: the method's pass limit."""
    inputs = [torch.rand(c.batch, 3, SIZE, SIZE) for c in calls]

    def run() -> None:
        for call, x in zip(calls, inputs, strict=True):
            if call.backward:
                x = x.requires_grad_(True)
                torch.autograd.grad(model(x)[:, 0].sum(), x)
            else:
                with torch.no_grad():
                    model(x)

    return run


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def models() -> dict[str, LoadedModel]:
    torch.manual_seed(0)
    resnet = prepare(
        CifarResNet(20, num_classes=10),
        ModelSpec(num_classes=10, mean=IMAGENET_MEAN, std=IMAGENET_STD, target_layer="net.layer3"),
        torch.device("cpu"),
    )
    cnn = prepare(
        build_small_cnn((16, 32, 64, 64), num_classes=10),
        ModelSpec(num_classes=10, target_layer="net.0"),
        torch.device("cpu"),
    )
    return {"cifar_resnet20": resnet, "small_cnn": cnn}


def measure(
    model: LoadedModel, name: str, explainer: Explainer, n: int, repeats: int
) -> tuple[float, float, float, float]:
    """(forward passes, backward passes, method seconds, limit seconds) per image."""
    g = torch.Generator().manual_seed(1)
    x, target, seeds = torch.rand(n, 3, SIZE, SIZE, generator=g), torch.arange(n) % 10, list(range(n))
    background = torch.rand(100, 3, SIZE, SIZE, generator=g)
    explainer.prepare(ExplainerContext(model, torch.device("cpu"), 0, lambda k: background[:k], log=lambda _m: None))
    with CallRecorder(model.module) as recorder:
        explainer.explain(model, x, target, seeds)
    forward = sum(c.batch for c in recorder.calls) / n
    backward = sum(c.batch for c in recorder.calls if c.backward) / n
    method_times, limit_times = [], []
    limit = replay(model, recorder.calls)
    for _ in range(repeats):
        method_times.append(timed(lambda: explainer.explain(model, x, target, seeds)))
        limit_times.append(timed(limit) if recorder.calls else 0.0)
    return forward, backward, statistics.median(method_times) / n, statistics.median(limit_times) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32, help="images per call of the fast methods")
    parser.add_argument("--slow-batch", type=int, default=4, help="images per call of " + ", ".join(sorted(SLOW)))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="cifar_resnet20,small_cnn")
    parser.add_argument("--methods", default="", help="comma-separated subset (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # captum's notes about the hooks it sets

    print(
        f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
        f"{SIZE}x{SIZE} images, median of {args.repeats}\n"
    )
    print("| model | method | images/call | fwd/img | bwd/img | ms/img | limit ms/img | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    wanted = set(filter(None, args.methods.split(",")))
    for model_name, model in models().items():
        if model_name not in args.models.split(","):
            continue
        for name, explainer in methods().items():
            if wanted and name not in wanted:
                continue
            n = args.slow_batch if name in SLOW else args.batch
            fwd, bwd, seconds, limit = measure(model, name, explainer, n, args.repeats)
            ratio = f"{seconds / limit:.2f}" if limit > 0 else "-"
            limit_ms = f"{limit * 1e3:.2f}" if limit > 0 else "-"
            print(
                f"| {model_name} | {name} | {n} | {fwd:g} | {bwd:g} | {seconds * 1e3:.2f} | {limit_ms} | {ratio} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
