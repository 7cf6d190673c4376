"""The file-based datasets: `imagefolder` (root/<class>/<image>) and `imagelist` (one folder and a CSV).

Fixtures are PNGs written by PIL (lossless, so pixels round-trip exactly); the
real-data tests read the CIFAR-10 JPEG test set and 200 training PNGs from
../shared/data and are skipped where it is absent.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
import torch
from PIL import Image

from bench.datasets.base import stratified_sample
from bench.datasets.cifar10 import CLASSES as CIFAR_CLASSES
from bench.datasets.image_io import read_image
from bench.datasets.imagefolder import ImageFolder, ImageFolderParams
from bench.datasets.imagelist import ImageList, ImageListParams
from bench.errors import DataError
from tests.conftest import SHARED_DATA


def colour(label: int, i: int) -> tuple[int, int, int]:
    """A distinct RGB value per (class, image), so that a pixel identifies its file."""
    return (10 + 40 * label, 5 + 17 * i, 200 - 3 * i)


def write_png(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> None:
    """A (H, W) = size PNG of one colour, with pixel (0, 0) set to (255, 0, 0) to pin the orientation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.empty((*size, 3), dtype=np.uint8)
    array[...] = rgb
    array[0, 0] = (255, 0, 0)
    Image.fromarray(array).save(path)


def make_folder(root: Path, counts: dict[str, int]) -> Path:
    """root/<class>/<i>.png for each class (label = position in ``counts``)."""
    for label, (cls, n) in enumerate(counts.items()):
        for i in range(n):
            write_png(root / cls / f"{i}.png", colour(label, i))
    return root


def folder(root: Path, **params: Any) -> ImageFolder:
    return ImageFolder(ImageFolderParams(root=str(root), **params))


# --- imagefolder -----------------------------------------------------------------------------------------------


def test_pixels_labels_and_ids(tmp_path: Path) -> None:
    ds = folder(make_folder(tmp_path / "data", {"cat": 2, "dog": 3}))
    ds.check()
    refs = ds.index("test")
    assert ds.classes == ("cat", "dog") and ds.splits() == ("test",)
    assert [(r.id, r.label) for r in refs] == [
        ("cat/0.png", 0),
        ("cat/1.png", 0),
        ("dog/0.png", 1),
        ("dog/1.png", 1),
        ("dog/2.png", 1),
    ]
    batch = ds.load(refs, "test")
    assert batch.x.shape == (5, 3, 8, 6) and batch.x.dtype == torch.float32
    assert batch.label.tolist() == [0, 0, 1, 1, 1] and batch.ids == [r.id for r in refs] and batch.skipped == []
    r, g, b = colour(1, 2)  # dog/2.png
    assert batch.x[4, :, 3, 3].tolist() == [np.float32(v) / np.float32(255) for v in (r, g, b)]
    assert batch.x[4, :, 0, 0].tolist() == [1.0, 0.0, 0.0]  # top-left stays top-left (CHW, not transposed)


def test_configured_classes_define_label_order(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", {"cat": 1, "dog": 2, "emu": 1})
    ds = folder(root, classes=["emu", "dog", "cat"])
    ds.check()
    assert [(r.id, r.label) for r in ds.index("test")] == [
        ("emu/0.png", 0),
        ("dog/0.png", 1),
        ("dog/1.png", 1),
        ("cat/0.png", 2),
    ]
    # A subset of the folders is a smaller dataset: labels are positions in the configured list.
    assert [(r.id, r.label) for r in folder(root, classes=["dog"]).index("test")] == [
        ("dog/0.png", 0),
        ("dog/1.png", 0),
    ]
    with pytest.raises(pydantic.ValidationError, match="repeat"):
        ImageFolderParams(root=str(root), classes=["cat", "cat"])


def test_corrupt_files_are_skipped_and_reported(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", {"cat": 2, "dog": 2})
    (root / "cat" / "x.png").write_bytes(os.urandom(300))
    whole = (root / "dog" / "0.png").read_bytes()
    (root / "dog" / "0a.png").write_bytes(whole[: len(whole) // 2])  # a truncated PNG: the header parses
    (root / "dog" / "notes.txt").write_text("not an image")  # no image suffix: not a sample at all
    ds = folder(root)
    refs = ds.index("test")
    assert [r.id for r in refs] == ["cat/0.png", "cat/1.png", "cat/x.png", "dog/0.png", "dog/0a.png", "dog/1.png"]
    batch = ds.load(refs, "test")
    assert batch.ids == ["cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png"]
    assert batch.label.tolist() == [0, 0, 1, 1] and batch.x.shape == (4, 3, 8, 6)
    assert batch.x[3, 1, 2, 2].item() == np.float32(colour(1, 1)[1]) / np.float32(255)  # dog/1.png, aligned
    assert [sid for sid, _ in batch.skipped] == ["cat/x.png", "dog/0a.png"]
    for (_, reason), name in zip(batch.skipped, ["cat/x.png", "dog/0a.png"], strict=True):
        assert reason.startswith(f"cannot read {root / name}: ") and len(reason) > len(f"cannot read {root / name}: ")


def test_only_unreadable_files_give_an_empty_batch(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.png").write_bytes(b"\x89PNG nonsense")
    batch = folder(root).load(folder(root).index("test"), "test", image_size=(4, 4))
    assert len(batch) == 0 and batch.x.shape == (0, 3, 4, 4) and batch.label.shape == (0,)
    assert [sid for sid, _ in batch.skipped] == ["cat/a.png"]


def test_missing_root_and_class_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        folder(tmp_path / "absent").check()
    assert info.value.field == "root" and str(tmp_path / "absent") in str(info.value)
    root = make_folder(tmp_path / "data", {"cat": 1})
    with pytest.raises(DataError, match=r"lacks class folders \['dog'\]"):
        folder(root, classes=["cat", "dog"]).check()
    with pytest.raises(DataError, match="has no train split"):
        folder(root).index("train")


def test_train_root_is_a_second_split(tmp_path: Path) -> None:
    test_root = make_folder(tmp_path / "test", {"cat": 1, "dog": 1})
    train_root = make_folder(tmp_path / "train", {"cat": 3, "dog": 2})
    ds = folder(test_root, train_root=str(train_root))
    ds.check()
    assert ds.splits() == ("train", "test") and ds.eval_split == "test"
    assert len(ds.index("train")) == 5 and len(ds.index("test")) == 2
    assert ds.load(ds.index("train"), "train").label.tolist() == [0, 0, 0, 1, 1]


def test_sizes_must_agree_unless_resized(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", {"cat": 1})
    write_png(root / "cat" / "big.png", (1, 2, 3), size=(12, 10))
    ds = folder(root)
    with pytest.raises(DataError, match=r"differ in size .*cat/0\.png is 8x6, cat/big\.png is 12x10") as info:
        ds.load(ds.index("test"), "test")
    assert info.value.field == "image_size"
    assert folder(root, image_size=(5, 5)).load(ds.index("test"), "test").x.shape == (2, 3, 5, 5)
    resized = ds.load(ds.index("test"), "test", image_size=(16, 16)).x
    assert resized.shape == (2, 3, 16, 16) and resized.min() >= 0 and resized.max() <= 1
    # A uniform image stays uniform under bilinear resizing (align_corners=False, clamped).
    assert torch.allclose(resized[1, :, 4:, 4:], torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1) / 255)


def test_read_image_converts_to_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.full((3, 4), 51, dtype=np.uint8), mode="L").save(tmp_path / "grey.png")
    x = read_image(tmp_path / "grey.png")
    assert x.shape == (3, 3, 4) and x.dtype == torch.float32 and torch.all(x == np.float32(51) / np.float32(255))


# --- imagelist ---------------------------------------------------------------------------------------------------


def make_list(tmp_path: Path, rows: list[str], header: str | None = None) -> tuple[Path, Path]:
    """images/<name> for each ``name,label`` row that names a .png, and labels.csv with the rows."""
    images = tmp_path / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows):
        name, _, label = row.partition(",")
        if name.endswith(".png") and label in ("cat", "dog", "emu"):
            write_png(images / name, colour(("cat", "dog", "emu").index(label), i))
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("\n".join(([header] if header else []) + rows) + "\n")
    return images, csv_path


def image_list(images: Path, labels: Path, **params: Any) -> ImageList:
    params.setdefault("classes", ["cat", "dog", "emu"])
    return ImageList(ImageListParams(root=str(images), labels_csv=str(labels), **params))


ROWS = ["3.png,dog", "1.png,cat", "10.png,emu", "2.png,dog"]


@pytest.mark.parametrize("header", [None, "id,label", "file,class"])
def test_list_with_and_without_header(tmp_path: Path, header: str | None) -> None:
    ds = image_list(*make_list(tmp_path, ROWS, header))
    ds.check()
    refs = ds.index("test")
    assert [(r.id, r.label) for r in refs] == [("3.png", 1), ("1.png", 0), ("10.png", 2), ("2.png", 1)]
    batch = ds.load(refs, "test")
    assert batch.ids == ["3.png", "1.png", "10.png", "2.png"] and batch.label.tolist() == [1, 0, 2, 1]
    assert batch.x[2, 0, 1, 1].item() == np.float32(colour(2, 2)[0]) / np.float32(255)  # 10.png, written third


def test_list_header_param_overrides_detection(tmp_path: Path) -> None:
    images, labels = make_list(tmp_path, ROWS, header="id,label")
    assert len(image_list(images, labels, header=True).index("test")) == 4
    with pytest.raises(DataError, match=r"labels\.csv, line 1: label 'label' of 'id' is not one of the classes"):
        image_list(images, labels, header=False).index("test")
    # header: true drops the first row even when it is data
    images, labels = make_list(tmp_path / "plain", ROWS)
    assert [r.id for r in image_list(images, labels, header=True).index("test")] == ["1.png", "10.png", "2.png"]


def test_list_unknown_label_names_file_line_and_label(tmp_path: Path) -> None:
    images, labels = make_list(tmp_path, ["1.png,cat", "", "2.png,horse", "3.png,dog"], header="file,label")
    with pytest.raises(DataError) as info:
        image_list(images, labels).check()
    text = str(info.value)
    assert f"{labels}, line 4: label 'horse' of '2.png' is not one of the classes" in text  # blank line 3 counts
    assert info.value.field == "classes" and "cat, dog, emu" in text


def test_list_malformed_and_repeated_rows(tmp_path: Path) -> None:
    images, labels = make_list(tmp_path, ["1.png,cat", "2.png"])
    with pytest.raises(DataError, match=r"line 2: expected `file,label`"):
        image_list(images, labels).index("test")
    images, labels = make_list(tmp_path, ["1.png,cat", "1.png,dog"])
    with pytest.raises(DataError, match=r"line 2: '1\.png' is listed again \(first on line 1\)"):
        image_list(images, labels).index("test")
    labels.write_text("\n\n")
    with pytest.raises(DataError, match="lists no images"):
        image_list(images, labels).check()


def test_list_missing_folder_or_csv(tmp_path: Path) -> None:
    images, labels = make_list(tmp_path, ROWS)
    with pytest.raises(DataError) as info:
        image_list(tmp_path / "nope", labels).check()
    assert info.value.field == "root" and str(tmp_path / "nope") in str(info.value)
    with pytest.raises(DataError) as info:
        image_list(images, tmp_path / "nope.csv").check()
    assert info.value.field == "labels_csv" and str(tmp_path / "nope.csv") in str(info.value)


def test_list_skips_unreadable_images(tmp_path: Path) -> None:
    images, labels = make_list(tmp_path, [*ROWS, "x.png,cat", "gone.png,dog"])
    (images / "x.png").write_bytes(os.urandom(200))
    (images / "gone.png").unlink()  # listed in the CSV, deleted since
    ds = image_list(images, labels)
    batch = ds.load(ds.index("test"), "test")
    assert batch.ids == ["3.png", "1.png", "10.png", "2.png"] and batch.label.tolist() == [1, 0, 2, 1]
    assert [sid for sid, _ in batch.skipped] == ["x.png", "gone.png"]
    assert batch.skipped[1][1].startswith(f"cannot read {images / 'gone.png'}: ")


def test_list_params(tmp_path: Path) -> None:
    images, labels = make_list(tmp_path, ROWS)
    assert image_list(images, labels, classes="cat, dog,emu").classes == ("cat", "dog", "emu")
    with pytest.raises(pydantic.ValidationError, match="together"):
        image_list(images, labels, train_root=str(images))
    with pytest.raises(pydantic.ValidationError, match="repeat"):
        image_list(images, labels, classes=["cat", "cat"])
    with pytest.raises(DataError, match="no train split"):
        image_list(images, labels).index("train")


def test_list_train_split(tmp_path: Path) -> None:
    images, labels = make_list(tmp_path, ROWS)
    train_images, train_labels = make_list(tmp_path / "train", ["a.png,emu", "b.png,cat"])
    ds = image_list(images, labels, train_root=str(train_images), train_labels_csv=str(train_labels))
    ds.check()
    assert ds.splits() == ("train", "test") and ds.eval_split == "test"
    assert [(r.id, r.label) for r in ds.index("train")] == [("a.png", 2), ("b.png", 0)]
    assert ds.load(ds.index("train"), "train").x.shape == (2, 3, 8, 6)


# --- real data ---------------------------------------------------------------------------------------------------

CIFAR_JPEG = SHARED_DATA / "cifar10-test-jpeg" / "test"
CIFAR_PNG = SHARED_DATA / "cifar10-train200-png"


def needs(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.is_dir(), reason=f"real data {path} is absent (see ../shared/data/README.md)")


@pytest.mark.realdata
@needs(CIFAR_JPEG)
def test_real_cifar10_jpeg_test_set_via_imagefolder() -> None:
    from bench.datasets.cifar10 import CIFAR10, CIFAR10Params

    ds = folder(CIFAR_JPEG, classes=list(CIFAR_CLASSES))
    ds.check()
    refs = ds.index("test")
    assert len(refs) == 10000 and Counter(r.label for r in refs) == dict.fromkeys(range(10), 1000)
    assert ds.classes == CIFAR10(CIFAR10Params(root="unused")).classes  # the same label indices as `cifar10`
    cat = next(r for r in refs if r.id == "cat/0000.jpg")
    assert cat.label == 3 and all(r.label == 3 for r in refs if r.id.startswith("cat/"))
    sample = stratified_sample(refs, 10, seed=0)
    batch = ds.load(sample, "test")
    assert batch.x.shape == (10, 3, 32, 32) and batch.skipped == [] and sorted(batch.label.tolist()) == list(range(10))
    assert batch.x.min() >= 0 and batch.x.max() <= 1 and batch.x.std() > 0.05


@pytest.mark.realdata
@needs(CIFAR_PNG)
def test_real_cifar10_train_pngs_via_imagelist() -> None:
    csv_path = CIFAR_PNG / "trainLabels.csv"
    ds = ImageList(
        ImageListParams(root=str(CIFAR_PNG / "train"), labels_csv=str(csv_path), classes=list(CIFAR_CLASSES))
    )
    ds.check()
    refs = ds.index("test")
    with csv_path.open(newline="") as handle:
        expected = Counter(row[1] for row in csv.reader(handle) if row)
    assert len(refs) == 200 and Counter(CIFAR_CLASSES[r.label] for r in refs) == expected
    assert refs[0].id == "1.png" and refs[0].label == 6 == CIFAR_CLASSES.index("frog")
    batch = ds.load(refs, "test")
    assert batch.x.shape == (200, 3, 32, 32) and batch.skipped == [] and batch.label.tolist() == [r.label for r in refs]
    # Lossless PNG: every value is an exact multiple of 1/255.
    assert torch.equal((batch.x * 255).round() / 255, batch.x)
