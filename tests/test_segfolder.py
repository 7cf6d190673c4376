"""The segfolder dataset: images/ and class-index masks/ side by side, or binary masks listed in a CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from bench.datasets.segfolder import SegFolder
from bench.errors import DataError
from bench.types import VOID
from tests.test_voc import smooth_rgb, write_label_png

CLASSES = ["cat", "dog", "bird"]  # mask values 1, 2, 3


def masks() -> dict[str, np.ndarray]:
    a = np.zeros((8, 10), np.uint8)
    a[1:4, 1:5] = 1  # cat, 12 px
    a[5:8, 6:10] = 2  # dog, 12 px
    a[0, :] = 255  # void border
    b = np.zeros((6, 6), np.uint8)
    b[2:4, 2:4] = 3  # bird, 4 px
    return {"a": a, "b": b}


def make_folder(root: Path) -> Path:
    """root/images/<stem>.jpg|png and root/masks/<stem>.png (a palette PNG and a greyscale one)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for seed, (stem, mask) in enumerate(masks().items()):
        image = Image.fromarray(smooth_rgb(*mask.shape, seed))
        image.save(root / "images" / (f"{stem}.jpg" if stem == "a" else f"{stem}.png"))
        if stem == "a":
            write_label_png(root / "masks" / f"{stem}.png", mask)
        else:
            Image.fromarray(mask, mode="L").save(root / "masks" / f"{stem}.png")
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "data")


def folder(root: Path, **params) -> SegFolder:
    return SegFolder(SegFolder.Params(root=str(root), classes=params.pop("classes", CLASSES), **params))


def test_one_sample_per_image_and_class(root: Path) -> None:
    data = folder(root)
    data.check()
    refs = data.index("test")
    assert [(r.id, r.label) for r in refs] == [("a/cat", 0), ("a/dog", 1), ("b/bird", 2)]
    batch = data.load(refs, "test", image_size=(4, 5))
    assert batch.x.shape == (3, 3, 4, 5) and batch.mask.shape == (3, 1, 4, 5) and batch.skipped == []
    cat = batch.original_masks[0][0].numpy()
    expected = np.where(masks()["a"] == 1, 1, np.where(masks()["a"] == 255, VOID, 0))
    assert np.array_equal(cat, expected)
    assert torch.equal(batch.x[0], batch.x[1])  # one image, two samples
    assert int((batch.original_masks[2] == 1).sum()) == 4
    assert [r.id for r in folder(root, min_area=0.1).index("test")] == ["a/cat", "a/dog", "b/bird"]
    assert [r.id for r in folder(root, min_area=0.12).index("test")] == ["a/cat", "a/dog"]  # bird: 4/36


def test_explicit_values_background_and_no_ignore(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    mask = np.full((4, 4), 9, np.uint8)  # 9 is background here
    mask[:2, :2] = 40
    mask[2:, 2:] = 255  # an object in 0/255 style exports
    Image.fromarray(smooth_rgb(4, 4, 0)).save(root / "images" / "x.png")
    Image.fromarray(mask).save(root / "masks" / "x.png")
    data = folder(root, classes=["ball", "net"], values=[40, 255], background=9, ignore=None)
    batch = data.load(data.index("test"), "test")
    assert batch.ids == ["x/ball", "x/net"] and int((batch.original_masks[1] == 1).sum()) == 4
    with pytest.raises(ValidationError, match="equals the background or ignore value"):
        folder(root, classes=["ball"], values=[255])
    with pytest.raises(ValidationError, match="one distinct mask value per class"):
        folder(root, classes=["ball", "net"], values=[3])


def test_problems_are_counted_with_the_file(root: Path) -> None:
    (root / "masks" / "b.png").unlink()
    Image.fromarray(smooth_rgb(6, 6, 1)).save(root / "images" / "c.png")
    write_label_png(root / "masks" / "c.png", np.full((6, 6), 7, np.uint8))  # 7 is no class
    Image.fromarray(smooth_rgb(3, 3, 2)).save(root / "images" / "d.png")
    Image.fromarray(smooth_rgb(3, 3, 2)).save(root / "masks" / "d.png")  # an RGB mask
    Image.fromarray(smooth_rgb(3, 3, 2)).save(root / "images" / "e.jpg")
    Image.fromarray(smooth_rgb(3, 3, 2)).save(root / "images" / "e.png")  # two images, one stem
    write_label_png(root / "masks" / "orphan.png", np.zeros((3, 3), np.uint8))
    data = folder(root)
    with pytest.warns(UserWarning, match="5 images give no samples"):
        assert [r.id for r in data.index("test")] == ["a/cat", "a/dog"]
    problems = dict(data.index_problems("test"))
    assert problems["b"] == "masks/b.png: missing (the mask of images/b.png)"
    assert problems["c"].startswith("masks/c.png: values [7] are no class, background or ignore value")
    assert problems["d"] == "masks/d.png: a RGB image, not a class-index mask (one value per pixel)"
    assert problems["e"] == "images/e.jpg, images/e.png: several images share the stem 'e'"
    assert problems["orphan"] == "masks/orphan.png: no image images/orphan.*"


def test_unreadable_image_and_wrong_size_mask_are_skipped(root: Path) -> None:
    data = folder(root)
    refs = data.index("test")
    (root / "images" / "a.jpg").write_bytes(b"not a jpeg")
    write_label_png(root / "masks" / "b.png", np.full((5, 6), 3, np.uint8))
    batch = data.load(refs, "test")
    assert len(batch) == 0
    reasons = dict(batch.skipped)
    assert reasons["a/cat"].startswith("images/a.jpg: ") and reasons["a/dog"] == reasons["a/cat"]
    assert reasons["b/bird"] == "masks/b.png: mask is 6x5 but the image is 6x6"


def write_csv_layout(root: Path, rows: str) -> Path:
    """Binary object masks (0 background, 1 object, 255 void) and a CSV listing them."""
    (root / "objects").mkdir(parents=True)
    Image.fromarray(smooth_rgb(6, 8, 0)).save(root / "street.jpg")
    first = np.zeros((6, 8), np.uint8)
    first[1:3, 1:4] = 1
    first[0, :] = 255
    second = np.zeros((6, 8), np.uint8)
    second[3:6, 5:8] = 1
    Image.fromarray(first).save(root / "objects" / "street_1.png")
    Image.fromarray(second * 255).save(root / "objects" / "street_2.png")  # a 0/255 export
    path = root / "objects.csv"
    path.write_text(rows)
    return path


def test_csv_of_binary_masks(tmp_path: Path) -> None:
    root = tmp_path / "data"
    rows = "image,mask,label\nstreet.jpg,objects/street_1.png,cat\nstreet.jpg,objects/street_2.png,dog\n"
    csv_path = write_csv_layout(root, rows)
    data = folder(root, labels_csv=str(csv_path))
    data.check()
    refs = data.index("test")
    assert [(r.id, r.label) for r in refs] == [("objects/street_1.png", 0), ("objects/street_2.png", 1)]
    batch = data.load(refs, "test")
    # with ignore 255 the 0/255 mask is all void: skipped, and the reason says what to do
    assert batch.ids == ["objects/street_1.png"] and int((batch.original_masks[0] == 1).sum()) == 6
    assert int((batch.original_masks[0] == VOID).sum()) == 8
    assert batch.skipped == [("objects/street_2.png", "objects/street_2.png: no object pixels (masks stored as "
                                                      "0/255 need ignore: null)")]  # fmt: skip
    plain = folder(root, labels_csv=str(csv_path), ignore=None)
    both = plain.load(plain.index("test"), "test")
    assert len(both) == 2 and int((both.original_masks[1] == 1).sum()) == 9
    bigger = folder(root, labels_csv=str(csv_path), ignore=None, min_area=0.2).index("test")
    assert [r.id for r in bigger] == ["objects/street_1.png"]  # without ignore its 255 row is object: 14/48; 9/48


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("street.jpg,objects/street_1.png\n", "line 1: expected `image,mask,label`"),
        ("street.jpg,objects/street_1.png,cow\n", "line 1: label 'cow' is not one of the classes"),
        ("a,objects/street_1.png,cat\nb,objects/street_1.png,dog\n", "line 2: mask 'objects/street_1.png' is listed"),
    ],
)
def test_csv_rows_that_do_not_parse_name_the_line(tmp_path: Path, rows: str, message: str) -> None:
    csv_path = write_csv_layout(tmp_path / "data", rows)
    with pytest.raises(DataError) as err:
        folder(tmp_path / "data", labels_csv=str(csv_path)).index("test")
    assert str(csv_path) in err.value.problem and message in err.value.problem and err.value.field == "labels_csv"


def test_missing_folders_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        folder(tmp_path / "nothing").check()
    assert "nothing/images" in err.value.problem and err.value.field == "root"
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError) as err:
        folder(tmp_path / "data", labels_csv=str(tmp_path / "none.csv")).check()
    assert err.value.field == "labels_csv"


def test_problems_reach_the_run_manifest(root: Path, tmp_path: Path) -> None:
    """Images that give no samples are reported with the skipped samples, not only warned about."""
    import json

    from bench.cli import main
    from tests.conftest import write_suite

    (root / "masks" / "b.png").unlink()
    suite = {
        "name": "segfolder-tiny", "samples": None, "batch_size": 4, "device": "cpu", "warmup": False,
        "output": str(tmp_path / "run"),
        "datasets": [{"name": "segfolder", "params": {"root": str(root), "classes": CLASSES}}],
        "models": [{"name": "timm", "params": {"arch": "test_resnet", "pretrained": False, "num_classes": 3}}],
        "explainers": ["random"], "metrics": [{"name": "iou", "params": {"threshold": "mask_size"}}],
    }  # fmt: skip
    with pytest.warns(UserWarning, match="1 images give no samples"):
        assert main(["run", str(write_suite(tmp_path, suite)), "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["unreadable_samples"]["segfolder/timm"] == [
        ["b", "masks/b.png: missing (the mask of images/b.png)"]
    ]
