"""Time the native localisation and complexity metrics against their Quantus 0.6 counterparts.

These metrics are bookkeeping on the attribution and the mask (no model pass), so
the comparison is the metric call itself on identical inputs: random smooth signed
attributions and one rectangular object per image (no void pixels, which Quantus
would count as object). Quantus needs a model for its call; a small random CNN
serves (it is not run). Both sides run on one core by default (``--threads``):
Quantus' numpy code is single-threaded, and on a shared, oversubscribed machine
torch's spinning worker threads can make small ops hundreds of times slower.
Every cell is the median of ``--repeats`` calls (after one warm-up call of the
native metric); "Quantus core" times its evaluate_batch alone, on the input its
preprocessing would give it: most of a Quantus call is its input checks (e.g. a
Python set of every attribution value); "max abs diff" is the largest per-sample
difference between the two scores (NaN-aware).

    python benchmarks/bench_metrics_localisation.py [--sizes 32 224] [--batches 64 256] [--repeats 3] [--only auroc]

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import quantus
import torch

from bench.metrics.base import Metric, MetricInput
from bench.metrics.complexity import Entropy, Sparseness
from bench.metrics.localisation import (
    EnergyPointingGame,
    IoU,
    IoUSweep,
    PixelAUROC,
    PointingGame,
    RelevanceRankAccuracy,
)
from bench.models.base import prepare
from bench.models.small_cnn import build_small_cnn
from bench.types import Batch, LoadedModel, ModelSpec

if not hasattr(np, "trapz"):  # Quantus 0.6 still calls np.trapz (at call time), which numpy 2.4 removed
    np.trapz = np.trapezoid

QUIET = {"disable_warnings": True, "display_progressbar": False}
RAW = {"abs": False, "normalise": False, **QUIET}


def _unit_magnitude(a: torch.Tensor) -> torch.Tensor:
    """|a| / max |a| per sample: what Quantus' complexity metrics see after their abs and (per-sample) normalisation."""
    a = a.abs()
    return a / a.flatten(1).amax(1).view(-1, 1, 1, 1)


# name, native metric, Quantus counterpart (None: there is none), attribution transform for Quantus (the input
# its evaluate_batch sees after its own preprocessing, so that the "core" timing is comparable)
CASES: list[tuple[str, Metric, Callable[[], object] | None, Callable[[torch.Tensor], torch.Tensor]]] = [
    ("iou (fraction_of_max 0.5)", IoU(), None, lambda a: a),
    ("iou_sweep (19 thresholds)", IoUSweep(), None, lambda a: a),
    ("pointing_game", PointingGame(), lambda: quantus.PointingGame(**RAW), lambda a: a),
    ("pointing_game (tolerance 15)", PointingGame(PointingGame.Params(tolerance=15)), None, lambda a: a),
    (
        "energy_pointing_game",
        EnergyPointingGame(),
        lambda: quantus.RelevanceMassAccuracy(**RAW),
        lambda a: a.clamp(min=0),
    ),
    (
        "relevance_rank_accuracy",
        RelevanceRankAccuracy(),
        lambda: quantus.RelevanceRankAccuracy(**RAW),
        lambda a: a,
    ),
    ("pixel_auroc", PixelAUROC(), lambda: quantus.AUC(**RAW), lambda a: a),
    (
        "sparseness",
        Sparseness(),
        lambda: quantus.Sparseness(normalise_func_kwargs={"normalise_axes": [1, 2, 3]}, **QUIET),
        _unit_magnitude,
    ),
    ("entropy", Entropy(), lambda: quantus.Complexity(**QUIET), _unit_magnitude),
]


def make_inputs(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, smooth signed attributions and one random rectangle per image as the object mask."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    attr = torch.nn.functional.avg_pool2d(torch.randn(n, 1, size, size, generator=g), 5, 1, 2)
    mask = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    corners = torch.randint(0, size // 2, (n, 2), generator=g)
    sides = torch.randint(size // 8, size // 2, (n, 2), generator=g)
    for i in range(n):
        (top, left), (h, w) = corners[i].tolist(), sides[i].tolist()
        mask[i, :, top : top + h, left : left + w] = 1
    return x, attr, mask


def median_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall-clock seconds of ``repeats`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def time_case(inp: MetricInput, metric: Metric, counterpart: Callable[[], object] | None, transform, repeats: int):
    """Native seconds, Quantus seconds for the whole call and for its evaluate_batch alone (without
    its input checks and preprocessing), and the max abs difference of the scores (None without a
    counterpart)."""
    metric.score(inp)  # warm-up
    ours_s, ours = median_seconds(lambda: metric.score(inp), repeats)
    if counterpart is None:
        return ours_s, None, None, None
    x, target, mask = inp.batch.x.numpy(), inp.batch.target.numpy(), inp.batch.mask.numpy()
    q_attr = transform(inp.attributions).numpy()

    def call() -> object:
        return counterpart()(
            model=inp.model.module,
            x_batch=x,
            y_batch=target,
            a_batch=q_attr.copy(),  # some Quantus metrics modify it in place
            s_batch=mask,
            device="cpu",
            channel_first=True,
        )

    def core() -> object:
        return counterpart().evaluate_batch(x_batch=x, y_batch=target, a_batch=q_attr.copy(), s_batch=mask)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs_s, theirs = median_seconds(call, repeats)
        core_s, _ = median_seconds(core, repeats)
    diff = np.nanmax(np.abs(ours.values[""].double().numpy() - np.asarray(theirs, dtype=np.float64)))
    return ours_s, theirs_s, core_s, float(diff)


def run(sizes: list[int], batches: list[int], repeats: int, only: list[str]) -> str:
    torch.manual_seed(0)
    model: LoadedModel = prepare(build_small_cnn((8, 16), 10), ModelSpec(num_classes=10), torch.device("cpu"))
    rows = [
        "| metric | image | batch | native ms | Quantus ms | speed-up | Quantus core ms | max abs diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        for n in batches:
            x, attr, mask = make_inputs(n, size)
            target = torch.zeros(n, dtype=torch.long)
            batch = Batch(x=x, label=target, ids=[f"s{i}" for i in range(n)], mask=mask, target=target)
            inp = MetricInput(model=model, batch=batch, attributions=attr, seeds=list(range(n)))
            for name, metric, counterpart, transform in CASES:
                if only and not any(word in name for word in only):
                    continue
                ours_s, theirs_s, core_s, diff = time_case(inp, metric, counterpart, transform, repeats)
                cells = [name, f"{size}x{size}", str(n), f"{ours_s * 1e3:.1f}"]
                if theirs_s is None:
                    cells += ["—"] * 4
                else:
                    cells += [
                        f"{theirs_s * 1e3:.1f}",
                        f"{theirs_s / ours_s:.0f}x",
                        f"{core_s * 1e3:.1f}",
                        f"{diff:.1e}",
                    ]
                rows.append("| " + " | ".join(cells) + " |")
            print(f"done: {size}x{size}, batch {n}", flush=True, file=sys.stderr)
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=[], help="time only the metrics whose name contains one of these")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: Quantus' numpy code runs on one core too)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, quantus {quantus.__version__}, numpy {np.__version__}\n"
    )
    print(run(args.sizes, args.batches, args.repeats, args.only))


if __name__ == "__main__":
    main()
