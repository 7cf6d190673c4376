"""The CAM family against the model passes it cannot avoid, and against pytorch-grad-cam.

Gradient CAMs (Grad-CAM, Grad-CAM++, XGrad-CAM, Layer-CAM, HiResCAM) need one forward and one
backward pass per batch: their floor is one forward + backward of the target logits to the input.
Eigen-CAM needs one forward. Score-CAM and Ablation-CAM need one forward per channel per image: their
floor is that many plain forwards at the fastest batch size (of 8 to 256, at most that many). Every
row times the explainer, its floor and pytorch-grad-cam's call on the same batch (medians of
``--repeats`` runs after two warm-ups; the reference gets ``--ref-repeats``) and prints a Markdown
table. Weights are random: timings do not depend on them. On a shared machine, ``--threads 1 --clock cpu`` (process CPU
time of one thread) is steadier than wall time.

Models: a CIFAR ResNet-20 at 32x32 (layer3, 64 channels) and a torchvision ResNet-50 at 224x224
(layer4, 2048 channels). On ResNet-50 the per-channel methods would need 2048 forwards per image,
too many for a CPU run, so they explain ``--r50-channel-images`` images at ``net.layer1.0.conv1``
(64 channels) instead; the floor is measured for the same setting.

    python benchmarks/bench_cam.py [--repeats 5] [--ref-repeats 3] [--batch 16] [--models resnet20,resnet50]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import pytorch_grad_cam as pgc
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from threadpoolctl import threadpool_limits
from torchvision.models import resnet50

from bench.explainers import cam
from bench.models.base import prepare
from bench.models.cifar_resnet import CifarResNet
from bench.types import LoadedModel, ModelSpec

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
PER_CHANNEL = {"scorecam", "ablationcam"}
BATCH_SIZES = (8, 16, 32, 64, 128, 256)


@dataclass
class Setup:
    """A model, its input size, the layer explained by each kind of method and how many images."""

    label: str
    model: LoadedModel
    size: int
    layer: str
    channel_layer: str
    channel_images: int


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def median_seconds(fn: Callable[[], object], repeats: int, warmups: int = 2) -> float:
    """Median time of ``fn`` over ``repeats`` runs, after ``warmups`` runs (CPU: no synchronisation).

    The first calls of a process run slower (allocator, kernel caches), which would penalise the first row."""
    for _ in range(warmups):
        fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def setups(names: list[str], batch: int, r50_channel_images: int) -> list[Setup]:
    out = []
    torch.manual_seed(0)
    if "resnet20" in names:
        model = prepare(CifarResNet(20), ModelSpec(num_classes=10, target_layer="net.layer3"), torch.device("cpu"))
        out.append(Setup("cifar_resnet20, 32x32", model, 32, "net.layer3", "net.layer3", batch))
    if "resnet50" in names:
        model = prepare(
            resnet50(weights=None), ModelSpec(num_classes=1000, target_layer="net.layer4"), torch.device("cpu")
        )
        out.append(Setup("resnet50, 224x224", model, 224, "net.layer4", "net.layer1.0.conv1", r50_channel_images))
    return out


def channels(model: LoadedModel, path: str, size: int) -> int:
    """Channels of the layer's output, from one forward of a blank image."""
    seen: list[int] = []
    with cam.forward_hook(model.layer(path), lambda _m, _i, out: seen.append(out.shape[1])), torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return seen[0]


def forward_floor(model: LoadedModel, total: int, size: int, repeats: int) -> float:
    """Seconds for ``total`` plain forwards at the fastest batch size (of those up to ``total``, each measured on
    up to 256 images)."""
    best = float("inf")
    for bs in [b for b in BATCH_SIZES if b <= max(total, BATCH_SIZES[0])]:
        images = torch.rand(bs, 3, size, size)
        batches = max(1, min(total, 256) // bs)

        @torch.no_grad()
        def run(images: torch.Tensor = images, batches: int = batches) -> None:
            for _ in range(batches):
                model(images)

        best = min(best, median_seconds(run, repeats) / (batches * bs))
    return best * total


def gradient_floor(model: LoadedModel, x: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    """One forward + backward of the target logits to the input (what a saliency map costs)."""

    def run() -> None:
        leaf = x.detach().requires_grad_(True)
        model(leaf).gather(1, target[:, None]).sum().backward()

    return run


def reference_call(ref_cls: type, model: LoadedModel, path: str, x: torch.Tensor, target: torch.Tensor) -> Callable:
    """pytorch-grad-cam on the same wrapped model (the input requires grad: the parameters are frozen)."""
    ref = ref_cls(model=model.module, target_layers=[model.module.get_submodule(path)])
    targets = [ClassifierOutputTarget(int(t)) for t in target]
    leaf = x.detach().requires_grad_(True)

    def run() -> None:
        with contextlib.redirect_stderr(io.StringIO()):  # its tqdm progress bars
            ref(input_tensor=leaf, targets=targets)

    return run


def rows(s: Setup, methods: list[str], batch: int, repeats: int, ref_repeats: int) -> list[list[str]]:
    out = []
    for name in methods:
        ours_cls, ref_cls = METHODS[name]
        per_channel = name in PER_CHANNEL
        n = s.channel_images if per_channel else batch
        path = s.channel_layer if per_channel else s.layer
        x, target = torch.rand(n, 3, s.size, s.size), torch.arange(n) % s.model.spec.num_classes
        explainer = ours_cls(ours_cls.Params(layer=path))
        ours = median_seconds(lambda e=explainer, x=x, t=target: e.explain(s.model, x, t), repeats) / n
        if per_channel:
            c = channels(s.model, path, s.size)
            floor, passes = forward_floor(s.model, n * c, s.size, repeats) / n, f"{c} forwards"
        elif name == "eigencam":
            floor = median_seconds(lambda x=x: s.model(x), repeats) / n
            passes = "1 forward"
        else:
            floor, passes = median_seconds(gradient_floor(s.model, x, target), repeats) / n, "1 fwd + 1 bwd"
        ref = median_seconds(reference_call(ref_cls, s.model, path, x, target), ref_repeats) / n
        where = f"{path}, {n} images"
        out.append(
            [
                name,
                s.label,
                where,
                passes,
                f"{ours:.4f}",
                f"{floor:.4f}",
                f"{ours / floor:.2f}",
                f"{ref:.4f}",
                f"{ref / ours:.1f}",
            ]
        )
        print(" | ".join(out[-1]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ref-repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--r50-channel-images", type=int, default=2)
    parser.add_argument("--models", default="resnet20,resnet50")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads of torch, numpy and OpenCV (default: their choice)"
    )
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall", help="cpu: process CPU time, steadier on a shared machine"
    )
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    warnings.filterwarnings("ignore")
    if args.threads:  # torch, and the numpy/OpenCV thread pools that pytorch-grad-cam uses
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
        threadpool_limits(args.threads)
    table = []
    for s in setups(args.models.split(","), args.batch, args.r50_channel_images):
        table += rows(s, args.methods.split(","), args.batch, args.repeats, args.ref_repeats)
    print()
    print(
        f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; {args.clock} seconds per image, "
        f"median of {args.repeats} runs (pytorch-grad-cam: {args.ref_repeats})\n"
    )
    head = [
        "method",
        "model",
        "layer, images",
        "floor passes",
        "xbench s/img",
        "floor s/img",
        "ratio",
        "pytorch-grad-cam s/img",
        "speed-up",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i < 4 else "---:" for i in range(len(head))) + "|")
    for row in table:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
