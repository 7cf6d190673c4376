"""Checks that touch the disk before any work: data roots, model/data pairings, output.

Errors raised by components name only their own field (``root``); here they
are re-pointed at the suite file's line and the full field path
(``datasets[0].params.root``) so that the message says where to fix it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from bench.config import Suite
from bench.errors import DataError, OutputError, XbenchError


def _relocate(exc: XbenchError, suite: Suite, section: str, key: str) -> XbenchError:
    fields = (exc.field,) if exc.field and exc.field not in ("models", "output") else ()
    exc.where, exc.field = suite.locate(section, key, *fields)
    return exc


def check_output(run_dir: Path, suite: Suite, from_cli: bool, keep: bool) -> None:
    """Prove ``run_dir`` can be created and written (creating it; removed again unless ``keep``)."""
    created: list[Path] = []
    probe = run_dir / f".write-probe-{os.getpid()}"
    try:
        for folder in reversed([run_dir, *run_dir.parents]):
            if not folder.exists():
                folder.mkdir()
                created.append(folder)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        where, field = ("command line", "--output") if from_cli else suite.locate("output")
        raise OutputError(
            f"cannot write to the output directory {str(run_dir)!r}: {exc.strerror or exc}",
            where=where,
            field=field,
            fix="choose a writable folder with `output:` in the suite or `--output DIR`",
        ) from exc
    finally:
        if not keep:
            for folder in reversed(created):
                with contextlib.suppress(OSError):
                    folder.rmdir()


def preflight(
    suite: Suite,
    run_dir: Path | None = None,
    keep_output: bool = False,
    from_cli: bool = False,
    missing: list[str] | None = None,
) -> Path:
    """Run every cheap on-disk check of ``suite``; returns the run directory.

    With a ``missing`` list, data and weights that are not on this machine
    (DataError) are appended to it instead of raised: `xbench validate` reports
    them and still validates the suite (configuration errors always raise).
    """

    def fail(exc: XbenchError, section: str, key: str) -> None:
        error = _relocate(exc, suite, section, key)
        if missing is not None and isinstance(exc, DataError):
            missing.append(error.render())
            return
        raise error from None

    for key, dataset in suite.datasets.items():
        try:
            dataset.check()
        except XbenchError as exc:
            fail(exc, "datasets", key)
    for model_key, model in suite.models.items():
        for data_key, dataset in suite.datasets.items():
            if any(
                rule.matches(data_key, model_key, "") and rule.explainer in (None, "*") for rule in suite.config.exclude
            ):
                continue
            try:
                model.check(dataset)
            except XbenchError as exc:
                fail(exc, "models", model_key)
    run_dir = Path(run_dir) if run_dir else suite.output_dir
    check_output(run_dir, suite, from_cli=from_cli, keep=keep_output)
    return run_dir
