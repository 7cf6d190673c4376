"""The `xbench` commands that read finished runs: leaderboard, report, export, compare, history, merge, cache.

Each takes the parsed arguments and returns the command's exit code (``bench.errors``: 0 fine, 1 a
regression or a broken report, 2 bad input); ``bench.cli`` dispatches to them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.errors import EXIT_BAD_INPUT, EXIT_CELL_ERRORS, EXIT_OK, XbenchError


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench.leaderboard import build_leaderboard

    run_dir = run_dir_of(args.run_dir)
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


def cmd_cache(args: argparse.Namespace) -> int:
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


def cmd_merge(args: argparse.Namespace) -> int:
    from bench.merge import merge_runs

    merged = merge_runs(Path(args.dest), [Path(p) for p in args.runs])
    print(f"merged {merged} cell(s) into {args.dest}")
    return cmd_leaderboard(argparse.Namespace(run_dir=args.dest, metric=None, format="md", nan_policy=None))


def run_dir_of(path: str) -> Path:
    """The one run directory ``path`` means (a suite folder with one run is that run; several are an error)."""
    from bench.store import resolve_run

    return resolve_run(path, log=lambda message: print(message, file=sys.stderr))


def cmd_report(args: argparse.Namespace) -> int:
    from bench.leaderboard import build_leaderboard
    from bench.report import write_report

    run_dir = run_dir_of(args.run_dir)
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


def cmd_export(args: argparse.Namespace) -> int:
    import shutil

    from bench.leaderboard import build_leaderboard
    from bench.store import read_run, write_results

    run_dir, dest = run_dir_of(args.run_dir), Path(args.dest)
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


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from bench.compare import compare, write_json
    from bench.store import read_manifest, read_run

    base_dir, new_dir = run_dir_of(args.baseline), run_dir_of(args.new)
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


def cmd_history(args: argparse.Namespace) -> int:
    from bench.history import history, write

    paths = [Path(p) for p in args.runs]
    result = history(
        paths, by=args.order_by, baseline=run_dir_of(args.baseline) if args.baseline else None, metrics=args.metric
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
