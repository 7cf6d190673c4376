"""RISE and the ViT explainers against the model passes they cannot avoid.

RISE needs ``n_masks`` forward passes per image, so its floor is the time of that
many forwards in batches of ``forward_batch``; attention rollout needs one
forward and transformer attribution one forward and one backward. The script
times each explainer and its floor back to back (medians of ``--repeats`` pairs
after a warm-up) and prints a Markdown table. Models have random weights: the timings do not
depend on them.

    python benchmarks/bench_rise_vit.py [--repeats 3] [--vit vit_b_16|reduced] [--device cpu] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchvision.models import VisionTransformer, vit_b_16

from bench.explainers.rise import RISE
from bench.explainers.transformer import AttentionRollout, TransformerAttribution
from bench.models.base import prepare
from bench.models.cifar_resnet import CifarResNet
from bench.types import LoadedModel, ModelSpec

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass(frozen=True)
class Timer:
    """Times explainers against their floor on ``device`` with ``clock`` ("cpu" = process CPU time,
    steadier than wall time on a machine shared with other jobs)."""

    device: torch.device
    repeats: int
    clock: str = "wall"

    def seconds(self, fn: Callable[[], object]) -> float:
        """Time of one call of ``fn`` (synchronised on CUDA)."""
        now = CLOCKS[self.clock]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = now()
        fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return now() - start

    def paired(self, explain: Callable[[], object], floor: Callable[[], object]) -> tuple[float, float, float]:
        """Median seconds of ``explain``, of ``floor`` and of their ratio, timed back to back per repeat
        after one warm-up of each, so that load from other processes hits both alike."""
        explain(), floor()
        pairs = [(self.seconds(explain), self.seconds(floor)) for _ in range(self.repeats)]
        return (
            statistics.median(e for e, _ in pairs),
            statistics.median(f for _, f in pairs),
            statistics.median(e / f for e, f in pairs),
        )


def table_row(label: str, model: str, n_images: int, timed: tuple[float, float, float]) -> list[str]:
    explain, floor, ratio = timed
    return [label, model, str(n_images), f"{explain / n_images:.4f}", f"{floor / n_images:.4f}", f"{ratio:.2f}"]


def rise_row(timer: Timer, n_images: int, n_masks: int, forward_batch: int) -> list[str]:
    """RISE on a random-weight CIFAR ResNet-20 at 32x32 vs n_images x n_masks plain forwards."""
    torch.manual_seed(0)
    device = timer.device
    model = prepare(CifarResNet(20), ModelSpec(num_classes=10), device)
    x = torch.rand(n_images, 3, 32, 32, device=device)
    target = torch.zeros(n_images, dtype=torch.long, device=device)
    rise = RISE(RISE.Params(n_masks=n_masks, forward_batch=forward_batch))
    seeds = list(range(n_images))
    total = n_images * n_masks
    images = torch.rand(forward_batch, 3, 32, 32, device=device)

    @torch.no_grad()
    def floor() -> None:
        for start in range(0, total, forward_batch):
            model(images[: min(forward_batch, total - start)])

    timed = timer.paired(lambda: rise.explain(model, x, target, seeds), floor)
    label = f"rise ({n_masks} masks, forward_batch {forward_batch}) vs {total} forwards"
    return table_row(label, "cifar_resnet20, 32x32", n_images, timed)


def build_vit(kind: str) -> tuple[VisionTransformer, int]:
    """vit_b_16 at 224 (weights=None) or a reduced ViT (6 layers, width 384, 6 heads) at 224."""
    torch.manual_seed(0)
    if kind == "vit_b_16":
        return vit_b_16(weights=None), 224
    net = VisionTransformer(image_size=224, patch_size=16, num_layers=6, num_heads=6, hidden_dim=384, mlp_dim=1536)
    return net, 224


def vit_rows(timer: Timer, kind: str, n_images: int) -> list[list[str]]:
    """Rollout vs one forward, transformer attribution vs one forward + backward of the target logit."""
    net, size = build_vit(kind)
    device = timer.device
    torch.nn.init.normal_(net.heads.head.weight, std=0.02)  # torchvision zero-initialises the head
    model: LoadedModel = prepare(net, ModelSpec(num_classes=1000), device)
    x = torch.rand(n_images, 3, size, size, device=device)
    target = torch.arange(n_images, device=device)

    @torch.no_grad()
    def forward() -> None:
        model(x)

    def forward_backward() -> None:
        xg = x.detach().requires_grad_(True)
        model(xg).gather(1, target[:, None]).sum().backward()

    rows = []
    for name, explainer, floor, floor_name in (
        ("attention_rollout", AttentionRollout(), forward, "1 forward"),
        ("transformer_attribution", TransformerAttribution(), forward_backward, "1 forward + backward"),
    ):
        timed = timer.paired(lambda e=explainer: e.explain(model, x, target), floor)
        rows.append(table_row(f"{name} vs {floor_name}", f"{kind}, {size}x{size}", n_images, timed))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--vit", choices=["vit_b_16", "reduced"], default="vit_b_16")
    parser.add_argument("--rise-images", type=int, default=4)
    parser.add_argument("--rise-masks", type=int, default=2000)
    parser.add_argument("--forward-batch", type=int, default=256)
    parser.add_argument("--vit-images", type=int, default=4)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 avoids thread-sync stalls on a busy machine)"
    )
    parser.add_argument("--only", choices=["rise", "vit"], default=None, help="run one part of the table")
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall", help="cpu: process CPU time, steadier on a shared machine"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    timer = Timer(device, args.repeats, args.clock)

    rows = []
    if args.only in (None, "rise"):
        rows.append(rise_row(timer, args.rise_images, args.rise_masks, args.forward_batch))
    if args.only in (None, "vit"):
        rows += vit_rows(timer, args.vit, args.vit_images)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    threads = torch.get_num_threads()
    print(
        f"{where}, {threads} threads, torch {torch.__version__}, {args.clock} clock, "
        f"medians of {args.repeats} paired runs\n"
    )
    header = ["explainer", "model", "images", "s / image", "floor s / image", "ratio"]
    print("| " + " | ".join(header) + " |")
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
