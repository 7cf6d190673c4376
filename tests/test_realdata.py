"""Acceptance on the real data beside the project (../shared/data); skipped where it is absent."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from bench.cli import main
from bench.store import read_results
from tests.conftest import ROOT, SHARED_DATA, write_suite

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA}"),
]

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
RESNETS = SHARED_DATA / "cifar10-resnets"


def _resnet(depth: int) -> dict:
    checkpoint = next(RESNETS.glob(f"resnet{depth}-*.th"))
    return {"name": "cifar_resnet", "id": f"resnet{depth}", "params": {"depth": depth, "checkpoint": str(checkpoint)}}


def _models_table(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "models.parquet").set_index(["dataset", "model"])


def _quality_suite(tmp_path: Path, datasets: list, models: list, samples) -> Path:
    suite = {
        "name": "quality", "samples": samples, "batch_size": 100, "device": "cpu", "output": str(tmp_path / "run"),
        "datasets": datasets, "models": models, "explainers": ["random"], "metrics": ["runtime"],
    }  # fmt: skip
    return write_suite(tmp_path, suite)


@pytest.mark.slow
def test_cifar_resnets_are_perfect_on_lossless_train_pngs_and_report_jpeg_accuracy(tmp_path: Path) -> None:
    folder = SHARED_DATA / "cifar10-train200-png"
    params = {"root": str(folder / "train"), "labels_csv": str(folder / "trainLabels.csv"), "classes": CIFAR_CLASSES}
    pngs = {"name": "imagelist", "id": "train200", "params": params}
    jpegs = {
        "name": "imagefolder", "id": "test_jpeg",
        "params": {"root": str(SHARED_DATA / "cifar10-test-jpeg" / "test"), "classes": CIFAR_CLASSES},
    }  # fmt: skip
    path = _quality_suite(tmp_path, [pngs, jpegs], [_resnet(20), _resnet(56)], {"train200": None, "test_jpeg": 2000})
    assert main(["run", str(path), "--no-progress"]) == 0
    table = _models_table(tmp_path / "run")
    for depth in (20, 56):
        row = table.loc[("train200", f"resnet{depth}")]
        assert row["accuracy"] == 1.0 and row["n"] == 200 and row["target_rule"] == "label"
        jpeg = table.loc[("test_jpeg", f"resnet{depth}")]
        assert jpeg["n"] == 2000 and 0.70 < jpeg["accuracy"] < 0.95  # lossy JPEGs cost about 10 points
        assert 0.70 < jpeg["macro_f1"] < 0.95


@pytest.mark.slow
def test_efficientnet_lite0_on_single_class_voc_images(tmp_path: Path) -> None:
    voc = {"name": "voc2012", "params": {"root": str(SHARED_DATA / "voc2012-train333"), "split": "train",
                                          "single_class_only": True}}  # fmt: skip
    path = _quality_suite(tmp_path, [voc], ["efficientnet_lite0"], None)
    assert main(["run", str(path), "--no-progress"]) == 0
    row = _models_table(tmp_path / "run").loc[("voc2012", "efficientnet_lite0")]
    assert row["target_rule"] == "mapped"
    assert row["accuracy"] >= 0.60, "top-1 inside the VOC class's ImageNet set"
    assert row["n_no_target"] > 0 and row["n_scored"] + row["n_no_target"] == row["n"]
    df = read_results(tmp_path / "run")
    person = df[df["sample_id"].str.endswith("/person") & (df["metric"] == "runtime")]
    assert len(person) == row["n_no_target"] and (person["status"] == "skipped").all()
    assert person["message"].str.contains("no counterpart in imagenet1k").all()


@pytest.mark.slow
def test_the_real_data_suite_runs_end_to_end(tmp_path: Path) -> None:
    suite = yaml.safe_load((ROOT / "suites" / "cifar-voc-cpu.yaml").read_text())
    for ds in suite["datasets"]:
        ds["params"]["root"] = str((ROOT / ds["params"]["root"]).resolve())
    for model in suite["models"]:
        if "checkpoint" in model.get("params", {}):
            model["params"]["checkpoint"] = str((ROOT / model["params"]["checkpoint"]).resolve())
    suite.update(samples={"cifar10_jpeg": 20, "voc_train333": 6}, output=str(tmp_path / "run"), device="cpu")
    path = write_suite(tmp_path, suite)
    assert main(["run", str(path), "--no-progress"]) == 0
    df = read_results(tmp_path / "run")
    assert set(df["explainer"]) == {"gradcam", "integrated_gradients", "random"}
    voc = df[df["dataset"] == "voc_train333"]
    assert set(voc["model"]) == {"efficientnet_lite0"}
    iou = voc[(voc["metric"].isin(["iou", "iou_original"])) & (voc["status"] == "ok")]
    assert len(iou) > 0 and iou["value"].between(0, 1).all()
    assert not df[(df["dataset"] == "cifar10_jpeg") & df["metric"].str.startswith("iou")].shape[0]
    cifar = df[(df["dataset"] == "cifar10_jpeg") & (df["metric"] != "runtime.peak_memory_mb")]
    assert (cifar["status"] == "ok").all()
    assert set(df[df["dataset"] == "cifar10_jpeg"]["model"]) == {"resnet20", "resnet56"}
