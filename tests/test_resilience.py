"""Scale and resilience: attribution cache, resume within a cell, random SIGKILLs, a full disk,
out-of-memory back-off, shards and merge, mixed precision, and the Ray executor."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import ray

import tests.plugins  # noqa: F401 - registers the test explainers
from bench.cli import main
from bench.store import read_results
from tests.conftest import ROOT, tiny_suite, write_suite

KEY = ["dataset", "model", "explainer", "metric", "sample_id"]
METRICS = [
    {"name": "deletion", "params": {"steps": 4, "baseline": "mean"}},
    {"name": "iou", "params": {"threshold": "mask_size"}},
]


def _values(run_dir: Path) -> pd.DataFrame:
    df = read_results(run_dir)
    df = df[~df["metric"].str.startswith("runtime")]
    return df.sort_values(KEY).reset_index(drop=True).drop(columns=["run_id", "cell_id"])


def _calls(path: Path) -> int:
    return sum(int(line.split()[1]) for line in path.read_text().splitlines()) if path.exists() else 0


def _run(path: Path, *extra: str) -> int:
    return main(["run", str(path), "--no-progress", *extra])


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_cache: Path) -> Path:
    """Counts explainer calls, with an attribution cache of this test's own.

    The session's trained models are shared (linked), but the attributions are not: another
    test that ran ``test_counted`` on the same data earlier would otherwise have filled the
    cache, and this test would count zero calls.
    """
    path = tmp_path / "calls.log"
    monkeypatch.setenv("XBENCH_TEST_CALLS", str(path))
    own = tmp_path / "cache"
    own.mkdir()
    (model_cache / "models").mkdir(parents=True, exist_ok=True)
    (own / "models").symlink_to(model_cache / "models", target_is_directory=True)
    monkeypatch.setenv("XBENCH_CACHE", str(own))
    return path


def test_adding_a_metric_reuses_cached_attributions(tmp_path: Path, calls: Path) -> None:
    path = write_suite(
        tmp_path, tiny_suite(explainers=["test_counted"], metrics=METRICS[:1], output=str(tmp_path / "a"))
    )
    assert _run(path) == 0
    first = _calls(calls)
    assert first == 16  # every sample explained once
    more = write_suite(tmp_path, tiny_suite(explainers=["test_counted"], metrics=METRICS, output=str(tmp_path / "a")))
    assert _run(more) == 0
    assert _calls(calls) == first, "the new metric scored cached attributions"
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["invocations"][-1]["attribution_cache_hits"] == 16
    fresh = write_suite(
        tmp_path, tiny_suite(explainers=["test_counted"], metrics=METRICS, output=str(tmp_path / "b")), "b.yaml"
    )
    assert _run(fresh, "--no-cache") == 0
    pd.testing.assert_frame_equal(_values(tmp_path / "a"), _values(tmp_path / "b"))


def test_corrupt_cache_entries_are_recomputed(tmp_path: Path, calls: Path) -> None:
    path = write_suite(tmp_path, tiny_suite(explainers=["test_counted"], metrics=METRICS, output=str(tmp_path / "a")))
    assert _run(path) == 0
    entries = sorted((tmp_path / "cache" / "attributions").glob("*/*/*/*.npz"), key=lambda p: p.stat().st_mtime)[-16:]
    entries[0].write_bytes(entries[0].read_bytes()[:40])  # truncated
    entries[1].write_bytes(b"garbage")
    before = _calls(calls)
    assert _run(path, "--force") == 0
    assert 0 < _calls(calls) - before <= 16  # the batches with a broken entry were explained again
    fresh = write_suite(
        tmp_path, tiny_suite(explainers=["test_counted"], metrics=METRICS, output=str(tmp_path / "b")), "b.yaml"
    )
    assert _run(fresh, "--no-cache") == 0
    pd.testing.assert_frame_equal(_values(tmp_path / "a"), _values(tmp_path / "b"))


def _spawn(path: Path, env: dict[str, str]) -> subprocess.Popen:
    script = (
        f"import tests.plugins; from bench.cli import main; main(['run', {str(path)!r}, '--no-progress', '--no-cache'])"
    )
    return subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_random_sigkills_lose_nothing(tmp_path: Path, calls: Path) -> None:
    """Kill the run at random points several times (also inside cells); the final table equals an
    uninterrupted run's, with no duplicate and no missing row, and finished batches are not redone."""
    suite = tiny_suite(explainers=["test_counted", {"name": "test_counted", "id": "again"}], metrics=METRICS,
                       batch_size=2, output=str(tmp_path / "killed"))  # fmt: skip
    path = write_suite(tmp_path, suite)
    assert main(["run", str(write_suite(tmp_path, tiny_suite(explainers=["random"]), "warm.yaml")), "--no-progress",
                 "--output", str(tmp_path / "warm")]) == 0  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XBENCH_TEST_SLEEP": "0.15"}
    rng = random.Random(7)
    for _ in range(4):
        proc = _spawn(path, env)
        time.sleep(rng.uniform(1.0, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _run(path, "--no-cache") == 0
    explained = _calls(calls)
    assert 32 <= explained <= 32 + 4 * 2, "each kill loses at most the batch in progress (2 images)"
    df = read_results(tmp_path / "killed")
    assert df.duplicated(KEY).sum() == 0 and len(df) == 2 * 16 * 2
    assert not (tmp_path / "killed" / "parts").exists() or not any((tmp_path / "killed" / "parts").iterdir())
    assert not list((tmp_path / "killed").rglob(".*.tmp-*"))
    straight = write_suite(tmp_path, {**suite, "output": str(tmp_path / "straight")}, "straight.yaml")
    assert _run(straight, "--no-cache") == 0
    pd.testing.assert_frame_equal(_values(tmp_path / "killed"), _values(tmp_path / "straight"))


def test_full_disk_is_a_clear_error_and_corrupts_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    path = write_suite(tmp_path, tiny_suite(explainers=["random", "saliency"], output=str(tmp_path / "run")))
    assert _run(path) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "run" / "cells").glob("*.parquet")}
    real = pq.write_table

    def full(table, where, *args, **kwargs):
        if "cells" in str(where):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", full)
    capsys.readouterr()
    assert _run(path, "--force") == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "files already written are intact" in err and "Traceback" not in err
    monkeypatch.setattr(pq, "write_table", real)
    after = {p.name: p.read_bytes() for p in (tmp_path / "run" / "cells").glob("*.parquet")}
    assert after == before and not list((tmp_path / "run").rglob(".*.tmp-*"))
    assert len(read_results(tmp_path / "run")) > 0


def test_out_of_memory_halves_the_batch(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path, tiny_suite(explainers=["test_oom_above_2"], metrics=METRICS, output=str(tmp_path / "a"))
    )
    assert _run(path, "--no-cache") == 0
    df = read_results(tmp_path / "a")
    assert (df[~df["metric"].str.startswith("runtime.peak")]["status"] == "ok").all()
    small = write_suite(tmp_path, tiny_suite(explainers=["test_oom_above_2"], metrics=METRICS, batch_size=2,
                                             output=str(tmp_path / "b")), "b.yaml")  # fmt: skip
    assert _run(small, "--no-cache") == 0
    pd.testing.assert_frame_equal(_values(tmp_path / "a"), _values(tmp_path / "b"))


def test_shards_merge_into_the_unsharded_run(tmp_path: Path) -> None:
    suite = tiny_suite(explainers=["random", "saliency", "gradcam"], metrics=METRICS)
    path = write_suite(tmp_path, suite)
    for i in (1, 2):
        assert _run(path, "--shard", f"{i}/2", "--output", str(tmp_path / f"shard{i}")) == 0
    assert len(list((tmp_path / "shard1" / "cells").glob("*.parquet"))) == 2
    assert len(list((tmp_path / "shard2" / "cells").glob("*.parquet"))) == 1
    assert main(["merge", str(tmp_path / "merged"), str(tmp_path / "shard1"), str(tmp_path / "shard2")]) == 0
    assert _run(path, "--output", str(tmp_path / "whole")) == 0
    pd.testing.assert_frame_equal(_values(tmp_path / "merged"), _values(tmp_path / "whole"))
    assert (tmp_path / "merged" / "leaderboard.md").exists()
    assert main(["run", str(path), "--shard", "3/2", "--no-progress"]) == 2


def test_mixed_precision_is_recorded(tmp_path: Path) -> None:
    path = write_suite(
        tmp_path, tiny_suite(explainers=["saliency"], metrics=METRICS, precision="bf16", output=str(tmp_path / "a"))
    )
    assert _run(path, "--no-cache") == 0
    cell = next((tmp_path / "a" / "cells").glob("*.parquet"))
    meta = json.loads(pq.read_schema(cell).metadata[b"xbench"])
    assert meta["cell"]["data"]["precision"] == "bf16"
    df = read_results(tmp_path / "a")
    assert (df[df["metric"] == "iou"]["status"] == "ok").all()


@pytest.fixture(scope="module")
def ray_env():
    os.environ["XBENCH_PLUGINS"] = "tests.plugins"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.mark.slow
def test_ray_executor_matches_local_and_survives_a_dying_worker(tmp_path: Path, ray_env, monkeypatch) -> None:
    monkeypatch.setenv("XBENCH_TEST_DIE_MARKER", str(tmp_path / "died"))
    suite = tiny_suite(explainers=["saliency", "gradcam", "test_dies_once"], metrics=METRICS)
    path = write_suite(tmp_path, suite)
    assert _run(path, "--executor", "ray", "--workers", "2", "--no-cache", "--output", str(tmp_path / "ray")) == 0
    assert (tmp_path / "died").exists(), "one worker died and its task was retried"
    assert _run(path, "--no-cache", "--output", str(tmp_path / "local")) == 0
    pd.testing.assert_frame_equal(_values(tmp_path / "ray"), _values(tmp_path / "local"))
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["invocations"][-1]["executor"] == "ray"
    assert all(state["status"] == "done" for state in manifest["cells"].values())
