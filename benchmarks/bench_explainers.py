"""Every registered explainer against the model passes it needs (its limit).

    python benchmarks/bench_explainers.py [--models resnet20 resnet50] [--repeats 3] [--threads N]

For each explainer and model: seconds per image (median of ``--repeats``
timed calls after a warm-up), the model passes it made (counted with hooks, in
images), and the limit: the time those passes take on their own at the model's
best batch size (forward-only images at the forward rate, backward images at
the forward+backward rate). The ratio is time / limit. Models have random
weights (the cost does not depend on them): CIFAR ResNet-20 at 32x32 (batch
16) and torchvision ResNet-50 at 224x224 (batch 2, one timed call). Expensive
methods run with reduced sample counts at 224 (listed in the table); the
ratio is what matters.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torchvision

from bench.cost import PassCounter
from bench.explainers.base import ExplainerContext
from bench.models.base import prepare
from bench.models.cifar_resnet import CifarResNet
from bench.registry import EXPLAINERS, load_builtin_components
from bench.types import LoadedModel, ModelSpec

REDUCED_224 = {
    "rise": {"n_masks": 256},
    "lime": {"n_samples": 100},
    "kernel_shap": {"n_samples": 100},
    "occlusion": {"window": 32, "stride": 16},
    "scorecam": {"layer": "net.layer1.0.conv1"},
    "ablationcam": {"layer": "net.layer1.0.conv1"},
    "smoothgrad": {"n_samples": 10},
    "gradient_shap": {"n_samples": 10, "background_size": 20},
    "deeplift_shap": {"background_size": 10},
    "integrated_gradients": {"n_steps": 32, "internal_batch_size": 32},
}


def build(name: str) -> tuple[LoadedModel, int, int]:
    torch.manual_seed(0)
    if name == "resnet20":
        spec = ModelSpec(
            num_classes=10, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), target_layer="net.layer3"
        )
        return prepare(CifarResNet(20), spec, torch.device("cpu")), 32, 16
    net = torchvision.models.resnet50(weights=None)
    spec = ModelSpec(num_classes=1000, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), target_layer="net.layer4")
    return prepare(net, spec, torch.device("cpu")), 224, 2


def _median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pass_rates(model: LoadedModel, size: int, batches: tuple[int, ...], repeats: int) -> tuple[float, float]:
    """Seconds per image of a forward, and of a forward+backward (input gradient), at the best of
    ``batches`` (the model's best batch size, so the limit is the fastest the passes can go)."""
    best_f, best_fb = float("inf"), float("inf")
    for batch in batches:
        x = torch.rand(batch, 3, size, size)

        def forward(x: torch.Tensor = x) -> None:
            with torch.no_grad():
                model(x)

        def forward_backward(x: torch.Tensor = x) -> None:
            model(x.clone().requires_grad_(True))[:, 0].sum().backward()

        best_f = min(best_f, _median_time(forward, repeats) / batch)
        best_fb = min(best_fb, _median_time(forward_backward, repeats) / batch)
    return best_f, best_fb


def time_explainer(
    name: str, model: LoadedModel, size: int, batch: int, repeats: int, rates: tuple[float, float]
) -> str | None:
    """One Markdown row, or None when the explainer does not apply to the model."""
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    target, seeds = torch.arange(batch) % 10, list(range(batch))
    background = torch.rand(100, 3, size, size, generator=torch.Generator().manual_seed(2))
    cls = EXPLAINERS.get(name)
    changes = REDUCED_224.get(name, {}) if size == 224 else {}
    explainer = cls(cls.Params(**changes))
    if explainer.supports(model) is not None:
        return None
    explainer.prepare(
        ExplainerContext(model=model, device=torch.device("cpu"), seed=0, background=lambda n: background[:n])
    )
    with PassCounter(model.module) as counter:
        explainer.explain(model, x, target, seeds)
    fwd, bwd = counter.forward_images / batch, counter.backward_images / batch
    seconds = _median_time(lambda: explainer.explain(model, x, target, seeds), repeats) / batch
    t_f, t_fb = rates
    limit = (fwd - bwd) * t_f + bwd * t_fb
    ratio = f"{seconds / limit:.2f}" if limit > 0 else "model-free"
    shown = ", ".join(f"{k}={v}" for k, v in changes.items())
    return f"| {name} | {size}x{size} | {shown} | {seconds:.4g} | {fwd:.0f} / {bwd:.0f} | {limit:.4g} | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet50"])
    parser.add_argument("--only", nargs="*", help="explainer names to time (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    load_builtin_components()
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU\n")
    for model_name in args.models:
        model, size, batch = build(model_name)
        rates = pass_rates(model, size, (16, 64, 256) if size == 32 else (4, 8, 16), args.repeats)
        print(f"\n{model_name}: forward {rates[0]:.4g} s/image, forward+backward {rates[1]:.4g} s/image\n")
        print("| explainer | input | params changed | s/image | fwd / bwd images per image | limit s/image | ratio |")
        print("|---|---|---|---:|---:|---:|---:|")
        for name in args.only or EXPLAINERS.names():
            row = time_explainer(name, model, size, batch, args.repeats if size == 32 else 1, rates)
            if row is not None:
                print(row, flush=True)


if __name__ == "__main__":
    main()
