"""The `xbench` argument parser: one sub-command per job, each bound to its handler (``bench.cli``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import TypeAlias

from bench import __version__

Handlers = Mapping[str, Callable[[argparse.Namespace], int]]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


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


def build_parser(handlers: Handlers) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xbench", description="Quantitative benchmark of image explainers.")
    parser.add_argument("--version", action="version", version=f"xbench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_run, _add_validate, _add_store_commands, _add_comparisons, _add_train_list_leaderboard):
        add(sub, handlers)
    return parser


def _add_run(sub: Subparsers, handlers: Handlers) -> None:
    """`xbench run`: the suite, where results go, executors, shards, cache and CPU settings."""
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
    run.set_defaults(func=handlers["run"])


def _add_validate(sub: Subparsers, handlers: Handlers) -> None:
    """`xbench validate`: check a suite and estimate its cells."""
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
    validate.set_defaults(func=handlers["validate"])


def _add_store_commands(sub: Subparsers, handlers: Handlers) -> None:
    """`cache`, `merge`, `report` and `export`: what is kept on disk."""
    cache = sub.add_parser("cache", help="the attribution cache: info, or prune old entries")
    cache.add_argument("action", choices=["info", "prune"])
    cache.add_argument("--older-than", type=float, metavar="DAYS", help="prune entries unused for DAYS days")
    cache.add_argument("--all", action="store_true", help="prune everything")
    cache.set_defaults(func=handlers["cache"])

    merge = sub.add_parser("merge", help="combine the run directories of shards (--shard i/n) into one")
    merge.add_argument("dest", help="run directory to write")
    merge.add_argument("runs", nargs="+", help="shard run directories")
    merge.set_defaults(func=handlers["merge"])

    rep = sub.add_parser("report", help="write an HTML report with plots (and PNGs) for a run directory")
    rep.add_argument("run_dir")
    rep.add_argument("--output", help="folder for report.html and its images (default: RUN_DIR/report)")
    rep.add_argument(
        "--screenshot",
        action="store_true",
        help="open the report in headless Chromium: save report.png and exit 1 on console errors or "
        "broken images (needs xbench[browser] and a Chromium)",
    )
    rep.set_defaults(func=handlers["report"])

    exp = sub.add_parser("export", help="copy a run's results, summary and leaderboards to a folder (a reference)")
    exp.add_argument("run_dir")
    exp.add_argument("dest", help="folder to write (e.g. reports/quickstart)")
    exp.set_defaults(func=handlers["export"])


def _add_comparisons(sub: Subparsers, handlers: Handlers) -> None:
    """`compare` (two runs) and `history` (a series of runs): regression tracking."""
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
    cmp.set_defaults(func=handlers["compare"])

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
    hist.set_defaults(func=handlers["history"])


def _add_train_list_leaderboard(sub: Subparsers, handlers: Handlers) -> None:
    """`train`, `list` and `leaderboard`."""
    train = sub.add_parser("train", help="train or fine-tune the suite's models that train (cached; resumable)")
    train.add_argument("suite")
    train.add_argument("--model", action="append", help="only this model id (repeatable)")
    train.add_argument("--dataset", action="append", help="only this dataset id (repeatable)")
    _add_cpu_options(train)
    train.set_defaults(func=handlers["train"])

    lst = sub.add_parser("list", help="list registered datasets, models, explainers and metrics")
    lst.add_argument("kind", nargs="?", choices=["datasets", "models", "explainers", "metrics"])
    lst.add_argument("--format", choices=["text", "markdown"], default="text", help="markdown: docs/components.md")
    lst.set_defaults(func=handlers["list"])

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
    board.set_defaults(func=handlers["leaderboard"])
