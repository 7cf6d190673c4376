"""The package type-checks clean under mypy (strict, the pydantic plugin: ``[tool.mypy]`` in pyproject.toml):
part of the test command, so CI enforces it. Slow: about 20 s on 2 cores without mypy's cache (2 s with it)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_mypy_bench() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (a dev dependency: pip install -e '.[dev]')")
    out = subprocess.run([sys.executable, "-m", "mypy", "bench"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
