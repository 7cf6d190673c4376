"""Shared fixtures: an isolated model cache, tiny suites, and one quickstart run per session."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench import fastpath

ROOT = Path(__file__).resolve().parents[1]
# The real data beside the project; XBENCH_SHARED_DATA points elsewhere (e.g. from a git worktree).
SHARED_DATA = Path(os.environ.get("XBENCH_SHARED_DATA") or ROOT.parent / "shared" / "data")

# The fast path once for the whole session, before any in-process `xbench run` would choose threads by the
# load: a model trained with another thread count rounds differently, and tests share trained models.
fastpath.configure(threads=max(1, min(2, os.cpu_count() or 1)), allocator="tuned")


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained models go to a per-session cache unless XBENCH_CACHE is set (then it is reused)."""
    if os.environ.get("XBENCH_CACHE"):
        return Path(os.environ["XBENCH_CACHE"])
    path = tmp_path_factory.mktemp("xbench-cache")
    os.environ["XBENCH_CACHE"] = str(path)
    return path


# An easier variant of the shapes (bigger shapes, less clutter) at 32x32, so that a small CNN
# reaches about 85 % in seconds: enough for explanations that mean something in the tests.
TINY_DATA = {
    "name": "synthetic",
    "params": {"size": 32, "train_size": 2400, "test_size": 200, "lines": 2, "dots": 4, "min_radius": 0.24,
               "max_radius": 0.34},
}  # fmt: skip
TINY_MODEL = {"name": "small_cnn", "params": {"widths": [8, 16, 32, 32], "epochs": 10}}


def tiny_suite(**overrides: Any) -> dict[str, Any]:
    """A suite that runs in seconds: easy 32x32 shapes, a small CNN trained for 10 epochs (cached)."""
    suite: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "samples": 16,
        "batch_size": 8,
        "device": "cpu",
        "warmup": False,
        "datasets": [TINY_DATA],
        "models": [TINY_MODEL],
        "explainers": ["saliency", "gradcam", "random"],
        "metrics": [
            {"name": "deletion", "params": {"steps": 8, "baseline": "mean"}},
            {"name": "insertion", "params": {"steps": 8}},
            {"name": "iou", "params": {"threshold": "mask_size"}},
            "runtime",
        ],
    }
    suite.update(overrides)
    return copy.deepcopy(suite)  # callers (the fuzz test) mutate it; the shared TINY_* dicts must not change


def write_suite(folder: Path, suite: dict[str, Any], name: str = "suite.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


@pytest.fixture
def suite_file(tmp_path: Path):
    """Factory: write a tiny suite (with overrides) into tmp_path and return its path."""

    def make(**overrides: Any) -> Path:
        suite = tiny_suite(**overrides)
        suite.setdefault("output", str(tmp_path / "run"))
        return write_suite(tmp_path, suite)

    return make
