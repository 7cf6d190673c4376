"""Faithfulness metrics: xbench's native code vs Quantus 0.6 / pytorch-grad-cam, and vs the forward-pass limit.

For every model (CIFAR ResNet-20 and the small CNN at 32x32, torchvision's
ResNet-50 at 224x224, all with random weights) and every metric, on the same
images and attributions:

- ``native``: seconds of ``metric.score`` (median of ``--repeats`` runs);
- ``limit``: seconds that the forward passes the metric does (counted with a
  hook) take at the model's best batch size, measured on a reused batch, plus
  the method's own per-image CPU work where it has some (IROF's SLIC
  segmentation, ROAD's imputation solves; timed inside the native run): the
  time no implementation that does this work can beat;
- ``reference``: the same metric in Quantus 0.6 (or pytorch-grad-cam for ROAD),
  configured to do the same work; ``max |diff|`` where the definitions agree
  exactly on these inputs (see each row's note).

Usage: ``python benchmarks/bench_metrics_faithfulness.py [--threads N] [--repeats R] [--quick]``.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import quantus
import torch
import torchvision
from pytorch_grad_cam.metrics import road as gradcam_road
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

import bench.functional.imputation as road_module
import bench.functional.regions as regions_module
from bench.cost import PassCounter
from bench.functional.faithfulness import random_subsets
from bench.metrics.base import Metric, MetricInput
from bench.metrics.faithfulness import (
    IROF,
    Deletion,
    FaithfulnessCorrelation,
    Insertion,
    PixelFlipping,
    RegionPerturbation,
)
from bench.metrics.quantus_ import COMPAT_INIT, install_trapz_shim
from bench.metrics.road import ROAD
from bench.models.base import prepare
from bench.models.cifar_resnet import IMAGENET_MEAN, IMAGENET_STD, CifarResNet
from bench.models.small_cnn import build_small_cnn
from bench.types import Batch, LoadedModel, ModelSpec

install_trapz_shim()
QUIET = {"disable_warnings": True, "display_progressbar": False}
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter  # set by --clock: CPU time is robust to other processes on a shared machine


@dataclass
class Setup:
    """One model with its images, attributions and the metric settings used on it."""

    name: str
    model: LoadedModel
    x: torch.Tensor
    attr: torch.Tensor
    target: torch.Tensor
    batch_sizes: tuple[int, ...]
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)


def _setup(name: str, net: torch.nn.Module, size: int, n: int, batch_sizes: tuple[int, ...], settings: dict) -> Setup:
    spec = ModelSpec(num_classes=10 if size == 32 else 1000, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    model = prepare(net, spec, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    side = max(4, size // 32)  # smooth colour fields plus a little noise: SLIC finds ~100 segments, as on photos
    coarse = torch.rand(n, 3, side, side, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    x = 0.95 * smooth + 0.05 * torch.rand(n, 3, size, size, generator=g)
    attr = torch.rand(n, 1, size, size, generator=g)  # no ties: every definition orders the pixels alike
    with torch.no_grad():
        target = model(x).argmax(1)
    return Setup(name, model, x, attr, target, batch_sizes, settings)


def setups(quick: bool) -> list[Setup]:
    small = {
        "deletion": {"steps": 32},
        "insertion": {"steps": 32},
        "fc": {"nr_runs": 100, "subset_size": 224},
        "pf": {"pixels_per_step": 43, "features_in_step": 128},  # 24 steps each (Quantus: fis must divide H*W)
        "rp": {"patch_size": 8, "regions_evaluation": 16},
        "irof": {},
        "road": {"percentages": (10, 20, 30, 40, 50, 60, 70, 80, 90)},
    }
    large = {
        "deletion": {"steps": 16},
        "insertion": {"steps": 16},
        "fc": {"nr_runs": 20, "subset_size": 224},
        "pf": {"pixels_per_step": 2091, "features_in_step": 6272},  # 24 steps each
        "rp": {"patch_size": 16, "regions_evaluation": 24},
        "irof": {"n_images": 1},
        "road": {"percentages": (10, 50, 90), "n_images": 1},
    }
    n_small = 4 if quick else 16
    torch.manual_seed(0)
    out = [
        _setup("cifar_resnet20 32x32", CifarResNet(20, 10), 32, n_small, (16, 32, 64, 128, 256), small),
        _setup("small_cnn 32x32", build_small_cnn((16, 32, 64, 64), 10), 32, n_small, (16, 32, 64, 128, 256), small),
    ]
    if not quick:
        resnet50 = torchvision.models.resnet50(weights=None)
        out.append(_setup("resnet50 224x224", resnet50, 224, 2, (4, 8, 16), large))
    return out


def _time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = clock()
        result = fn()
        times.append(clock() - start)
    return statistics.median(times), result


@torch.no_grad()
def best_throughput(s: Setup) -> tuple[int, float]:
    """(batch size, images per second) of the fastest forward batch size on reused images."""
    best = (0, 0.0)
    for b in s.batch_sizes:
        images = torch.rand(b, *s.x.shape[1:])
        s.model(images)  # warm-up
        seconds, _ = _time(lambda images=images: s.model(images), 3)
        if b / seconds > best[1]:
            best = (b, b / seconds)
    return best


def _inp(s: Setup, n: int | None = None) -> MetricInput:
    n = len(s.x) if n is None else n
    batch = Batch(x=s.x[:n], label=s.target[:n], ids=[f"s{i}" for i in range(n)], target=s.target[:n])
    return MetricInput(model=s.model, batch=batch, attributions=s.attr[:n], seeds=list(range(n)))


def _q(s: Setup, n: int) -> dict[str, Any]:
    return dict(
        model=s.model.module,
        x_batch=s.x[:n].numpy(),
        y_batch=s.target[:n].numpy(),
        a_batch=s.attr[:n].numpy(),
        device="cpu",
        channel_first=True,
    )


@dataclass
class Row:
    model: str
    metric: str
    images: int
    forwards: int
    native: float
    limit: float  # forward passes at the best batch size + the method's own CPU work
    method_cpu: float = 0.0
    reference: str = "-"
    reference_s: float = float("nan")
    diff: str = "-"


# the per-image CPU work of a method, timed inside a native run: (module, function name)
METHOD_WORK = {"IROF": (regions_module, "slic_segments"), "ROAD": (road_module, "imputed_images")}


@contextlib.contextmanager
def timed_calls(module: Any, name: str, total: list[float]) -> Iterator[None]:
    """Add the seconds spent in ``module.name`` to ``total[0]`` while active."""
    original = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return original(*args, **kwargs)
        finally:
            total[0] += clock() - start

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


class ForwardLimit:
    """Seconds that forwarding F images takes in chunks of the best batch size (the last one partial),
    from per-chunk times measured on reused random images."""

    def __init__(self, s: Setup, batch: int):
        self.s, self.batch = s, batch
        self._seconds: dict[int, float] = {}

    @torch.no_grad()
    def chunk(self, size: int) -> float:
        if size not in self._seconds:
            images = torch.rand(size, *self.s.x.shape[1:])
            self.s.model(images)  # warm-up
            self._seconds[size] = _time(lambda: self.s.model(images), 3)[0]
        return self._seconds[size]

    def __call__(self, forwards: int) -> float:
        full, rest = divmod(forwards, self.batch)
        return full * self.chunk(self.batch) + (self.chunk(rest) if rest else 0.0)


def run_native(s: Setup, metric: Metric, n: int, repeats: int, limit: ForwardLimit) -> tuple[Row, Any]:
    """Time ``metric`` on the first ``n`` images (median of ``repeats``); count its forward passes and
    its own CPU work in the first run."""
    name = metric.__class__.__name__
    work = [0.0]
    with PassCounter(s.model.module) as counter, contextlib.ExitStack() as stack:
        if name in METHOD_WORK:
            stack.enter_context(timed_calls(*METHOD_WORK[name], work))
        first, scores = _time(lambda: metric.score(_inp(s, n)), 1)
    times = [first] + [_time(lambda: metric.score(_inp(s, n)), 1)[0] for _ in range(repeats - 1)]
    forward = limit(counter.forward_images)
    row = Row(s.name, name, n, counter.forward_images, statistics.median(times), forward + work[0], work[0])
    return row, scores


def reference(row: Row, name: str, fn: Callable[[], Any], log: Callable[[str], None]) -> Any:
    """Time the reference implementation ``fn`` once into ``row``; a failure is reported, not raised."""
    row.reference = name
    try:
        row.reference_s, result = _time(fn, 1)
    except Exception as exc:  # noqa: BLE001 - a broken reference is a result of the benchmark
        row.reference, row.diff = f"{name}: fails ({type(exc).__name__})", "-"
        log(f"    {name} failed: {exc}")
        return None
    log(f"    {name}: {row.reference_s:.3f} s")
    return result


def bench_setup(s: Setup, repeats: int, log: Callable[[str], None]) -> list[Row]:
    fb, per_image = best_throughput(s)
    log(f"{s.name}: best forward batch {fb} ({per_image:.0f} images/s)")
    limit = ForwardLimit(s, fb)
    rows: list[Row] = []
    cfg = s.settings
    n_all = len(s.x)

    def native(metric: Metric, n: int = n_all) -> tuple[Row, Any]:
        row, scores = run_native(s, metric, n, repeats, limit)
        log(f"  {row.metric}: {row.native:.3f} s (limit {row.limit:.3f} s, of which method CPU {row.method_cpu:.3f} s)")
        return row, scores

    for cls in (Deletion, Insertion):
        row, _ = native(cls(cls.Params(**cfg[cls.__name__.lower()], forward_batch=fb)))
        rows.append(row)

    # faithfulness correlation: Quantus draws channel values with np.random.choice; hand it our subsets
    fc = cfg["fc"]
    row, scores = native(FaithfulnessCorrelation(FaithfulnessCorrelation.Params(**fc, forward_batch=fb)))
    pixels = s.x.shape[-2] * s.x.shape[-1]
    subsets = random_subsets(list(range(n_all)), fc["nr_runs"], fc["subset_size"], pixels, torch.device("cpu"))
    draws = iter(  # Quantus' order: for each run, for each image; every channel of each of our pixels
        np.concatenate([c * pixels + subsets[i, r].numpy() for c in range(3)])
        for r in range(fc["nr_runs"])
        for i in range(n_all)
    )
    metric = quantus.FaithfulnessCorrelation(
        nr_runs=fc["nr_runs"], subset_size=3 * fc["subset_size"], perturb_baseline=0.0, return_aggregate=False, **QUIET
    )
    original_choice, np.random.choice = np.random.choice, lambda *a, **k: next(draws)
    try:
        theirs = reference(row, "quantus", lambda: metric(**_q(s, n_all), batch_size=fb), log)
    finally:
        np.random.choice = original_choice
    row.diff = row.diff if theirs is None else f"{np.abs(scores.values[''].numpy() - np.array(theirs)).max():.1e}"
    rows.append(row)

    pf = cfg["pf"]
    row, _ = native(PixelFlipping(PixelFlipping.Params(pixels_per_step=pf["pixels_per_step"], forward_batch=fb)))
    metric = quantus.PixelFlipping(
        features_in_step=pf["features_in_step"], perturb_baseline=0.0, return_auc_per_sample=True, **QUIET
    )
    if reference(row, "quantus", lambda: metric(**_q(s, n_all), batch_size=fb), log) is not None:
        row.diff = "n/a (Quantus steps in channel values)"
    rows.append(row)

    rp = cfg["rp"]
    row, scores = native(RegionPerturbation(RegionPerturbation.Params(**rp, forward_batch=fb)))
    metric = quantus.RegionPerturbation(**rp, perturb_baseline=0.0, **QUIET)
    theirs = reference(row, "quantus", lambda: metric(**_q(s, n_all), batch_size=fb), log)
    row.diff = row.diff if theirs is None else f"{np.abs(scores.curves[''].numpy() - np.array(theirs)).max():.1e}"
    rows.append(row)

    n = cfg["irof"].get("n_images", n_all)
    row, scores = native(IROF(IROF.Params(baseline="constant", baseline_value=0.5, forward_batch=fb)), n)
    metric = quantus.IROF(**COMPAT_INIT["IROF"], perturb_baseline=0.5, return_aggregate=False, **QUIET)
    theirs = reference(row, "quantus", lambda: metric(**_q(s, n), batch_size=fb), log)
    if theirs is not None:  # Quantus pads shorter curves with zeros: compare the images with the most superpixels
        full = (torch.isfinite(scores.curves[""]).sum(1) == scores.curves[""].shape[1]).numpy()
        diff = np.abs(scores.values[""].numpy() - np.array(theirs))[full]
        row.diff = f"{diff.max():.1e} ({int(full.sum())} of {n})"
    rows.append(row)

    road = cfg["road"]
    n = road.get("n_images", n_all)
    percentages = list(road["percentages"])
    row, scores = native(ROAD(ROAD.Params(percentages=tuple(percentages), noise_std=0.0, forward_batch=fb)), n)
    targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in s.target[:n]]
    defaults = gradcam_road.NoisyLinearImputer.__init__.__defaults__
    gradcam_road.NoisyLinearImputer.__init__.__defaults__ = (0.0, gradcam_road.neighbors_weights)  # no noise
    try:
        combined = gradcam_road.ROADCombined(percentiles=percentages)
        call = lambda: combined(s.x[:n], s.attr[:n, 0].numpy(), targets, s.model.module)  # noqa: E731
        theirs = reference(row, "grad-cam", call, log)
    finally:
        gradcam_road.NoisyLinearImputer.__init__.__defaults__ = defaults
    row.diff = row.diff if theirs is None else f"{np.abs(scores.values[''].numpy() - theirs).max():.1e}"
    rows.append(row)
    return rows


def markdown(rows: list[Row]) -> str:
    head = (
        "| model | metric | images | forward images | native s | limit s (method CPU s) | native / limit "
        "| reference | reference s | reference / native | max abs diff |"
    )
    lines = [head, "|" + "---|" * 2 + "---:|" * 5 + "---|---:|---:|---|"]
    for r in rows:
        speed = f"{r.reference_s / r.native:.1f}x" if r.reference_s == r.reference_s else "-"
        ref_s = f"{r.reference_s:.2f}" if r.reference_s == r.reference_s else "-"
        cpu = f" ({r.method_cpu:.3f})" if r.method_cpu else ""
        lines.append(
            f"| {r.model} | {r.metric} | {r.images} | {r.forwards} | {r.native:.3f} | {r.limit:.3f}{cpu} "
            f"| {r.native / r.limit:.2f} | {r.reference} | {ref_s} | {speed} | {r.diff} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each native metric (median)")
    parser.add_argument("--quick", action="store_true", help="4 images, 32x32 models only (a smoke run)")
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall", help="wall time, or this process's CPU time (1 thread)"
    )
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    log = lambda text: print(text, flush=True)  # noqa: E731
    rows = []
    for s in setups(args.quick):
        rows += bench_setup(s, args.repeats if s.x.shape[-1] == 32 else 1, log)
    print()
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}, numpy {np.__version__}, quantus {quantus.__version__}, {args.clock} clock; "
        f"native: median of {args.repeats} (32x32) or 1 (224x224) runs, references: 1 run"
    )
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
