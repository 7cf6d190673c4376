"""Faults proven, not assumed: kill, stop, corrupt, fill and lock the run directory, then check
that a rerun gives exactly the rows of an uninterrupted run (or that the command stops with a
clear message and loses nothing written).

Kill points are real writes: a first run logs every atomic write (``XBENCH_FAULT_LOG``), and
seeded draws choose among them where ``XBENCH_FAULTS`` kills the process (before or after the
write's rename). docs/architecture.md quotes the counts of this module (checked below).
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import tests.plugins  # noqa: F401 - registers the test explainers
from bench.cli import main
from bench.store import RunLock, read_results
from tests.conftest import ROOT, tiny_suite, write_suite

KEY = ["dataset", "model", "explainer", "metric", "sample_id"]
QUICK_KILLS = 3  # kill points of the default run
SLOW_KILLS = 12  # kill points of the slow variant (run in CI too)


def _suite(out: Path) -> dict:
    """Two explainers x 4 batches of 4 images: cells, parts, predictions, gallery and manifest writes."""
    return tiny_suite(
        explainers=["test_counted", "saliency"],
        batch_size=4,
        gallery=2,
        output=str(out),
        metrics=[
            {"name": "deletion", "params": {"steps": 4, "baseline": "mean"}},
            {"name": "iou", "params": {"threshold": "mask_size"}},
        ],
    )


def _values(run_dir: Path) -> pd.DataFrame:
    df = read_results(run_dir)
    df = df[~df["metric"].str.startswith("runtime")]
    return df.sort_values(KEY).reset_index(drop=True).drop(columns=["run_id", "cell_id"])


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _spawn(path: Path, *args: str, **env: str) -> subprocess.Popen:
    argv = ["run", str(path), "--no-progress", *args]
    script = f"import sys, tests.plugins; from bench.cli import main; sys.exit(main({argv!r}))"
    return subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=_env(**env), stderr=subprocess.PIPE, text=True
    )


def _assert_recovered(run_dir: Path, baseline: pd.DataFrame) -> None:
    """The run directory holds exactly the baseline's rows, nothing half-written, no leftover parts."""
    pd.testing.assert_frame_equal(_values(run_dir), baseline)
    assert not list(run_dir.rglob(".*.tmp-*"))
    assert not (run_dir / "parts").exists() or not any((run_dir / "parts").iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert all(state["status"] == "done" and state["sha256"] for state in manifest["cells"].values())


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, list[str]]:
    """The uninterrupted run's values, and the paths of its writes in order (from a logged subprocess run)."""
    folder = tmp_path_factory.mktemp("faults-baseline")
    path = write_suite(folder, _suite(folder / "run"))
    assert main(["run", str(path), "--no-progress"]) == 0  # trains (or reuses) the model in this process
    log = folder / "writes.log"
    logged = write_suite(folder, _suite(folder / "logged"), "logged.yaml")
    proc = _spawn(logged, "--no-cache", XBENCH_FAULT_LOG=str(log))
    assert proc.wait() == 0, proc.stderr.read() if proc.stderr else ""
    writes = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    return _values(folder / "run"), writes


def _kill_points(writes: list[str], count: int, seed: int) -> list[tuple[str, int]]:
    """``count`` seeded (stage, write number) pairs among the writes into the run directory."""
    ours = [i + 1 for i, w in enumerate(writes) if "/logged/" in w]
    rng = random.Random(seed)
    return [(rng.choice(["kill-before", "kill-after"]), n) for n in sorted(rng.sample(ours, count))]


def _kill_and_recover(tmp_path: Path, baseline: pd.DataFrame, points: list[tuple[str, int]]) -> None:
    for i, (stage, n) in enumerate(points):
        out = tmp_path / f"run{i}"
        path = write_suite(tmp_path, _suite(out), f"suite{i}.yaml")
        proc = _spawn(path, "--no-cache", XBENCH_FAULTS=f"{stage}:{n}")
        assert proc.wait() == -signal.SIGKILL, f"{stage}:{n} did not kill the run"
        assert main(["run", str(path), "--no-progress", "--no-cache"]) == 0
        _assert_recovered(out, baseline)


@pytest.mark.slow
def test_sigkill_at_seeded_write_points_loses_nothing(tmp_path: Path, baseline) -> None:
    _kill_and_recover(tmp_path, baseline[0], _kill_points(baseline[1], QUICK_KILLS, seed=1))


@pytest.mark.slow
def test_sigkill_at_many_write_points_loses_nothing(tmp_path: Path, baseline) -> None:
    _kill_and_recover(tmp_path, baseline[0], _kill_points(baseline[1], SLOW_KILLS, seed=2))


@pytest.mark.slow
def test_two_kills_in_a_row_then_a_rerun(tmp_path: Path, baseline) -> None:
    path = write_suite(tmp_path, _suite(tmp_path / "run"))
    for stage, n in (("kill-after", 9), ("kill-before", 6)):  # the second run starts from the first's leftovers
        assert _spawn(path, "--no-cache", XBENCH_FAULTS=f"{stage}:{n}").wait() == -signal.SIGKILL
    assert main(["run", str(path), "--no-progress", "--no-cache"]) == 0
    _assert_recovered(tmp_path / "run", baseline[0])


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not predicate():
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the fault could be injected"


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_stop_cleanly_and_resume(
    tmp_path: Path, baseline, signum: int, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    path = write_suite(tmp_path, _suite(out))
    calls = tmp_path / "calls.log"
    proc = _spawn(path, "--no-cache", XBENCH_TEST_SLEEP="0.3", XBENCH_TEST_CALLS=str(calls))
    _wait_for(lambda: bool(list((out / "parts").glob("*/*.done"))) if (out / "parts").exists() else False, proc)
    proc.send_signal(signum)
    assert proc.wait(timeout=60) == code
    err = proc.stderr.read() if proc.stderr else ""
    assert f"stopped by {signal.Signals(signum).name}" in err and "rerun the same command to resume" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["invocations"][-1]["status"] == "interrupted"
    assert manifest["invocations"][-1]["signal"] == signal.Signals(signum).name
    kept = sum(1 for _ in (out / "parts").glob("*test_counted*/*.done"))
    explained = sum(int(line.split()[1]) for line in calls.read_text().splitlines())
    monkeypatch.setenv("XBENCH_TEST_CALLS", str(calls))
    assert main(["run", str(path), "--no-progress", "--no-cache"]) == 0
    again = sum(int(line.split()[1]) for line in calls.read_text().splitlines()) - explained
    assert again == 16 - 4 * kept, "the batches kept as parts are not explained again"
    _assert_recovered(out, baseline[0])


def _finished_run(tmp_path: Path, name: str = "run") -> tuple[Path, Path]:
    path = write_suite(tmp_path, _suite(tmp_path / name), f"{name}.yaml")
    assert main(["run", str(path), "--no-progress"]) == 0
    return path, tmp_path / name


def test_truncated_cell_file_is_quarantined_and_recomputed(tmp_path: Path, baseline, capsys) -> None:
    path, out = _finished_run(tmp_path)
    cell = sorted((out / "cells").glob("*.parquet"))[0]
    cell.write_bytes(cell.read_bytes()[:-100])
    capsys.readouterr()
    assert main(["run", str(path), "--no-progress"]) == 0
    assert "is damaged" in capsys.readouterr().err
    assert list((out / "quarantine").iterdir())
    _assert_recovered(out, baseline[0])


def test_cell_file_with_flipped_bytes_fails_its_digest(tmp_path: Path, baseline, capsys) -> None:
    path, out = _finished_run(tmp_path)
    cell = sorted((out / "cells").glob("*.parquet"))[1]
    data = bytearray(cell.read_bytes())
    data[64] ^= 0xFF  # inside the first data page: the footer still reads
    cell.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["run", str(path), "--no-progress"]) == 0
    assert "do not match the digest" in capsys.readouterr().err
    _assert_recovered(out, baseline[0])


@pytest.mark.slow
def test_corrupt_part_is_recomputed(tmp_path: Path, baseline) -> None:
    out = tmp_path / "run"
    path = write_suite(tmp_path, _suite(out))
    proc = _spawn(path, "--no-cache", XBENCH_TEST_SLEEP="0.3")
    _wait_for(lambda: len(list((out / "parts").glob("*/*.done"))) >= 2 if (out / "parts").exists() else False, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    part = sorted((out / "parts").glob("*/*.rows.parquet"))[0]
    part.write_bytes(part.read_bytes()[:50])
    assert main(["run", str(path), "--no-progress", "--no-cache"]) == 0
    _assert_recovered(out, baseline[0])


def test_corrupt_cache_entry_is_recomputed(tmp_path: Path, baseline, model_cache: Path) -> None:
    path, out = _finished_run(tmp_path)
    entries = sorted((model_cache / "attributions").glob("*/*/*/*.npz"), key=lambda p: p.stat().st_mtime)
    entries[-1].write_bytes(entries[-1].read_bytes()[:40])
    assert main(["run", str(path), "--no-progress", "--force"]) == 0
    _assert_recovered(out, baseline[0])


def test_corrupt_manifest_is_quarantined_and_rebuilt(tmp_path: Path, baseline, capsys) -> None:
    path, out = _finished_run(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*.parquet")}
    (out / "manifest.json").write_text('{"cells": {"trunc')
    capsys.readouterr()
    assert main(["run", str(path), "--no-progress"]) == 0
    assert "unreadable manifest" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "finished cells are adopted, not recomputed"
    _assert_recovered(out, baseline[0])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "message"), [("enospc", "No space left on device"), ("erofs", "Read-only file system")]
)
def test_full_or_read_only_disk_is_a_clear_error_and_loses_nothing(tmp_path: Path, baseline, fault, message) -> None:
    """Root ignores file permissions, so a read-only file system is simulated at the write like a full disk."""
    out = tmp_path / "run"
    path = write_suite(tmp_path, _suite(out))
    proc = _spawn(path, "--no-cache", XBENCH_FAULTS=f"{fault}:20")
    assert proc.wait() == 2
    err = proc.stderr.read() if proc.stderr else ""
    assert message in err and "Traceback" not in err and "resumes" in err
    written = {p: p.read_bytes() for p in (out / "cells").glob("*.parquet")}
    assert main(["run", str(path), "--no-progress", "--no-cache"]) == 0
    assert all(p.read_bytes() == data for p, data in written.items()), "what was written stays"
    _assert_recovered(out, baseline[0])


def _stderr_line(proc: subprocess.Popen, needle: str, timeout: float = 120) -> str:
    """Read the process's stderr line by line until one contains ``needle``."""
    deadline = time.time() + timeout
    assert proc.stderr is not None
    seen: list[str] = []
    while time.time() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 1.0)
        if ready:
            line = proc.stderr.readline()
            if needle in line:
                return line
            seen.append(line)
            if not line and proc.poll() is not None:
                break
    said = "".join(seen[-20:])
    raise AssertionError(f"the process never said {needle!r} (exit code {proc.poll()}); it said:\n{said}")


@pytest.mark.slow
def test_a_second_run_on_a_locked_directory_exits_2_or_waits(tmp_path: Path, baseline, capsys) -> None:
    """While this test holds the directory's lock, a run exits 2 naming the holder, and a run with --wait
    waits, then takes the lock over when it is released and completes."""
    out = tmp_path / "run"
    path = write_suite(tmp_path, _suite(out))
    with RunLock(out):
        capsys.readouterr()
        assert main(["run", str(path), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"process {os.getpid()}" in err and "--wait" in err
        waiter = _spawn(path, "--wait")
        _stderr_line(waiter, "waiting for ", timeout=300)  # (a loaded CI machine imports torch slowly)
    assert waiter.wait(timeout=300) == 0
    _assert_recovered(out, baseline[0])


@pytest.mark.slow
def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path: Path, baseline) -> None:
    out = tmp_path / "run"
    path = write_suite(tmp_path, _suite(out))
    proc = _spawn(path, "--no-cache", XBENCH_TEST_SLEEP="0.3")
    _wait_for(lambda: (out / ".xbench.lock.json").exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((out / ".xbench.lock.json").read_text())["pid"] == proc.pid  # its note is left behind
    assert main(["run", str(path), "--no-progress", "--no-cache"]) == 0  # the kernel freed its flock
    _assert_recovered(out, baseline[0])


def test_docs_quote_this_modules_fault_counts() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert f"{QUICK_KILLS + SLOW_KILLS + 3} SIGKILLs" in text


@pytest.mark.slow
def test_two_runs_needing_the_same_model_train_it_once(tmp_path: Path) -> None:
    """The model cache is shared by concurrent runs: the second waits for the first's training, then loads it."""
    cache = tmp_path / "cache"
    suites = [write_suite(tmp_path, _suite(tmp_path / f"run{i}"), f"s{i}.yaml") for i in (1, 2)]
    script = "import sys, tests.plugins; from bench.cli import main; sys.exit(main(['train', sys.argv[1]]))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(s)],
            cwd=ROOT,
            env=_env(XBENCH_CACHE=str(cache)),
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for s in suites
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    trained = [(out + err).count("training small_cnn") for out, err in outputs]
    assert sorted(trained) == [0, 1], "exactly one of the two trained the model"
    assert sum("reused" in out for out, _ in outputs) == 1
    assert len(list(cache.glob("models/*/weights.pt"))) == 1 and not list(cache.rglob(".*.tmp-*"))
