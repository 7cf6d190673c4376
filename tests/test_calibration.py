"""`xbench validate` turns pass counts into time with a per-model pass timing, measured once and cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.calibration import PassTiming, cached, calibration_key, measure, store
from bench.cli import main
from tests.conftest import tiny_suite, write_suite


def test_timing_is_positive_per_image_and_cached(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path))
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 4)).eval()
    timing = measure(net, (3, 16, 16), torch.device("cpu"))
    assert timing.forward > 0 and timing.backward >= 0 and timing.batch == 8
    assert timing.seconds(10, 2) == 10 * timing.forward + 2 * timing.backward
    key = calibration_key({"name": "x"}, (3, 16, 16), torch.device("cpu"))
    assert cached(key) is None
    store(key, timing)
    assert cached(key) == timing and json.loads((tmp_path / "calibration.json").read_text())[key]["batch"] == 8


@pytest.mark.slow
def test_validate_times_cached_models_and_says_which_cells_dominate(tmp_path: Path, capsys, monkeypatch) -> None:
    path = write_suite(tmp_path, tiny_suite(output=str(tmp_path / "run")))
    assert main(["train", str(path)]) == 0  # the model is trained (cached), so validate can time it
    capsys.readouterr()
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "time (est.)" in out and "estimated time of the model passes on this machine" in out
    assert "(3 of 3 cells timed)" in out and "the slowest 3 take 100%" in out


def test_models_that_would_train_are_not_timed(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "empty-cache"))
    path = write_suite(tmp_path, tiny_suite(output=str(tmp_path / "run")))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "estimated time" not in out and not (tmp_path / "empty-cache" / "models").exists()
    assert PassTiming(1.0, 2.0, 8, "now").seconds(1, 1) == 3.0
