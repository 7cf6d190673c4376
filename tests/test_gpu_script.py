"""``benchmarks/gpu.sh --dry-run``: the prepared GPU checks run end to end on a CPU, so the script a lent GPU
machine runs once is known to work before that machine exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_gpu_script_dry_run_writes_its_records(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", "benchmarks/gpu.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    records = json.loads((tmp_path / "gpu_cell.json").read_text())
    assert records, "gpu_cell.py recorded nothing"
    assert (tmp_path / "gpu_cell.md").read_text().strip()
    tests = (tmp_path / "cuda_tests.txt").read_text()
    assert "passed" in tests or "skipped" in tests, tests
    assert "failed" not in tests and "error" not in tests.lower().replace("errors=0", ""), tests
