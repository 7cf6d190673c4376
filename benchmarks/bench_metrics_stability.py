"""Time the stability and randomisation metrics against their Quantus 0.6 counterparts.

These metrics explain again (perturbed inputs, randomised models, another class), so
the explainer dominates. Both sides call the same explainer (saliency; ``random``
for consistency, which needs a stochastic one) through a stopwatch: "explainer" is
the time spent inside those calls, "bookkeeping" everything else the metric does
(noise, normalisation, norms, ranks, SSIM, layer randomisation, Quantus' asserts).
The native metric explains ``explain_batch`` perturbed images per call where Quantus
explains one batch per draw, so its explainer time can be lower too. "overhead" is
native total / native explainer time: the floor of a re-explaining metric is its
explanations. Models have random weights (no downloads): CifarResNet-20 and the
small CNN at 32x32, torchvision's ResNet-50 at 224x224 with fewer images and draws
(model randomisation is left out there: its 161 layers would each need two full
explanation passes). Same-class settings on both sides: sensitivity radius 0.02,
Lipschitz std 0.1 with normalisation, MPRT cascading Spearman with abs and
normalisation, random logit SSIM with normalisation (Quantus' SSIM is 1-D on the
flattened maps, ours 2-D). Each cell is the fastest of ``--repeats`` runs (after a
warm-up run of the native metric); torch runs on ``--threads`` threads (default 1: the machine is
shared and numpy is single-threaded).

    python benchmarks/bench_metrics_stability.py [--images 32] [--draws 10] [--repeats 3] [--no-resnet50]

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import quantus
import torch

from bench.explainers.base import Explainer
from bench.functional.randomisation import randomisable_layers
from bench.metrics.base import Metric, MetricInput
from bench.metrics.randomisation import ModelParameterRandomisation, RandomLogit
from bench.metrics.stability import AvgSensitivity, Consistency, LocalLipschitz, MaxSensitivity
from bench.models.base import prepare
from bench.models.cifar_resnet import CifarResNet
from bench.models.small_cnn import build_small_cnn
from bench.registry import EXPLAINERS, load_builtin_components
from bench.seeding import sample_seeds
from bench.types import Batch, LoadedModel, ModelSpec

if not hasattr(np, "trapz"):  # Quantus 0.6 still calls np.trapz (at call time), which numpy 2.4 removed
    np.trapz = np.trapezoid

QUIET = {"disable_warnings": True, "display_progressbar": False}


class Stopwatch(Explainer):
    """Wraps an explainer and adds up the seconds spent in its ``explain`` calls."""

    def __init__(self, inner: Explainer):
        super().__init__(inner.params)
        self.inner, self.seconds = inner, 0.0
        self.deterministic = inner.deterministic  # type: ignore[misc]

    def attribute(self, model, x, target, seeds):  # pragma: no cover - explain is overridden
        return self.inner.attribute(model, x, target, seeds)

    def explain(self, model, x, target, seeds=None):
        start = time.perf_counter()
        try:
            return self.inner.explain(model, x, target, seeds)
        finally:
            self.seconds += time.perf_counter() - start

    def quantus_func(self, spec: ModelSpec, seeds: Sequence[int]) -> Callable:
        """The same timed explainer as a Quantus ``explain_func`` (the numpy conversions count as explainer time)."""

        def explain(model, inputs, targets, **kwargs):
            start = time.perf_counter()
            try:
                x, t = torch.as_tensor(inputs), torch.as_tensor(targets)
                lm = LoadedModel(module=model, spec=spec)
                return self.inner.explain(lm, x, t, list(seeds)[: len(x)]).numpy()
            finally:
                self.seconds += time.perf_counter() - start

        return explain


class ChannelMean(Explainer):
    """The channel mean of the image: an explainer with no model pass, so that a metric's run is its bookkeeping."""

    def attribute(self, model, x, target, seeds):
        return x.mean(1, keepdim=True)


@dataclass
class Case:
    name: str
    native: Metric
    quantus: Callable[[], object] | None
    explainer: str = "saliency"
    quantus_batch: int = 64


def cases(draws: int, classes: int, with_mprt: bool) -> list[Case]:
    out = [
        Case(
            "max_sensitivity",
            MaxSensitivity(MaxSensitivity.Params(n_samples=draws, radius=0.02)),
            lambda: quantus.MaxSensitivity(nr_samples=draws, lower_bound=0.02, abs=False, normalise=False, **QUIET),
        ),
        Case(
            "avg_sensitivity",
            AvgSensitivity(AvgSensitivity.Params(n_samples=draws, radius=0.02)),
            lambda: quantus.AvgSensitivity(nr_samples=draws, lower_bound=0.02, abs=False, normalise=False, **QUIET),
        ),
        Case(
            "local_lipschitz",
            LocalLipschitz(LocalLipschitz.Params(n_samples=draws, perturb_std=0.1)),
            lambda: quantus.LocalLipschitzEstimate(
                nr_samples=draws, perturb_std=0.1, abs=False, normalise=True, **QUIET
            ),
        ),
        Case(
            "random_logit (ssim)",
            RandomLogit(),
            lambda: quantus.RandomLogit(num_classes=classes, abs=False, normalise=True, **QUIET),
        ),
        Case("consistency (random explainer)", Consistency(), None, explainer="random"),
    ]
    if with_mprt:
        out.append(
            Case(
                "model_randomisation (cascading, spearman)",
                ModelParameterRandomisation(),
                lambda: quantus.MPRT(
                    similarity_func=quantus.similarity_func.correlation_spearman,
                    layer_order="top_down",
                    abs=True,
                    normalise=True,
                    **QUIET,
                ),
            )
        )
    return out


def models(images: int, draws: int, resnet50: bool) -> list[tuple[str, LoadedModel, int, int]]:
    """(label, model, images, draws): random weights, seeded."""
    torch.manual_seed(0)
    cifar = ModelSpec(num_classes=10, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    out = [
        ("cifar_resnet20 32x32", prepare(CifarResNet(20), cifar, torch.device("cpu")), images, draws),
        (
            "small_cnn 32x32",
            prepare(build_small_cnn((16, 32, 64, 64), 10), cifar, torch.device("cpu")),
            images,
            draws,
        ),
    ]
    if resnet50:
        import torchvision

        spec = ModelSpec(num_classes=1000, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        net = torchvision.models.resnet50(weights=None)
        out.append(("resnet50 224x224", prepare(net, spec, torch.device("cpu")), max(1, images // 16), 3))
    return out


def metric_input(model: LoadedModel, n: int, explainer: Explainer) -> MetricInput:
    size = 224 if model.spec.num_classes == 1000 else 32
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))
    ids = [f"img{i}" for i in range(n)]
    seeds = sample_seeds(0, ids)
    with torch.no_grad():
        target = model(x).argmax(1)
    attr = explainer.explain(model, x, target, seeds)
    batch = Batch(x=x, label=target.clone(), ids=ids, target=target)
    return MetricInput(model=model, batch=batch, attributions=attr, seeds=seeds, explainer=explainer)


def run_native(case: Case, inp: MetricInput, watch: Stopwatch) -> tuple[float, float]:
    watch.seconds = 0.0
    start = time.perf_counter()
    case.native.score(MetricInput(**{**inp.__dict__, "explainer": watch}))
    return time.perf_counter() - start, watch.seconds


def run_quantus(case: Case, inp: MetricInput, watch: Stopwatch) -> tuple[float, float]:
    watch.seconds = 0.0
    metric = case.quantus()  # type: ignore[misc]
    start = time.perf_counter()
    metric(
        model=inp.model.module,
        x_batch=inp.batch.x.numpy(),
        y_batch=inp.batch.target.numpy(),
        a_batch=inp.attributions.numpy(),
        explain_func=watch.quantus_func(inp.model.spec, inp.seeds),
        device="cpu",
        channel_first=True,
        softmax=False,
        batch_size=case.quantus_batch,
    )
    return time.perf_counter() - start, watch.seconds


def repeats(metric: Metric, model: LoadedModel) -> str:
    """Explanations per image: draws, reruns, randomised layers or the one other class."""
    p = metric.params
    if isinstance(metric, ModelParameterRandomisation):
        return f"{len(randomisable_layers(model.module))} layers"
    return str(getattr(p, "n_samples", getattr(p, "n_reruns", 1)))


def fastest(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """The (total, explainer) seconds of the fastest run: on a shared machine the others were interrupted."""
    return min(runs)


def measure(case: Case, inp: MetricInput, watch: Stopwatch, repeats: int) -> tuple[tuple[float, float], ...]:
    """Fastest (total, explainer) seconds of the native metric and (if any) of Quantus on ``inp``."""
    run_native(case, inp, watch)  # warm-up: first-call costs are not the metric's
    native = fastest([run_native(case, inp, watch) for _ in range(repeats)])
    if case.quantus is None:
        return (native,)
    return native, fastest([run_quantus(case, inp, watch) for _ in range(repeats)])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=32, help="images per batch (ResNet-50: images // 16)")
    ap.add_argument("--draws", type=int, default=10, help="perturbations per image (ResNet-50: 3)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-resnet50", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    load_builtin_components()

    print(f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, CPU\n")
    print(
        "| model | metric | images x explanations | Quantus s (explainer) | native s (explainer) | total speed-up "
        "| native overhead | bookkeeping ms: Quantus / native | bookkeeping speed-up |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for label, model, n, draws in models(args.images, args.draws, not args.no_resnet50):
        for case in cases(draws, model.spec.num_classes, with_mprt=model.spec.num_classes != 1000):
            real = Stopwatch(EXPLAINERS.get(case.explainer)())
            timed = measure(case, metric_input(model, n, real.inner), real, args.repeats)
            free = real if case.explainer == "random" else Stopwatch(ChannelMean())
            book = measure(case, metric_input(model, n, free.inner), free, args.repeats)
            native = timed[0]
            cells = [label, case.name, f"{n} x {repeats(case.native, model)}"]
            cells.append("n/a" if len(timed) == 1 else f"{timed[1][0]:.2f} ({timed[1][1]:.2f})")
            cells.append(f"{native[0]:.2f} ({native[1]:.2f})")
            cells.append("n/a" if len(timed) == 1 else f"{timed[1][0] / native[0]:.2f}x")
            cells.append(f"{native[0] / max(native[1], 1e-9):.3f}")
            own = [total - explain for total, explain in book]  # seconds outside the (free) explainer
            cells.append(
                " / ".join(f"{1e3 * t:.1f}" for t in reversed(own)) if len(own) == 2 else f"n/a / {1e3 * own[0]:.1f}"
            )
            cells.append(f"{own[1] / own[0]:.0f}x" if len(own) == 2 else "n/a")
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
