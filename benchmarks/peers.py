"""xbench against its peers (Quantus, pytorch-grad-cam, captum, zennit), side by side in one process.

For every metric and explainer that has a counterpart in one of those libraries
(``benchmarks/peer_cases.py`` lists them), both run on identical inputs (same
model, images, attributions, targets, batch size) in this one process, with the
same thread and allocator settings, after a warm-up call of each. Repetitions
are interleaved (xbench, the peer and the limit take turns, the order rotating
every repetition), so that a change in the machine's load hits all three alike;
every figure is a median of ``--repeats`` (at least 5).

The *limit* is what the model passes that xbench made (counted with a hook in
its warm-up call) take on their own, at the model's best batch size (chosen by a
sweep at the start; whole batches of it, the time scaled to the count), timed in
the same repetitions: a ratio of 1.0 means the method adds nothing to its passes. Grad-CAM's limit is a forward and a
backward to the input; its backward stops at the layer, so it can beat 1.0.

    python benchmarks/peers.py [--quick] [--json FILE] [--results benchmarks/RESULTS.md] [--only NAME]

``--quick`` (about 6 minutes on 2 cores) uses small batches and fewer methods;
``--json`` writes one record per comparison (``name``, ``xbench_s``, ``peer``,
``peer_s``, ``limit_s``, ``ratio`` = xbench / peer, and more); ``--results``
rewrites the peers section of RESULTS.md from this run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bench import fastpath
from bench.cost import PassCounter
from bench.types import LoadedModel

if TYPE_CHECKING:
    from peer_cases import Case

BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"


@dataclass
class Record:
    name: str
    model: str
    images: int
    xbench_s: float  # seconds per image, median
    peer: str | None
    peer_s: float | None
    limit_s: float | None  # the model passes xbench made, at the best batch size, per image
    ratio: float | None  # xbench_s / peer_s (below 1: xbench is faster)
    limit_ratio: float | None  # xbench_s / limit_s
    forward_images: float  # per image
    backward_images: float
    note: str = ""
    load: list[float] = field(default_factory=list)  # 1-minute load average before and after


# ----------------------------------------------------------------------------- the model-pass limit


def _fwd(model: LoadedModel, x: torch.Tensor) -> None:
    with torch.no_grad():
        model(x)


def _fwd_bwd(model: LoadedModel, x: torch.Tensor) -> None:
    leaf = x.detach().requires_grad_(True)
    out = model(leaf)
    torch.autograd.grad(out[:, 0].sum(), leaf)


class PassLimit:
    """The fastest way a model runs F forwards and B forward+backward passes: per kind, the best batch
    size from a sweep (median of 3 per size), then F and B images in chunks of it on reused images."""

    def __init__(self, model: LoadedModel, shape: tuple[int, ...], sizes: tuple[int, ...], log: Callable) -> None:
        self.model, self.shape = model, shape
        self.best = {kind: self._sweep(fn, sizes) for kind, fn in (("forward", _fwd), ("backward", _fwd_bwd))}
        log(f"  best batch: forward {self.best['forward'][0]} ({self.best['forward'][1] * 1e3:.2f} ms/image), "
            f"forward+backward {self.best['backward'][0]} ({self.best['backward'][1] * 1e3:.2f} ms/image)")  # fmt: skip

    def _sweep(self, fn: Callable, sizes: tuple[int, ...]) -> tuple[int, float]:
        best = (sizes[0], float("inf"))
        for size in sizes:
            x = torch.rand(size, *self.shape)
            fn(self.model, x)
            per_image = statistics.median(_seconds(lambda fn=fn, x=x: fn(self.model, x)) for _ in range(3)) / size
            best = min(best, (size, per_image), key=lambda b: b[1])
        return best

    def runner(self, forwards: int, backwards: int) -> Callable[[], float] | None:
        """A call that returns the seconds these passes take at the best batch sizes; None when there are none.

        Each kind runs whole batches of its best size, about as many images as counted (at least one
        batch), and its time is scaled to the count: 8 images of ResNet-50 at a best batch of 16 cost
        half a batch of 16, not one (slower) batch of 8.
        """
        if forwards == 0 and backwards == 0:
            return None
        plan = []
        for kind, count, fn in (("forward", forwards, _fwd), ("backward", backwards, _fwd_bwd)):
            if count:
                size = self.best[kind][0]
                batches = max(1, round(count / size))
                plan.append((fn, torch.rand(size, *self.shape), batches, count / (batches * size)))

        def run() -> float:
            total = 0.0
            for fn, x, batches, scale in plan:
                start = time.perf_counter()
                for _ in range(batches):
                    fn(self.model, x)
                total += (time.perf_counter() - start) * scale
            return total

        return run


# ----------------------------------------------------------------------------- timing


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _load() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def measure(case: Case, limits: dict[int, PassLimit], repeats: int) -> Record:
    """Warm both sides up (counting xbench's passes), then time xbench, the peer and the limit in turns."""
    load = [_load()]
    if case.net is not None:
        with PassCounter(case.net.module) as counter:
            case.xbench()
        forwards, backwards = counter.forward_images, counter.backward_images
    else:
        case.xbench()
        forwards = backwards = 0
    if case.peer_fn is not None:
        case.peer_fn()
    limit = limits[id(case.net)].runner(forwards, backwards) if case.net is not None else None
    if limit is not None:
        limit()
    sides = [("xbench", case.xbench), ("peer", case.peer_fn), ("limit", limit)]
    sides = [(name, fn) for name, fn in sides if fn is not None]
    times: dict[str, list[float]] = {name: [] for name, _ in sides}
    for rep in range(repeats):
        for name, fn in sides[rep % len(sides) :] + sides[: rep % len(sides)]:
            times[name].append(fn() if name == "limit" else _seconds(fn))  # the limit times itself
    load.append(_load())
    per_image = {name: statistics.median(t) / case.images for name, t in times.items()}
    x, peer, lim = per_image["xbench"], per_image.get("peer"), per_image.get("limit")
    return Record(
        name=case.name,
        model=case.model,
        images=case.images,
        xbench_s=x,
        peer=case.peer,
        peer_s=peer,
        limit_s=lim,
        ratio=x / peer if peer else None,
        limit_ratio=x / lim if lim else None,
        forward_images=forwards / case.images,
        backward_images=backwards / case.images,
        note=case.note,
        load=load,
    )


# ----------------------------------------------------------------------------- reporting


def hardware() -> dict[str, Any]:
    """What the numbers came from: CPU model, cores, threads, allocator, versions, date, load."""
    cpu = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = re.search(r"Model name:\s*(.+)", lscpu).group(1).strip()  # type: ignore[union-attr]
    except (OSError, subprocess.CalledProcessError, AttributeError):
        pass
    applied = fastpath.applied()
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "cores": fastpath.usable_cores(),
        "threads": torch.get_num_threads(),
        "allocator": applied.allocator if applied else "default",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": "cpu",
    }


def _s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if value >= 1e-3 else f"{value:.2e}"


def _r(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _sharing(load: float, threads: int) -> str:
    """Whether the load average says other work shared the machine (the benchmark itself accounts for its threads)."""
    return "other work shared the machine" if load > threads + 0.5 else "no other job ran"


def markdown(records: list[Record], meta: dict[str, Any], command: str) -> str:
    """The RESULTS.md section: the conditions, then one table row per comparison."""
    loads = [v for r in records for v in r.load]
    head = (
        f"`{command}` on {meta['date']}: {meta['cpu']}, {meta['cores']} cores, {meta['threads']} torch thread(s), "
        f"allocator {meta['allocator']}, Python {meta['python']}, torch {meta['torch']}, CPU only; 1-minute load "
        f"average {min(loads):.1f} to {max(loads):.1f} during the run ({_sharing(max(loads), meta['threads'])}). "
        f"Seconds per image, medians of {meta['repeats']} interleaved repetitions after a warm-up; ratio = xbench / "
        "peer (below 1: xbench is faster); limit = the model passes xbench made, at the best batch size, "
        "timed in the same repetitions."
    )
    rows = [
        "| model | what | images per call | xbench s/img | peer | peer s/img | xbench / peer | passes per image "
        "(fwd / bwd) | limit s/img | xbench / limit |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        passes = f"{r.forward_images:g} / {r.backward_images:g}"
        rows.append(
            f"| {r.model} | {r.name} | {r.images} | {_s(r.xbench_s)} | {r.peer or '-'} | {_s(r.peer_s)} "
            f"| {_r(r.ratio)} | {passes} | {_s(r.limit_s) if r.forward_images or r.backward_images else 'model-free'} "
            f"| {_r(r.limit_ratio)} |"
        )
    notes = sorted({f"- {r.name}: {r.note}" for r in records if r.note})
    return "\n".join([head, "", *rows, *(["", *notes] if notes else [])])


def update_results(path: Path, section: str) -> None:
    """Replace the text between the peers markers of ``path`` with ``section``."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} section to replace")
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    path.write_text(f"{before}{BEGIN}\n{section}\n{END}{after}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches, fewer methods: about 6 minutes on 2 cores")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per side (median; at least 5)")
    parser.add_argument("--threads", default="auto", help="torch threads: a number or auto (as xbench run)")
    parser.add_argument("--allocator", choices=["tuned", "default"], default="tuned", help="as xbench run")
    parser.add_argument("--only", action="append", help="run only comparisons whose name contains this (repeatable)")
    parser.add_argument("--json", type=Path, help="write the records (and the conditions) to this file")
    parser.add_argument("--results", type=Path, help="rewrite the peers section of this RESULTS.md")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")
    fastpath.configure(fastpath.parse_threads(args.threads), args.allocator)
    warnings.filterwarnings("ignore")
    from peer_cases import build_cases  # here: it imports Quantus, pytorch-grad-cam, captum and zennit

    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    log(f"{fastpath.applied().describe()}; load {_load()}")  # type: ignore[union-attr]
    start = time.perf_counter()
    records, limits = [], {}
    for setup, cases in build_cases(args.quick, log):
        cases = [c for c in cases if not args.only or any(o in c.name for o in args.only)]
        if not cases:
            continue
        log(f"{setup.label}:")
        if setup.model is not None:
            limits[id(setup.model)] = PassLimit(setup.model, tuple(setup.x.shape[1:]), setup.batch_sizes, log)
        for case in cases:
            record = measure(case, limits, args.repeats)
            records.append(record)
            log(f"  {case.name}: xbench {_s(record.xbench_s)} s/img, {case.peer or 'no peer'} {_s(record.peer_s)}, "
                f"limit {_s(record.limit_s)} (load {record.load[-1]})")  # fmt: skip
    meta = {**hardware(), "repeats": args.repeats, "quick": args.quick, "seconds": round(time.perf_counter() - start)}
    command = "python benchmarks/peers.py" + (" --quick" if args.quick else "")
    section = markdown(records, meta, command)
    print(section)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "records": [asdict(r) for r in records]}, indent=1) + "\n")
    if args.results:
        update_results(args.results, section)
    log(f"{len(records)} comparisons in {meta['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
