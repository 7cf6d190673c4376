"""`xbench validate`'s pass estimates: for the images' own shape, never an assumed 224x224."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bench.config import load_suite
from bench.datasets.cifar10 import CIFAR10
from bench.datasets.imagefolder import ImageFolder
from bench.datasets.voc import VOC2012
from bench.plan import DEFAULT_IMAGE_SHAPE, build_plan, estimate, estimate_shape
from bench.types import Passes
from tests.conftest import tiny_suite, write_suite


def test_cifar_sized_suite_is_estimated_at_32x32(tmp_path: Path) -> None:
    """Occlusion (8x8 windows, stride 4) on 32x32 images has 7 x 7 positions, deletion with 64 pixels per step
    16 steps: per image 7 * 7 + 1 + 16 + 1 forward passes; at 224x224 it would have been 55 * 55 + 1 + 785."""
    suite = tiny_suite(
        explainers=[{"name": "occlusion", "params": {"window": 8, "stride": 4}}, "saliency"],
        metrics=[{"name": "deletion", "params": {"pixels_per_step": 64}}, "iou"],
        samples=4,
    )
    loaded = load_suite(write_suite(tmp_path, suite))
    estimates = {e.cell.explainer: e for e in estimate(loaded, build_plan(loaded))}
    assert estimates["occlusion"].image_shape == (3, 32, 32) and estimates["occlusion"].shape_note == ""
    assert estimates["occlusion"].images == 4
    assert estimates["occlusion"].passes == Passes(4 * (7 * 7 + 1 + 16 + 1), 0)
    assert estimates["saliency"].passes == Passes(4 * (1 + 17), 4)


def test_reexplaining_metrics_count_the_cells_explainer(tmp_path: Path) -> None:
    """max_sensitivity explains every image n_samples times more: with SmoothGrad (10 samples) that is
    10 x 10 forward and backward passes per image, not 10 of a gradient method."""
    suite = tiny_suite(
        explainers=[{"name": "smoothgrad", "params": {"n_samples": 10}}],
        metrics=[{"name": "max_sensitivity", "params": {"n_samples": 10}}, "consistency"],
        samples=2,
    )
    loaded = load_suite(write_suite(tmp_path, suite))
    (only,) = estimate(loaded, build_plan(loaded))
    assert only.passes == Passes(2 * (10 + 100 + 3 * 10), 2 * (10 + 100 + 3 * 10))


def test_native_shapes_are_known_without_reading_images(tmp_path: Path) -> None:
    assert CIFAR10(CIFAR10.Params(root=str(tmp_path / "nowhere"))).image_shape() == (3, 32, 32)
    for cls_dir in ("a", "b"):
        (tmp_path / "folder" / cls_dir).mkdir(parents=True)
        Image.new("RGB", (20, 12)).save(tmp_path / "folder" / cls_dir / "x.png")
    folder = ImageFolder(ImageFolder.Params(root=str(tmp_path / "folder")))
    assert folder.image_shape() == (3, 12, 20)  # (C, H, W) from the first file's header
    resized = ImageFolder(ImageFolder.Params(root=str(tmp_path / "folder"), image_size=(16, 8)))
    assert resized.image_shape() == (3, 16, 8)
    assert ImageFolder(ImageFolder.Params(root=str(tmp_path / "missing"))).image_shape() is None


@pytest.mark.parametrize("image_size", [(224, 224), (96, 128)])
def test_variable_size_data_says_the_shape_is_assumed(tmp_path: Path, image_size: tuple[int, int]) -> None:
    voc = VOC2012(VOC2012.Params(root=str(tmp_path), image_size=image_size))
    assert voc.image_shape() is None  # resized to the model's input size, known once the model is
    shape, note = estimate_shape(voc)
    assert shape == (3, *image_size) and "image_size" in note and "model's input size" in note


def test_unknown_shape_falls_back_to_the_documented_default(tmp_path: Path) -> None:
    shape, note = estimate_shape(ImageFolder(ImageFolder.Params(root=str(tmp_path / "missing"))))
    assert shape == DEFAULT_IMAGE_SHAPE == (3, 224, 224) and "a default" in note
