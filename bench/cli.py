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

from bench import __version__
from bench.errors import RunInterrupted, XbenchError

if TYPE_CHECKING:
    from bench.fastpath import ThreadSetting

EXIT_OK, EXIT_CELL_ERRORS, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


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


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench.leaderboard import build_leaderboard

    run_dir = _run_dir(args.run_dir)
    build_leaderboard(run_dir, model_metrics=args.metric, policy=args.nan_policy)
    name = {"md": "leaderboard.md", "html": "leaderboard.html", "tex": "leaderboard.tex"}[args.format]
    print((run_dir / name).read_text(), end="")
    return EXIT_OK


def _parse_tolerances(items: list[str] | None) -> dict[str, float]:
    out = {}
    for item in items or []:
        metric, _, value = item.partition("=")
        try:
            out[metric] = float(value)
        except ValueError:
            raise XbenchError(
                f"--tolerance-for {item!r} is not METRIC=NUMBER", field="--tolerance-for", fix="e.g. deletion=0.02"
            ) from None
    return out


def _cmd_cache(args: argparse.Namespace) -> int:
    from bench.attribution_cache import AttributionCache
    from bench.models.base import cache_root

    cache = AttributionCache(cache_root() / "attributions")
    if args.action == "info":
        info = cache.info()
        print(
            f"attribution cache {info['root']}: {info['entries']} entries in {info['groups']} (model, explainer, "
            f"data) groups, {info['bytes'] / 2**20:.1f} MiB, oldest unused {info['oldest_days']} days"
        )
        return EXIT_OK
    if args.older_than is None and not args.all:
        raise XbenchError("prune needs --older-than DAYS or --all", field="cache prune", fix="e.g. --older-than 30")
    removed = cache.prune(args.older_than, everything=args.all)
    print(f"removed {removed} cached attribution(s)")
    return EXIT_OK


def _cmd_merge(args: argparse.Namespace) -> int:
    from bench.merge import merge_runs

    merged = merge_runs(Path(args.dest), [Path(p) for p in args.runs])
    print(f"merged {merged} cell(s) into {args.dest}")
    return _cmd_leaderboard(argparse.Namespace(run_dir=args.dest, metric=None, format="md", nan_policy=None))


def _run_dir(path: str) -> Path:
    """The one run directory ``path`` means (a suite folder with one run is that run; several are an error)."""
    from bench.store import resolve_run

    return resolve_run(path, log=lambda message: print(message, file=sys.stderr))


def _cmd_report(args: argparse.Namespace) -> int:
    from bench.leaderboard import build_leaderboard
    from bench.report import write_report

    run_dir = _run_dir(args.run_dir)
    build_leaderboard(run_dir)
    path = write_report(run_dir, args.output)
    print(f"report written to {path} (with its images beside it)")
    if args.screenshot:
        from bench.screenshot import check_page

        problems = check_page(path, path.with_name("report.png"))
        print(f"screenshot of the top: {path.with_name('report.png')}")
        if problems:
            print("the report renders with problems:\n  " + "\n  ".join(problems), file=sys.stderr)
            return EXIT_CELL_ERRORS
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    import shutil

    from bench.leaderboard import build_leaderboard
    from bench.store import read_run, write_results

    run_dir, dest = _run_dir(args.run_dir), Path(args.dest)
    build_leaderboard(run_dir)
    dest.mkdir(parents=True, exist_ok=True)
    write_results(read_run(run_dir), dest / "results.parquet")
    for name in (
        "leaderboard.md",
        "leaderboard.html",
        "leaderboard.tex",
        "summary.parquet",
        "models.parquet",
        "reliability.parquet",
        "manifest.json",
    ):
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, dest / name)
    print(f"exported results, summary and leaderboards of {run_dir} to {dest} (usable as a compare baseline)")
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    import json

    from bench.compare import compare, write_json
    from bench.store import read_manifest, read_run

    base_dir, new_dir = _run_dir(args.baseline), _run_dir(args.new)
    baseline, new = read_run(base_dir), read_run(new_dir)
    manifests = (_manifest_of(str(base_dir), read_manifest), _manifest_of(str(new_dir), read_manifest))
    settings = manifests[1].suite.get("regression", {}) if manifests[1] is not None else {}
    tolerance, per_metric = settings.get("tolerance", 0.0), dict(settings.get("tolerances", {}))
    if args.tolerance is not None:
        tolerance = args.tolerance
    per_metric.update(_parse_tolerances(args.tolerance_for))
    policy = args.nan_policy or (manifests[1].suite.get("nan_policy", "declared") if manifests[1] else "declared")
    result = compare(baseline, new, tolerance, per_metric, policy, manifests)
    print(result.markdown())
    if args.json:
        write_json(result, Path(args.json))
        print(f"machine-readable result: {args.json}")
    elif (new_dir / "manifest.json").is_file() and (new_dir / "cells").is_dir():
        from bench.store import RunStore

        dest = RunStore(new_dir).write_view("compare.json", json.dumps(result.to_json(), indent=2, default=str))
        print(f"machine-readable result: {dest}")
    if result.incomplete and not args.allow_missing:
        print(
            "some entries could not be compared (listed under 'Not compared'); rerun with --allow-missing to "
            "accept that",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    return EXIT_CELL_ERRORS if result.regressions else EXIT_OK


def _manifest_of(path: str, reader: Any) -> Any:
    """The manifest of a run directory or exported folder (None for a bare results file)."""
    folder = Path(path)
    return reader(folder) if folder.is_dir() else None


def _cmd_history(args: argparse.Namespace) -> int:
    from bench.history import history, write

    paths = [Path(p) for p in args.runs]
    result = history(
        paths, by=args.order_by, baseline=_run_dir(args.baseline) if args.baseline else None, metrics=args.metric
    )
    folder = Path(args.output) if args.output else (paths[0] if paths[0].is_dir() else paths[0].parent) / "history"
    written = write(result, folder)
    print((folder / "history.md").read_text())
    print(f"written: {', '.join(str(p) for p in written)}")
    regressed = result.latest_regressions
    if regressed:
        names = ", ".join(sorted({f"{d.explainer}/{d.metric}" for d in regressed}))
        print(f"the latest run ({result.runs[-1].label}) regressed: {names}", file=sys.stderr)
        return EXIT_CELL_ERRORS
    return EXIT_OK


def _threads_option(value: str) -> int | str:
    from bench.fastpath import parse_threads

    try:
        parsed = parse_threads(value)
    except ValueError:
        parsed = None
    if parsed is None:
        raise argparse.ArgumentTypeError(f"expected a number of threads (>= 1) or auto, got {value!r}")
    return parsed


def _add_cpu_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--threads",
        type=_threads_option,
        metavar="N|auto",
        help="torch CPU threads (overrides the suite's `threads`; auto: the cores other processes leave free)",
    )
    command.add_argument(
        "--allocator",
        choices=["tuned", "default"],
        default="tuned",
        help="tuned (default): raise glibc's malloc thresholds so large tensors reuse memory instead of "
        "page-faulting fresh maps on every forward pass; default: leave the C allocator alone",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xbench", description="Quantitative benchmark of image explainers.")
    parser.add_argument("--version", action="version", version=f"xbench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a suite and print its leaderboard")
    run.add_argument("suite", help="suite YAML file")
    run.add_argument("--output", help="run directory (overrides the suite's `output`)")
    run.add_argument("--run-id", help="name of this run (default: latest); runs/suite=<suite>/run=<id>")
    run.add_argument("--force", action="store_true", help="recompute cells that are already finished")
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    run.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="where cells run: this process (default) or Ray tasks (pip install 'xbench[ray]')",
    )
    run.add_argument("--address", help="Ray: address of an existing cluster (default: start a local one)")
    run.add_argument("--workers", type=int, help="Ray: CPUs of the local cluster it starts (default: all)")
    run.add_argument("--retries", type=int, default=2, help="Ray: retries of a task whose worker died (default 2)")
    run.add_argument("--shard", metavar="I/N", help="run only shard I of N of the cells (e.g. a SLURM array task)")
    run.add_argument("--no-cache", action="store_true", help="do not read or write the attribution cache")
    run.add_argument("--wait", action="store_true", help="if another run holds the run directory, wait for it")
    _add_cpu_options(run)
    run.set_defaults(func=_cmd_run)

    validate = sub.add_parser("validate", help="check a suite and print the grid it would run")
    validate.add_argument("suite")
    validate.add_argument("--strict", action="store_true", help="fail when data or weights are not on this machine")
    validate.add_argument(
        "--time",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="estimate each cell's time from a pass timing of its model on this machine (cached; "
        "models not trained yet are not timed)",
    )
    validate.set_defaults(func=_cmd_validate)

    cache = sub.add_parser("cache", help="the attribution cache: info, or prune old entries")
    cache.add_argument("action", choices=["info", "prune"])
    cache.add_argument("--older-than", type=float, metavar="DAYS", help="prune entries unused for DAYS days")
    cache.add_argument("--all", action="store_true", help="prune everything")
    cache.set_defaults(func=_cmd_cache)

    merge = sub.add_parser("merge", help="combine the run directories of shards (--shard i/n) into one")
    merge.add_argument("dest", help="run directory to write")
    merge.add_argument("runs", nargs="+", help="shard run directories")
    merge.set_defaults(func=_cmd_merge)

    rep = sub.add_parser("report", help="write an HTML report with plots (and PNGs) for a run directory")
    rep.add_argument("run_dir")
    rep.add_argument("--output", help="folder for report.html and its images (default: RUN_DIR/report)")
    rep.add_argument(
        "--screenshot",
        action="store_true",
        help="open the report in headless Chromium: save report.png and exit 1 on console errors or "
        "broken images (needs xbench[browser] and a Chromium)",
    )
    rep.set_defaults(func=_cmd_report)

    exp = sub.add_parser("export", help="copy a run's results, summary and leaderboards to a folder (a reference)")
    exp.add_argument("run_dir")
    exp.add_argument("dest", help="folder to write (e.g. reports/quickstart)")
    exp.set_defaults(func=_cmd_export)

    cmp = sub.add_parser("compare", help="compare two runs; exit 1 when anything regressed (for CI)")
    cmp.add_argument("baseline", help="baseline run directory, exported folder (reports/...) or results Parquet file")
    cmp.add_argument("new", help="new run directory or results Parquet file")
    cmp.add_argument("--tolerance", type=float, help="smallest |difference| that counts (default: the suite's)")
    cmp.add_argument("--tolerance-for", action="append", metavar="METRIC=X", help="per-metric tolerance (repeatable)")
    cmp.add_argument("--json", help="where to write the machine-readable result (default: NEW/compare.json)")
    cmp.add_argument(
        "--allow-missing",
        action="store_true",
        help="exit 0/1 even when some entries exist on one side only (default: exit 2)",
    )
    cmp.add_argument("--nan-policy", choices=["declared", "exclude"], help="degenerate attributions (default: suite's)")
    cmp.set_defaults(func=_cmd_compare)

    hist = sub.add_parser("history", help="follow every metric over a series of runs; exit 1 when the latest regressed")
    hist.add_argument("runs", nargs="+", help="run directories, or folders holding them (e.g. runs/suite=NAME)")
    hist.add_argument(
        "--order-by",
        default="time",
        help="time (default), git (commit time of each run's revision), package:NAME, or a dotted manifest field",
    )
    hist.add_argument("--baseline", help="a pinned run (directory or exported folder) the latest is also compared to")
    hist.add_argument("--metric", action="append", metavar="ID", help="only these metric ids (repeatable)")
    hist.add_argument("--output", help="folder for history.md/.parquet/.png (default: FIRST_PATH/history)")
    hist.set_defaults(func=_cmd_history)

    train = sub.add_parser("train", help="train or fine-tune the suite's models that train (cached; resumable)")
    train.add_argument("suite")
    train.add_argument("--model", action="append", help="only this model id (repeatable)")
    train.add_argument("--dataset", action="append", help="only this dataset id (repeatable)")
    _add_cpu_options(train)
    train.set_defaults(func=_cmd_train)

    lst = sub.add_parser("list", help="list registered datasets, models, explainers and metrics")
    lst.add_argument("kind", nargs="?", choices=["datasets", "models", "explainers", "metrics"])
    lst.add_argument("--format", choices=["text", "markdown"], default="text", help="markdown: docs/components.md")
    lst.set_defaults(func=_cmd_list)

    board = sub.add_parser("leaderboard", help="the leaderboards of a run directory (also written into it)")
    board.add_argument("run_dir")
    board.add_argument("--format", choices=["md", "html", "tex"], default="md", help="what to print")
    board.add_argument(
        "--metric",
        action="append",
        metavar="ID",
        help="metric id(s) that compare models (repeatable; default: every ranked localisation metric)",
    )
    board.add_argument(
        "--nan-policy",
        choices=["declared", "exclude"],
        help="degenerate attributions: their declared value, or left out (default: the suite's)",
    )
    board.set_defaults(func=_cmd_leaderboard)
    return parser


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
