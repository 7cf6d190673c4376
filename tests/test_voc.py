"""The voc2012 loader on a tiny VOCdevkit written in the exact layout, and on the real 333-image subset."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

import bench.datasets.voc as voc_module
from bench.datasets.voc import (
    VOC2012,
    VOC_CLASSES,
    classes_present,
    gt_areas,
    largest_instance,
    sample_mask,
)
from bench.errors import DataError
from bench.types import VOID, SampleRef
from tests.conftest import SHARED_DATA

REAL_ROOT = SHARED_DATA / "voc2012-train333"

CAR, PERSON, DOG, CAT, SHEEP, BIRD = 7, 15, 12, 8, 17, 3  # VOC indices (label + 1)
B = 255  # VOC's border value


def voc_palette() -> list[int]:
    """The VOC colour map (index i -> colour from its bits), as VOC's own PNGs carry it."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for bit in range(8):
            r |= (c & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def hand_made() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """image id -> (SegmentationClass, SegmentationObject) arrays, small enough to check by eye."""
    a_cls = np.zeros((8, 10), np.uint8)
    a_cls[0, 1:5] = B  # border above the big car
    a_cls[1:4, 1:5] = CAR  # car instance 1: 12 px
    a_cls[5:7, 6:9] = CAR  # car instance 2: 6 px
    a_cls[4, 0:3] = B
    a_cls[5:8, 0:3] = PERSON  # 9 px
    a_obj = np.zeros_like(a_cls)
    a_obj[1:4, 1:5], a_obj[5:7, 6:9], a_obj[5:8, 0:3] = 1, 2, 3
    a_obj[a_cls == B] = B

    b_cls = np.zeros((6, 6), np.uint8)
    b_cls[1:5, 1:5] = B
    b_cls[2:4, 2:4] = DOG  # 4 px inside a border ring
    b_obj = np.where(b_cls == DOG, 1, b_cls).astype(np.uint8)

    c_cls = np.zeros((10, 10), np.uint8)
    c_cls[0:2, 0:2] = CAT  # 4 px = 0.04
    c_cls[5:10, :] = SHEEP  # 50 px = 0.5
    c_obj = np.select([c_cls == CAT, c_cls == SHEEP], [1, 2], 0).astype(np.uint8)

    d_cls = np.zeros((4, 6), np.uint8)
    d_cls[:, :3] = BIRD  # 12 px = 0.5
    d_obj = (d_cls == BIRD).astype(np.uint8)
    return {
        "2008_000001": (a_cls, a_obj),
        "2008_000002": (b_cls, b_obj),
        "2008_000003": (c_cls, c_obj),
        "2008_000004": (d_cls, d_obj),
    }


SPLIT_IDS = {
    "train": ["2008_000001", "2008_000002"],
    "val": ["2008_000003", "2008_000004"],
    "trainval": ["2008_000001", "2008_000002", "2008_000003", "2008_000004"],
}


def write_label_png(path: Path, array: np.ndarray) -> None:
    """A palette ("P") PNG whose pixel indices are ``array``, as VOC stores its masks."""
    img = Image.fromarray(array)
    img.putpalette(voc_palette())
    assert img.mode == "P"
    img.save(path)


def smooth_rgb(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth colour image (so JPEG keeps it close to the original)."""
    yy, xx = np.mgrid[0:h, 0:w]
    phase = np.random.default_rng(seed).uniform(0, 6, 3)
    channels = [127 + 100 * np.sin(xx / (w / 2) + yy / (h / 3) + p) for p in phase]
    return np.stack(channels, -1).round().astype(np.uint8)


def make_voc(base: Path) -> Path:
    """A VOCdevkit in ``base`` in the official layout; returns ``base`` (the folder that holds VOCdevkit)."""
    voc = base / "VOCdevkit" / "VOC2012"
    for part in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (voc / part).mkdir(parents=True)
    for seed, (image_id, (cls, obj)) in enumerate(hand_made().items()):
        Image.fromarray(smooth_rgb(*cls.shape, seed)).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
        write_label_png(voc / "SegmentationClass" / f"{image_id}.png", cls)
        write_label_png(voc / "SegmentationObject" / f"{image_id}.png", obj)
    for split, ids in SPLIT_IDS.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return base


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_voc(tmp_path)


def dataset(root: Path, **params) -> VOC2012:
    return VOC2012(VOC2012.Params(root=str(root), **params))


def ids_of(refs: list[SampleRef]) -> list[str]:
    return [r.id for r in refs]


# ---------------------------------------------------------------- mask logic


def test_voc_indices_used_here() -> None:
    names = [VOC_CLASSES[i - 1] for i in (CAR, PERSON, DOG, CAT, SHEEP, BIRD)]
    assert names == ["car", "person", "dog", "cat", "sheep", "bird"]


def test_sample_mask_marks_object_background_and_void() -> None:
    cls, _ = hand_made()["2008_000001"]
    car = sample_mask(cls, CAR)
    assert car.dtype == np.uint8
    assert int((car == 1).sum()) == 18 and int((car == VOID).sum()) == 7 and int((car == 0).sum()) == 55
    assert np.array_equal(car == 1, cls == CAR) and np.array_equal(car == VOID, cls == B)
    person = sample_mask(cls, PERSON)
    assert int((person == 1).sum()) == 9 and np.array_equal(person == VOID, cls == B)


def test_instance_mask_keeps_the_largest_instance_and_voids_the_others() -> None:
    cls, obj = hand_made()["2008_000001"]
    assert largest_instance(cls, obj, CAR) == 1
    car = sample_mask(cls, CAR, obj)
    expected = np.zeros_like(cls)
    expected[1:4, 1:5] = 1
    expected[5:7, 6:9] = VOID  # the second car
    expected[cls == B] = VOID
    assert np.array_equal(car, expected)
    # ties go to the lowest instance id; a class without instances is an error
    tie_cls = np.full((2, 4), CAR, np.uint8)
    tie_obj = np.array([[4, 4, 2, 2], [0, 0, 0, 0]], np.uint8)
    tie_cls[1] = 0
    assert largest_instance(tie_cls, tie_obj, CAR) == 2
    with pytest.raises(ValueError, match="no instance"):
        largest_instance(cls, np.zeros_like(obj), CAR)


def test_classes_present_and_areas() -> None:
    cls, obj = hand_made()["2008_000001"]
    assert classes_present(cls) == (CAR, PERSON)
    assert gt_areas(cls) == pytest.approx({CAR: 18 / 80, PERSON: 9 / 80})
    assert gt_areas(cls, obj) == pytest.approx({CAR: 12 / 80, PERSON: 9 / 80})
    with pytest.raises(ValueError, match=r"outside 0\.\.20"):
        classes_present(np.array([[0, 21, 128]], np.uint8))


# ---------------------------------------------------------------- index


def test_one_sample_per_image_and_class(root: Path) -> None:
    data = dataset(root, split="train")
    refs = data.index("train")
    assert ids_of(refs) == ["2008_000001/car", "2008_000001/person", "2008_000002/dog"]
    assert [r.label for r in refs] == [6, 14, 11]
    assert [data.classes[r.label] for r in refs] == ["car", "person", "dog"]
    assert data.classes[0] == "aeroplane" and data.classes[19] == "tvmonitor" and len(data.classes) == 20
    assert ids_of(data.index("val")) == ["2008_000003/cat", "2008_000003/sheep", "2008_000004/bird"]
    assert len(data.index("trainval")) == 6
    assert data.splits() == ("train", "val", "trainval")
    assert VOC2012.has_masks and VOC2012.variable_size


def test_default_split_is_val_and_eval_split_follows_the_param(root: Path) -> None:
    assert dataset(root).eval_split == "val"
    assert dataset(root, split="trainval").eval_split == "trainval"


def test_index_is_deterministic_and_reads_each_mask_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[Path] = []
    real = voc_module.read_label_png
    monkeypatch.setattr(voc_module, "read_label_png", lambda path: reads.append(path) or real(path))
    data = dataset(root, split="trainval")
    first = data.index("trainval")
    assert len(reads) == 4
    assert data.index("trainval") == first and len(reads) == 4  # cached
    assert dataset(root, split="trainval").index("trainval") == first  # same on a fresh instance


def test_single_class_only(root: Path) -> None:
    refs = dataset(root, split="trainval", single_class_only=True).index("trainval")
    assert ids_of(refs) == ["2008_000002/dog", "2008_000004/bird"]


def test_min_area_uses_the_fraction_of_image_pixels(root: Path) -> None:
    def kept(**params) -> list[str]:
        return ids_of(dataset(root, split="trainval", **params).index("trainval"))

    assert kept(min_area=0.12) == ["2008_000001/car", "2008_000003/sheep", "2008_000004/bird"]
    everything_but_the_cat = ["2008_000001/car", "2008_000001/person", "2008_000002/dog", "2008_000003/sheep"]
    assert kept(min_area=0.1) == [*everything_but_the_cat, "2008_000004/bird"]
    assert kept(min_area=0.2) == ["2008_000001/car", "2008_000003/sheep", "2008_000004/bird"]
    # with instance masks the area is the largest instance's: 12/80 = 0.15 < 0.2
    assert kept(min_area=0.2, instance_masks=True) == ["2008_000003/sheep", "2008_000004/bird"]
    with pytest.raises(ValidationError):
        VOC2012.Params(root=str(root), min_area=1.0)
    with pytest.raises(ValidationError):
        VOC2012.Params(root=str(root), unknown=1)


@pytest.mark.parametrize("level", ["base", "VOCdevkit", "VOC2012"])
def test_root_may_point_at_any_of_the_three_levels(root: Path, level: str) -> None:
    given = {"base": root, "VOCdevkit": root / "VOCdevkit", "VOC2012": root / "VOCdevkit" / "VOC2012"}[level]
    data = dataset(given, split="train")
    data.check()
    assert data.voc_dir() == root / "VOCdevkit" / "VOC2012"
    assert ids_of(data.index("train")) == ["2008_000001/car", "2008_000001/person", "2008_000002/dog"]
    assert len(data.load(data.index("train"), "train")) == 3


# ---------------------------------------------------------------- load


def test_masks_at_original_size_equal_hand_made_expectations(root: Path) -> None:
    data = dataset(root, split="train")
    batch = data.load(data.index("train"), "train", image_size=(8, 10))
    cls_a, _ = hand_made()["2008_000001"]
    expected_car = np.where(cls_a == CAR, 1, np.where(cls_a == B, VOID, 0))
    assert batch.ids == ["2008_000001/car", "2008_000001/person", "2008_000002/dog"]
    assert batch.label.tolist() == [6, 14, 11]
    assert batch.mask is not None and batch.mask.shape == (3, 1, 8, 10) and batch.mask.dtype == torch.uint8
    assert np.array_equal(batch.mask[0, 0].numpy(), expected_car)
    assert int((batch.mask[1] == 1).sum()) == 9 and int((batch.mask[1] == VOID).sum()) == 7
    # the dog mask at its own resolution: 4 object pixels inside a 12-pixel void ring
    dog = batch.original_masks[2][0]
    assert dog.shape == (6, 6) and int((dog == 1).sum()) == 4 and int((dog == VOID).sum()) == 12
    # the image at its own size is the decoded JPEG, unchanged
    jpeg = np.asarray(Image.open(root / "VOCdevkit/VOC2012/JPEGImages/2008_000001.jpg"), np.float32) / 255
    assert batch.x.dtype == torch.float32
    assert np.allclose(batch.x[0].permute(1, 2, 0).numpy(), jpeg)
    assert torch.equal(batch.x[0], batch.x[1])  # two samples, one image


def test_resize_image_bilinear_and_mask_nearest(root: Path) -> None:
    data = dataset(root, split="train", image_size=(4, 5))
    batch = data.load(data.index("train"), "train")  # no size from the runner: the param
    assert batch.x.shape == (3, 3, 4, 5) and batch.mask.shape == (3, 1, 4, 5)
    assert float(batch.x.min()) >= 0 and float(batch.x.max()) <= 1
    voc = root / "VOCdevkit" / "VOC2012"
    for i, (image_id, voc_index) in enumerate([("2008_000001", CAR), ("2008_000001", PERSON), ("2008_000002", DOG)]):
        full = sample_mask(hand_made()[image_id][0], voc_index)
        pil_nearest = np.asarray(Image.fromarray(full).resize((5, 4), Image.NEAREST))
        assert np.array_equal(batch.mask[i, 0].numpy(), pil_nearest)
        assert set(batch.mask[i].unique().tolist()) <= {0, 1, VOID}
        with Image.open(voc / "JPEGImages" / f"{image_id}.jpg") as img:
            pil_bilinear = np.asarray(img.convert("RGB").resize((5, 4), Image.BILINEAR), np.float32) / 255
        # the same antialiased kernel as PIL's: only PIL's rounding to uint8 differs
        assert np.abs(batch.x[i].permute(1, 2, 0).numpy() - pil_bilinear).max() <= 1 / 255
    # an explicit size from the runner wins over the param, also when enlarging
    bigger = data.load(data.index("train")[:1], "train", image_size=(16, 20))
    assert bigger.x.shape == (1, 3, 16, 20) and bigger.mask.shape == (1, 1, 16, 20)
    assert int((bigger.mask == 1).sum()) == 18 * 4


def test_original_masks_keep_full_resolution(root: Path) -> None:
    data = dataset(root, split="trainval", image_size=(7, 7))
    batch = data.load(data.index("trainval"), "trainval")
    sizes = [(8, 10), (8, 10), (6, 6), (10, 10), (10, 10), (4, 6)]
    assert [tuple(m.shape) for m in batch.original_masks] == [(1, *hw) for hw in sizes]
    assert all(m.dtype == torch.uint8 and m.device.type == "cpu" for m in batch.original_masks)
    assert int((batch.original_masks[4] == 1).sum()) == 50  # the sheep
    assert batch.select([4]).original_masks[0] is batch.original_masks[4]
    plain = dataset(root, split="trainval", keep_original_masks=False)
    assert plain.load(plain.index("trainval"), "trainval").original_masks is None


def test_instance_masks_in_loaded_batches(root: Path) -> None:
    data = dataset(root, split="train", instance_masks=True)
    batch = data.load(data.index("train")[:1], "train", image_size=(8, 10))
    mask = batch.mask[0, 0].numpy()
    assert int((mask == 1).sum()) == 12 and (mask[5:7, 6:9] == VOID).all() and (mask[0, 1:5] == VOID).all()


def test_each_image_is_read_once_per_batch(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[Path] = []
    real = voc_module.read_image
    monkeypatch.setattr(voc_module, "read_image", lambda path: reads.append(path) or real(path))
    data = dataset(root, split="trainval")
    batch = data.load(data.index("trainval"), "trainval")
    assert len(batch) == 6 and len(reads) == 4


def test_corrupt_jpeg_and_wrong_size_mask_are_skipped_and_reported(root: Path) -> None:
    voc = root / "VOCdevkit" / "VOC2012"
    jpeg = voc / "JPEGImages" / "2008_000001.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:200])  # truncated
    write_label_png(voc / "SegmentationClass" / "2008_000003.png", np.zeros((7, 10), np.uint8) + CAT)
    data = dataset(root, split="trainval")
    refs = data.index("trainval")  # index reads masks only: the bad image still has samples
    assert len(refs) == 5
    batch = data.load(refs, "trainval", image_size=(4, 4))
    assert batch.ids == ["2008_000002/dog", "2008_000004/bird"]
    assert batch.label.tolist() == [11, 2] and batch.x.shape == (2, 3, 4, 4) and len(batch.original_masks) == 2
    reasons = dict(batch.skipped)
    assert list(reasons) == ["2008_000001/car", "2008_000001/person", "2008_000003/cat"]
    assert reasons["2008_000001/car"].startswith("JPEGImages/2008_000001.jpg: ")
    assert reasons["2008_000003/cat"] == "SegmentationClass/2008_000003.png: mask is 10x7 but the image is 10x10"


def test_missing_masks_are_reported_not_fatal(root: Path) -> None:
    voc = root / "VOCdevkit" / "VOC2012"
    data = dataset(root, split="train")
    refs = data.index("train")
    (voc / "SegmentationClass" / "2008_000002.png").unlink()  # gone after indexing
    batch = data.load(refs, "train")
    assert batch.skipped == [("2008_000002/dog", "SegmentationClass/2008_000002.png: missing")]
    assert len(batch) == 2
    fresh = dataset(root, split="train")  # missing before indexing: no samples, and it says why
    with pytest.warns(UserWarning, match="1 images give no samples"):
        assert ids_of(fresh.index("train")) == ["2008_000001/car", "2008_000001/person"]
    assert fresh.index_problems("train") == [("2008_000002", "SegmentationClass/2008_000002.png: missing")]


def test_all_samples_skipped_gives_an_empty_batch(root: Path) -> None:
    data = dataset(root, split="val")
    refs = data.index("val")
    shutil.rmtree(root / "VOCdevkit" / "VOC2012" / "JPEGImages")
    (root / "VOCdevkit" / "VOC2012" / "JPEGImages").mkdir()
    batch = data.load(refs, "val", image_size=(5, 6))
    assert len(batch) == 0 and batch.x.shape == (0, 3, 5, 6) and batch.mask.shape == (0, 1, 5, 6)
    assert len(batch.skipped) == 3 and all(r.endswith(": missing") for _, r in batch.skipped)


def test_rgb_coloured_mask_is_a_reported_problem(root: Path) -> None:
    path = root / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2008_000002.png"
    Image.open(path).convert("RGB").save(path)
    data = dataset(root, split="train")
    with pytest.warns(UserWarning):
        data.index("train")
    assert data.index_problems("train")[0][1].startswith("SegmentationClass/2008_000002.png: a RGB image")


# ---------------------------------------------------------------- layout errors


def test_missing_image_set_file_is_a_data_error_naming_it(root: Path) -> None:
    listing = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"
    listing.unlink()
    with pytest.raises(DataError) as err:
        dataset(root).check()
    assert str(listing) in err.value.problem and err.value.field == "root" and err.value.fix
    assert len(dataset(root, split="train").index("train")) == 3  # the other splits still work


@pytest.mark.parametrize("part", ["JPEGImages", "SegmentationClass"])
def test_missing_folder_is_a_data_error_naming_it(root: Path, part: str) -> None:
    shutil.rmtree(root / "VOCdevkit" / "VOC2012" / part)
    with pytest.raises(DataError) as err:
        dataset(root).index("val")
    assert str(root / "VOCdevkit" / "VOC2012" / part) in err.value.problem and err.value.field == "root"


def test_no_voc_folder_lists_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        dataset(tmp_path / "nowhere").check()
    for candidate in ("nowhere/VOCdevkit/VOC2012", "nowhere/VOC2012"):
        assert candidate in err.value.problem
    assert err.value.field == "root" and "download" in err.value.fix


def test_instance_masks_need_segmentation_object(root: Path) -> None:
    shutil.rmtree(root / "VOCdevkit" / "VOC2012" / "SegmentationObject")
    with pytest.raises(DataError) as err:
        dataset(root, instance_masks=True).check()
    assert "SegmentationObject" in err.value.problem and err.value.field == "instance_masks"


def test_failed_download_says_where_to_put_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    calls = []

    def offline(root: str, **kwargs) -> None:
        calls.append((root, kwargs))
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "VOCSegmentation", offline)
    with pytest.raises(DataError) as err:
        dataset(tmp_path, download=True).check()
    assert calls == [(str(tmp_path), {"year": "2012", "image_set": "val", "download": True})]
    assert "network unreachable" in err.value.problem and err.value.field == "download"
    assert str(tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages") in err.value.fix
    # data already there: nothing is downloaded
    make_voc(tmp_path)
    dataset(tmp_path, download=True).check()
    assert len(calls) == 1


def test_content_identity_ignores_split_and_download(root: Path) -> None:
    a = dataset(root, split="train").content_identity()
    assert a == dataset(root, split="val", download=True).content_identity()
    assert a != dataset(root, min_area=0.1).content_identity()


def test_class_sets_map_into_imagenet(root: Path) -> None:
    sets = dataset(root).class_sets("imagenet1k")
    assert sets is not None and len(sets) == 20
    assert sets[VOC_CLASSES.index("person")] == () and 404 in sets[0]  # airliner is an aeroplane


# ---------------------------------------------------------------- cross-check with torchvision's loader


def test_torchvision_reference_loader_reads_the_same_masks(root: Path) -> None:
    from torchvision.datasets import VOCSegmentation

    reference = VOCSegmentation(str(root), year="2012", image_set="trainval", download=False)
    data = dataset(root, split="trainval")
    refs = data.index("trainval")
    batch = data.load(refs, "trainval")
    assert len(reference) == 4
    originals = dict(zip(batch.ids, batch.original_masks, strict=True))
    for (image, target), image_id in zip(reference, SPLIT_IDS["trainval"], strict=True):
        raw = np.asarray(target)
        assert np.array_equal(raw, hand_made()[image_id][0])
        assert image.size == target.size
        for c in classes_present(raw):
            assert np.array_equal(originals[f"{image_id}/{VOC_CLASSES[c - 1]}"][0].numpy(), sample_mask(raw, c))


# ---------------------------------------------------------------- real data


def real_ids() -> list[str]:
    return (REAL_ROOT / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt").read_text().split()


realdata = pytest.mark.skipif(not REAL_ROOT.is_dir(), reason=f"real VOC subset not found at {REAL_ROOT}")


@pytest.mark.realdata
@realdata
def test_real_subset_indexes_every_image_and_class() -> None:
    voc = REAL_ROOT / "VOCdevkit" / "VOC2012"
    data = VOC2012(VOC2012.Params(root=str(REAL_ROOT), split="train"))
    data.check()
    refs = data.index("train")
    ids = real_ids()
    assert len(ids) == 333
    assert {r.id.rsplit("/", 1)[0] for r in refs} == set(ids)
    assert {r.label for r in refs} == set(range(20))
    assert data.index_problems("train") == []
    pairs = []
    for image_id in ids:  # independently: PIL + NumPy, no bench code
        with Image.open(voc / "SegmentationClass" / f"{image_id}.png") as mask:
            values = np.unique(np.asarray(mask))
            mask_size = mask.size
        with Image.open(voc / "JPEGImages" / f"{image_id}.jpg") as image:
            assert mask_size == image.size, image_id
        pairs += [f"{image_id}/{VOC_CLASSES[v - 1]}" for v in values if 1 <= v <= 20]
    assert sorted(ids_of(refs)) == sorted(pairs)
    assert len(refs) == len(pairs)


@pytest.mark.realdata
@realdata
def test_real_subset_loads_with_masks() -> None:
    data = VOC2012(VOC2012.Params(root=str(REAL_ROOT / "VOCdevkit"), split="train"))
    refs = data.index("train")[:6]
    batch = data.load(refs, "train")
    assert batch.skipped == [] and batch.x.shape == (6, 3, 224, 224) and batch.mask.shape == (6, 1, 224, 224)
    for mask, original in zip(batch.mask, batch.original_masks, strict=True):
        assert set(mask.unique().tolist()) <= {0, 1, VOID} and int((mask == 1).sum()) > 0
        assert int((original == 1).sum()) > 0


@pytest.mark.realdata
@realdata
def test_real_subset_has_no_instance_masks() -> None:
    with pytest.raises(DataError) as err:
        VOC2012(VOC2012.Params(root=str(REAL_ROOT), split="train", instance_masks=True)).check()
    assert "SegmentationObject" in err.value.problem
