"""Throughput of a whole cell on one GPU, at fp32 and bf16, against the model's passes and against peers.

The cell is what ``xbench run`` does per batch: Grad-CAM on ResNet-50 at 224 px, then deletion and
insertion (20 steps), IoU and the pointing game on the same attributions, every pass on the device
and under autocast for bf16 (as a suite's ``precision: bf16``). Against:

- the model's own throughput at its best batch: forward, and forward+backward to the input; the
  *limit* is the cell's passes at those speeds (42 forwards and one forward+backward per image),
  so a cell time / limit of 1.0 means the cell adds nothing to its model passes;
- the same pipeline built from the peers: pytorch-grad-cam's GradCAM, Quantus' PixelFlipping with
  21 steps for each curve (Quantus has no insertion; the same number of forwards), Quantus'
  RelevanceRankAccuracy (top-|mask| pixels in the mask, the selection of xbench's IoU) and
  PointingGame, on the same batch, device and autocast.

Repetitions are interleaved (cell, peer) after a warm-up; images per second are medians.
``--dry-run`` runs the same code on tiny sizes on whatever device there is (seconds on a CPU).

    python benchmarks/gpu_cell.py [--dry-run] [--batch 64] [--repeats 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torchvision

from bench import fastpath
from bench.explainers.cam import GradCAM
from bench.metrics.base import MetricInput
from bench.metrics.faithfulness import Deletion, Insertion
from bench.metrics.localisation import IoU, PointingGame
from bench.models.base import prepare
from bench.types import Batch, LoadedModel, ModelSpec

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def inputs(n: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images and one rectangular object mask per image."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 3, 7, 7, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    mask = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    mask[:, :, size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = 1
    return x.to(device), mask.to(device)


def xbench_cell(model: LoadedModel, x: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, steps: int) -> Callable:
    """One batch of the cell: explain once, score every metric on the same attributions."""
    explainer = GradCAM()
    metrics = [Deletion(Deletion.Params(steps=steps)), Insertion(Insertion.Params(steps=steps)),
               IoU(IoU.Params(threshold="mask_size")), PointingGame()]  # fmt: skip
    seeds = list(range(len(x)))
    batch = Batch(x=x, label=target, ids=[str(i) for i in seeds], target=target, mask=mask)

    def run() -> None:
        attr = explainer.explain(model, x, target, seeds)
        for metric in metrics:
            metric.score(MetricInput(model=model, batch=batch, attributions=attr, seeds=seeds, explainer=explainer))

    return run


def peer_cell(model: LoadedModel, x: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, steps: int) -> Callable:
    """The same batch with pytorch-grad-cam and Quantus (numpy between their steps, as they work)."""
    import quantus
    from pytorch_grad_cam import GradCAM as PGCGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from bench.metrics.quantus_ import install_trapz_shim

    install_trapz_shim()
    quiet = {"disable_warnings": True, "display_progressbar": False}
    layer = model.module.get_submodule(model.spec.target_layer)
    cam = PGCGradCAM(model=model.module, target_layers=[layer])
    targets = [ClassifierOutputTarget(int(t)) for t in target]
    pixels = x.shape[-2] * x.shape[-1]
    flips = steps + 1 if (steps + 1) % 3 == 0 else steps  # Quantus: 3 * pixels / steps must divide the pixels
    flipping = quantus.PixelFlipping(features_in_step=3 * pixels // flips, perturb_baseline="black", **quiet)
    localisation = [quantus.RelevanceRankAccuracy(abs=False, normalise=False, **quiet),
                    quantus.PointingGame(abs=False, normalise=False, **quiet)]  # fmt: skip
    leaf = x.detach().requires_grad_(True)
    common = {"model": model.module, "x_batch": x.cpu().numpy(), "y_batch": target.cpu().numpy(),
              "device": str(x.device), "channel_first": True, "batch_size": len(x)}  # fmt: skip

    def run() -> None:
        with contextlib.redirect_stderr(io.StringIO()):
            maps = cam(input_tensor=leaf, targets=targets)[:, None]
        flipping(**common, a_batch=maps)  # the deletion curve
        flipping(**common, a_batch=maps)  # in place of insertion, which Quantus lacks: as many forwards
        for metric in localisation:
            metric(**common, a_batch=maps, s_batch=mask.cpu().numpy())

    return run


def best_throughput(model: LoadedModel, shape: tuple[int, ...], sizes: list[int], backward: bool,
                    device: torch.device) -> tuple[int, float]:  # fmt: skip
    """(batch, images/s) of the fastest batch size: forwards, or forwards + backwards to the input."""
    best = (sizes[0], 0.0)
    for size in sizes:
        x = torch.rand(size, *shape, device=device)

        def run(x: torch.Tensor = x) -> None:
            if backward:
                leaf = x.detach().requires_grad_(True)
                torch.autograd.grad(model(leaf)[:, 0].sum(), leaf)
            else:
                with torch.no_grad():
                    model(x)

        try:
            run()
            rate = size / statistics.median(seconds(run, device) for _ in range(3))
        except torch.cuda.OutOfMemoryError:
            break
        best = max(best, (size, rate), key=lambda b: b[1])
    return best


def measure(args: argparse.Namespace, device: torch.device, precision: str) -> dict[str, Any]:
    # dry run: a ResNet-18 at 96 px (its layer4 is 3x3: pytorch-grad-cam's maps are not all zero), 2 images
    size, n, steps = (96, 2, 3) if args.dry_run else (224, args.batch, 20)
    sizes = [2] if args.dry_run else [16, 32, 64, 128, 256]
    torch.manual_seed(0)
    spec = ModelSpec(num_classes=1000, target_layer="net.layer4")
    net = torchvision.models.resnet18(weights=None) if args.dry_run else torchvision.models.resnet50(weights=None)
    model = prepare(net, spec, device)
    x, mask = inputs(n, size, device)
    with torch.no_grad():
        target = model(x).argmax(1)
    with autocast(device, precision):
        fwd = best_throughput(model, tuple(x.shape[1:]), sizes, False, device)
        bwd = best_throughput(model, tuple(x.shape[1:]), sizes[:-1] or sizes, True, device)
        sides = {"xbench": xbench_cell(model, x, mask, target, steps), "peer": peer_cell(model, x, mask, target, steps)}
        failed = {}
        for name, run in list(sides.items()):
            try:
                run()  # warm-up
            except (TypeError, RuntimeError) as exc:  # pytorch-grad-cam and Quantus go through numpy: no bfloat16
                failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                del sides[name]
        times: dict[str, list[float]] = {name: [] for name in sides}
        for rep in range(args.repeats):
            for name in list(sides)[rep % 2 :] + list(sides)[: rep % 2]:
                times[name].append(seconds(sides[name], device))
    forwards = 2 * (steps + 1)  # deletion and insertion curves, each with the untouched image
    limit = 1 / (forwards / fwd[1] + 1 / bwd[1])  # images/s if the cell did nothing but its passes
    cell = n / statistics.median(times["xbench"])
    peer = n / statistics.median(times["peer"]) if "peer" in times else None
    return {"precision": precision, "images": n, "size": size, "steps": steps, "cell_img_s": cell,
            "peer_img_s": peer, "forward_img_s": fwd[1], "forward_batch": fwd[0], "fwd_bwd_img_s": bwd[1],
            "fwd_bwd_batch": bwd[0], "limit_img_s": limit, "time_vs_limit": limit / cell,
            "time_vs_peer": peer / cell if peer else None, "peer_failure": failed.get("peer")}  # fmt: skip


def markdown(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"`{meta['command']}` on {meta['date']}: {meta['device']}, torch {meta['torch']}; images per second, "
        f"medians of {meta['repeats']} interleaved repetitions of a batch of {records[0]['images']} images.",
        "",
        "| precision | cell img/s | forward img/s (batch) | fwd+bwd img/s (batch) | pass limit img/s "
        "| cell time / limit | peers' pipeline img/s | cell time / peers' |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        lines.append(
            f"| {r['precision']} | {r['cell_img_s']:.1f} | {r['forward_img_s']:.0f} ({r['forward_batch']}) "
            f"| {r['fwd_bwd_img_s']:.0f} ({r['fwd_bwd_batch']}) | {r['limit_img_s']:.1f} | {r['time_vs_limit']:.2f} "
            + (f"| {r['peer_img_s']:.1f} | {r['time_vs_peer']:.2f} |" if r["peer_img_s"] else
               f"| fails ({r['peer_failure']}) | - |")
        )  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on any device (a check of the script)")
    parser.add_argument("--batch", type=int, default=64, help="images per cell batch (the suite's batch_size)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (a dry run makes 2)")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--json", help="write the records and conditions to this file")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.repeats = 2
    fastpath.configure("auto", "tuned")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.dry_run:
        parser.error("no CUDA device: run on a GPU machine, or check the script with --dry-run")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    records = []
    for precision in args.precisions.split(","):
        records.append(measure(args, device, precision))
        print(json.dumps(records[-1]), file=sys.stderr, flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({fastpath.applied().describe()})"
    command = "python benchmarks/gpu_cell.py" + (" --dry-run" if args.dry_run else "")
    meta = {"date": datetime.date.today().isoformat(), "device": name, "torch": torch.__version__,
            "repeats": args.repeats, "command": command, "dry_run": args.dry_run}  # fmt: skip
    print(markdown(records, meta))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "records": records}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
