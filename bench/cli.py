"""The `xbench` command line.

Exit codes: 0 success; 1 the run finished but some cells recorded errors;
2 bad input (suite, data, output) with a one-paragraph explanation; 3 an
internal error (a bug: rerun with --debug for the traceback).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from bench.errors import EXIT_CELL_ERRORS, EXIT_INTERNAL, EXIT_OK, RunInterrupted, XbenchError

if TYPE_CHECKING:
    from bench.fastpath import ThreadSetting


def _fast_path(args: argparse.Namespace, suite_threads: ThreadSetting) -> None:
    """Threads and allocator for this process (``bench.fastpath``), exported for worker processes."""
    import os

    from bench import fastpath

    threads: ThreadSetting = args.threads if args.threads is not None else suite_threads
    applied = fastpath.configure(threads, args.allocator)
    os.environ.update(fastpath.environment(threads, args.allocator))  # Ray passes XBENCH_* to its workers
    print(f"cpu: {applied.describe()}", file=sys.stderr)


def _cmd_run(args: argparse.Namespace) -> int:
    from bench.config import load_suite
    from bench.leaderboard import build_leaderboard
    from bench.runner import Runner, RunOptions, parse_shard

    suite = load_suite(args.suite)
    _fast_path(args, suite.config.threads)
    options = RunOptions(
        output=Path(args.output) if args.output else None,
        run_id=args.run_id,
        force=args.force,
        progress=args.progress,
        executor=args.executor,
        address=args.address,
        workers=args.workers,
        retries=args.retries,
        shard=parse_shard(args.shard) if args.shard else None,
        cache_attributions=not args.no_cache,
        wait=args.wait,
    )
    runner = Runner(suite, options)
    result = runner.run()
    _, text = build_leaderboard(result.run_dir)
    print(text)
    print(
        f"{len(result.computed)} cell(s) computed, {len(result.reused)} reused; results in {result.run_dir}/ "
        f"(the full leaderboard with intervals, paired differences and reliability: leaderboard.md; "
        f"rows: cells/*.parquet)"
    )
    unreadable = sum(len(v) for v in runner.unreadable.values())
    if unreadable:
        print(f"{unreadable} unreadable sample(s) were skipped (listed in {result.run_dir}/manifest.json)")
    if result.failed or result.unfinished:
        print(
            f"{len(result.failed) + len(result.unfinished)} cell(s) recorded errors or are unfinished; rerun to retry "
            "them: " + ", ".join(sorted([*result.failed, *result.unfinished])),
            file=sys.stderr,
        )
        return EXIT_CELL_ERRORS
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    from bench.config import load_suite
    from bench.plan import build_plan, estimate
    from bench.preflight import preflight

    suite = load_suite(args.suite)
    missing: list[str] = []
    preflight(suite, missing=None if args.strict else missing)
    cells = build_plan(suite)
    estimates = estimate(suite, cells)
    seconds = _estimated_seconds(suite, estimates, missing) if args.time else {}
    rows = [
        [
            e.cell.dataset,
            e.cell.model,
            e.cell.explainer,
            ", ".join(e.cell.metrics),
            e.images,
            f"{e.passes.forward:,.0f}",
            f"{e.passes.backward:,.0f}",
            _duration(seconds.get(e.cell.cell_id)),
        ]
        for e in estimates
    ]
    print(f"suite {suite.name!r} ({suite.path}) is valid; output: {suite.output_dir}")
    headers = ["dataset", "model", "explainer", "metrics", "images", "forward", "backward", "time (est.)"]
    print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
    fwd = sum(e.passes.forward for e in estimates)
    bwd = sum(e.passes.backward for e in estimates)
    images = sum(e.images for e in estimates)
    print(f"\n{len(cells)} cells, {images} explained images, about {fwd:,.0f} forward and {bwd:,.0f} backward passes")
    if seconds:
        total = sum(seconds.values())
        top = sorted(seconds.items(), key=lambda kv: -kv[1])[:3]
        share = sum(v for _, v in top) / total if total else 0.0
        labels = {e.cell.cell_id: e.cell.label for e in estimates}
        print(
            f"estimated time of the model passes on this machine: {_duration(total)} "
            f"({len(seconds)} of {len(cells)} cells timed); the slowest {len(top)} take {share:.0%}: "
            + ", ".join(f"{labels[k]} {_duration(v)}" for k, v in top)
        )
    for note in sorted({e.shape_note for e in estimates if e.shape_note}):
        print(f"note: passes {note}")
    notes: dict[str, set[str]] = {}
    for cell in cells:
        for metric, reason in cell.dropped_metrics.items():
            notes.setdefault(reason, set()).add(metric)
    for reason, metrics in notes.items():
        print(f"note: {', '.join(sorted(metrics))} skipped where {reason}")
    for problem in missing:
        print(f"not available on this machine (xbench run would stop here): {problem}")
    return EXIT_OK


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _estimated_seconds(suite: Any, estimates: list[Any], missing: list[str]) -> dict[str, float]:
    """Cell id -> estimated seconds of its model passes, from a per-model pass timing on this machine
    (``bench.calibration``: cached, or measured once on random images). Models that are missing or not
    trained yet are not timed."""
    from bench.calibration import pass_timing
    from bench.environment import resolve_device

    device = resolve_device(suite.config.device)
    timings: dict[tuple[str, str], Any] = {}
    out = {}
    for e in estimates:
        key = (e.cell.dataset, e.cell.model)
        if key not in timings:
            source, dataset = suite.models[e.cell.model], suite.datasets[e.cell.dataset]
            timings[key] = None if missing else pass_timing(source, dataset, e.image_shape, device)
        if timings[key] is not None:
            out[e.cell.cell_id] = timings[key].seconds(e.passes.forward, e.passes.backward)
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    from bench.config import load_suite
    from bench.environment import resolve_device
    from bench.models.base import ModelContext
    from bench.preflight import preflight

    suite = load_suite(args.suite)
    preflight(suite)
    _fast_path(args, suite.config.threads)
    device = resolve_device(suite.config.device)
    rows = []
    for dk, dataset in suite.datasets.items():
        if args.dataset and dk not in args.dataset:
            continue
        for mk, source in suite.models.items():
            if (args.model and mk not in args.model) or not source.trains():
                continue
            if any(rule.matches(dk, mk, "") and rule.explainer in (None, "*") for rule in suite.config.exclude):
                continue
            model = source.load(ModelContext(dataset=dataset, device=device))
            info = model.info.get("finetuned", model.info)
            rows.append(
                [
                    dk,
                    mk,
                    "reused" if info.get("cached") else "trained",
                    info.get("train_images"),
                    info.get("test_accuracy"),
                    info.get("train_seconds"),
                    info.get("cache_dir"),
                ]
            )
    if not rows:
        print("no model of this suite trains (give a model a `train:` block, or use small_cnn / vgg13_cifar)")
        return EXIT_OK
    headers = ["dataset", "model", "status", "train images", "test accuracy", "train seconds", "cache"]
    print(tabulate(rows, headers=headers, tablefmt="github"))
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    from bench import catalog

    print(catalog.markdown() if args.format == "markdown" else catalog.text([args.kind] if args.kind else None), end="")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The full parser, every sub-command bound to its handler."""
    from bench import cli_results as results
    from bench.cli_parser import build_parser as build

    return build(
        {
            "run": _cmd_run,
            "validate": _cmd_validate,
            "train": _cmd_train,
            "list": _cmd_list,
            "leaderboard": results.cmd_leaderboard,
            "cache": results.cmd_cache,
            "merge": results.cmd_merge,
            "report": results.cmd_report,
            "export": results.cmd_export,
            "compare": results.cmd_compare,
            "history": results.cmd_history,
        }
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except XbenchError as exc:
        if args.debug:
            raise
        print(f"error: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `xbench list | head`: the reader left; not an error
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted; finished cells are saved and a rerun resumes from them", file=sys.stderr)
        return 130
    except RunInterrupted as exc:
        print(
            f"stopped by {signal.Signals(exc.signum).name}: finished cells and batches are saved in {exc.run_dir}; "
            f"rerun the same command to resume",
            file=sys.stderr,
        )
        return 128 + exc.signum
    except Exception as exc:
        if args.debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
