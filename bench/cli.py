"""The `xbench` command line.

Exit codes: 0 success; 1 the run finished but some cells recorded errors;
2 bad input (suite, data, output) with a one-paragraph explanation; 3 an
internal error (a bug: rerun with --debug for the traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tabulate import tabulate

from bench import __version__
from bench.errors import XbenchError

EXIT_OK, EXIT_CELL_ERRORS, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


def _cmd_run(args: argparse.Namespace) -> int:
    from bench.config import load_suite
    from bench.leaderboard import build_leaderboard
    from bench.runner import Runner, RunOptions

    suite = load_suite(args.suite)
    options = RunOptions(output=Path(args.output) if args.output else None, force=args.force, progress=args.progress)
    runner = Runner(suite, options)
    result = runner.run()
    _, text = build_leaderboard(result.run_dir)
    print(text)
    print(
        f"{len(result.computed)} cell(s) computed, {len(result.reused)} reused; results in {result.run_dir}/ "
        f"(leaderboard.md, cells/*.parquet)"
    )
    unreadable = sum(len(v) for v in runner.unreadable.values())
    if unreadable:
        print(f"{unreadable} unreadable sample(s) were skipped (listed in {result.run_dir}/manifest.json)")
    if result.failed:
        print(
            f"{len(result.failed)} cell(s) recorded errors (status='error' rows); rerun to retry them: "
            + ", ".join(sorted(result.failed)),
            file=sys.stderr,
        )
        return EXIT_CELL_ERRORS
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    from bench.config import load_suite
    from bench.plan import build_plan, estimate
    from bench.preflight import preflight

    suite = load_suite(args.suite)
    preflight(suite)
    cells = build_plan(suite)
    estimates = estimate(suite, cells)
    rows = [
        [
            e.cell.dataset,
            e.cell.model,
            e.cell.explainer,
            ", ".join(e.cell.metrics),
            e.images,
            f"{e.passes.forward:,.0f}",
            f"{e.passes.backward:,.0f}",
        ]
        for e in estimates
    ]
    print(f"suite {suite.name!r} ({suite.path}) is valid; output: {suite.output_dir}")
    print(
        tabulate(
            rows,
            headers=["dataset", "model", "explainer", "metrics", "images", "forward", "backward"],
            tablefmt="github",
        )
    )
    fwd = sum(e.passes.forward for e in estimates)
    bwd = sum(e.passes.backward for e in estimates)
    images = sum(e.images for e in estimates)
    print(f"\n{len(cells)} cells, {images} explained images, about {fwd:,.0f} forward and {bwd:,.0f} backward passes")
    notes: dict[str, set[str]] = {}
    for cell in cells:
        for metric, reason in cell.dropped_metrics.items():
            notes.setdefault(reason, set()).add(metric)
    for reason, metrics in notes.items():
        print(f"note: {', '.join(sorted(metrics))} skipped where {reason}")
    return EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    from bench.config import load_suite
    from bench.environment import resolve_device
    from bench.models.base import ModelContext
    from bench.preflight import preflight

    suite = load_suite(args.suite)
    preflight(suite)
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
    from bench.registry import REGISTRIES, load_builtin_components

    load_builtin_components()
    kinds = [args.kind] if args.kind else list(REGISTRIES)
    for kind in kinds:
        registry = REGISTRIES[kind]
        print(f"{kind}:")
        for name in registry.names():
            cls = registry.get(name)
            print(f"  {name:<24} {cls.describe()}")
            for pname, ptype, default, desc in cls.param_summary():
                print(f"      {pname}: {ptype} = {default!r}  {desc}")
        print()
    return EXIT_OK


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench.leaderboard import build_leaderboard

    _, text = build_leaderboard(Path(args.run_dir))
    print(text)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xbench", description="Quantitative benchmark of image explainers.")
    parser.add_argument("--version", action="version", version=f"xbench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a suite and print its leaderboard")
    run.add_argument("suite", help="suite YAML file")
    run.add_argument("--output", help="run directory (overrides the suite's `output`)")
    run.add_argument("--force", action="store_true", help="recompute cells that are already finished")
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    run.set_defaults(func=_cmd_run)

    validate = sub.add_parser("validate", help="check a suite and print the grid it would run")
    validate.add_argument("suite")
    validate.set_defaults(func=_cmd_validate)

    train = sub.add_parser("train", help="train or fine-tune the suite's models that train (cached; resumable)")
    train.add_argument("suite")
    train.add_argument("--model", action="append", help="only this model id (repeatable)")
    train.add_argument("--dataset", action="append", help="only this dataset id (repeatable)")
    train.set_defaults(func=_cmd_train)

    lst = sub.add_parser("list", help="list registered datasets, models, explainers and metrics")
    lst.add_argument("kind", nargs="?", choices=["datasets", "models", "explainers", "metrics"])
    lst.set_defaults(func=_cmd_list)

    board = sub.add_parser("leaderboard", help="summarise a run directory")
    board.add_argument("run_dir")
    board.set_defaults(func=_cmd_leaderboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
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
    except Exception as exc:
        if args.debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
