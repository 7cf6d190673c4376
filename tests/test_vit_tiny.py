"""The tiny ViT trained from scratch: trains on first use, is cached, and every ViT explainer runs on it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.store import read_results
from tests.conftest import tiny_suite, write_suite

SMALL_VIT = {"layers": 1, "heads": 2, "hidden_dim": 32, "mlp_dim": 64, "patch_size": 8,
             "train": {"optimizer": "adamw", "lr": 0.003, "epochs": 2, "batch_size": 64, "scheduler": "onecycle",
                       "augment": [], "head": "keep", "eval_samples": 100}}  # fmt: skip


@pytest.mark.slow
def test_vit_tiny_trains_once_and_every_vit_explainer_runs(tmp_path: Path) -> None:
    suite = tiny_suite(
        models=[{"name": "vit_tiny", "params": SMALL_VIT}],
        explainers=["gradcam", "attention_rollout", "transformer_attribution", "random"],
        output=str(tmp_path / "run"),
    )
    path = write_suite(tmp_path, suite)
    assert main(["run", str(path), "--no-progress"]) == 0
    df = read_results(tmp_path / "run").query("metric != 'runtime.peak_memory_mb'")  # measured on CUDA only
    assert (df["status"] == "ok").all() and set(df["explainer"]) == set(suite["explainers"])
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    (info,) = manifest["models"].values()
    assert info["architecture"] == "vit_tiny" and info["test_images"] == 100 and len(info["history"]) == 2
    # a second suite with the same model reuses the cached weights instead of training again
    again = tiny_suite(models=[{"name": "vit_tiny", "params": SMALL_VIT}], explainers=["attention_rollout"],
                       output=str(tmp_path / "again"))  # fmt: skip
    assert main(["run", str(write_suite(tmp_path, again, "again.yaml")), "--no-progress"]) == 0
    (cached,) = json.loads((tmp_path / "again" / "manifest.json").read_text())["models"].values()
    assert cached["cached"] is True and cached["history"] == info["history"]
    iou = pd.read_parquet(tmp_path / "run" / "summary.parquet").query("metric == 'iou' and split == 'all'")
    assert iou.set_index("explainer")["n"].eq(16).all()


def test_vit_tiny_without_a_train_split_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    images = tmp_path / "images" / "a"
    images.mkdir(parents=True)
    suite = tiny_suite(datasets=[{"name": "imagefolder", "params": {"root": str(tmp_path / "images")}}],
                       models=[{"name": "vit_tiny", "params": SMALL_VIT}])  # fmt: skip
    assert main(["validate", str(write_suite(tmp_path, suite)), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "vit_tiny trains on a train split" in err and "train.dataset" in err
