"""The coco dataset on instances JSON written here in COCO's exact format: polygons, RLE (both kinds), crowds, boxes."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from bench.cli import main
from bench.datasets.coco import COCO
from bench.datasets.label_maps import COCO_IMAGENET
from bench.errors import ConfigError, DataError
from bench.store import read_results
from bench.types import VOID
from tests.conftest import write_suite
from tests.test_voc import smooth_rgb

PERSON, DOG, ELEPHANT = 1, 18, 22  # COCO 2017 category ids


def elephant_pixels() -> np.ndarray:
    """An irregular blob that COCO stores as compressed RLE."""
    mask = np.zeros((20, 30), np.uint8)
    mask[4:15, 10:25] = 1
    mask[4:8, 10:14] = 0
    return mask


def crowd_rle() -> dict[str, Any]:
    """An uncompressed RLE (what COCO uses for iscrowd=1): column-major run lengths starting with zeros."""
    mask = np.zeros((20, 30), np.uint8)
    mask[0:6, 0:8] = 1
    runs, flat, current, length = [], mask.flatten(order="F"), 0, 0
    for value in flat:
        if value == current:
            length += 1
        else:
            runs.append(length)
            current, length = value, 1
    runs.append(length)
    return {"counts": runs, "size": [20, 30]}


def coco_json() -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(elephant_pixels()))
    rle["counts"] = rle["counts"].decode("ascii")
    return {
        "info": {"description": "xbench test"},
        "licenses": [],
        "images": [
            {"id": 7, "file_name": "000000000007.jpg", "height": 20, "width": 30, "license": 1},
            {"id": 3, "file_name": "000000000003.jpg", "height": 20, "width": 30},
            {"id": 9, "file_name": "000000000009.jpg", "height": 24, "width": 16},
        ],
        "annotations": [
            # image 3: two dogs (polygons; the second has two parts), a person, a crowd of people
            {"id": 101, "image_id": 3, "category_id": DOG, "iscrowd": 0, "area": 36.0, "bbox": [2.0, 2.0, 6.0, 6.0],
             "segmentation": [[2.0, 2.0, 8.0, 2.0, 8.0, 8.0, 2.0, 8.0]]},
            {"id": 102, "image_id": 3, "category_id": DOG, "iscrowd": 0, "area": 56.0, "bbox": [12.5, 10.0, 14.0, 8.0],
             "segmentation": [[12.5, 10.0, 20.0, 10.0, 20.0, 18.0, 12.5, 18.0],
                              [22.0, 10.0, 26.5, 10.0, 26.5, 14.0, 22.0, 14.0]]},
            {"id": 103, "image_id": 3, "category_id": PERSON, "iscrowd": 0, "area": 20.0, "bbox": [24.0, 0.0, 4.0, 5.0],
             "segmentation": [[24.0, 0.0, 28.0, 0.0, 28.0, 5.0, 24.0, 5.0]]},
            {"id": 104, "image_id": 3, "category_id": PERSON, "iscrowd": 1, "area": 48.0, "bbox": [0.0, 0.0, 8.0, 6.0],
             "segmentation": crowd_rle()},
            # image 7: an elephant (compressed RLE); image 9: only a crowd of people (no sample)
            {"id": 201, "image_id": 7, "category_id": ELEPHANT, "iscrowd": 0, "area": float(elephant_pixels().sum()),
             "bbox": [10.0, 4.0, 15.0, 11.0], "segmentation": rle},
            {"id": 301, "image_id": 9, "category_id": PERSON, "iscrowd": 1, "area": 48.0, "bbox": [0.0, 0.0, 8.0, 6.0],
             "segmentation": {"counts": [*crowd_rle()["counts"][:1], 24 * 16 - crowd_rle()["counts"][0]],
                              "size": [24, 16]}},
        ],
        "categories": [
            {"supercategory": "animal", "id": ELEPHANT, "name": "elephant"},
            {"supercategory": "person", "id": PERSON, "name": "person"},
            {"supercategory": "animal", "id": DOG, "name": "dog"},
        ],
    }  # fmt: skip


def make_coco(base: Path, data: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """(image folder, annotation file) in COCO's layout."""
    images, annotations = base / "val2017", base / "annotations"
    images.mkdir(parents=True, exist_ok=True)
    annotations.mkdir(exist_ok=True)
    data = data or coco_json()
    for seed, image in enumerate(data["images"]):
        rgb = smooth_rgb(image["height"], image.get("width", 30), seed)
        Image.fromarray(rgb).save(images / image["file_name"], quality=95)
    path = annotations / "instances_val2017.json"
    path.write_text(json.dumps(data))
    return images, path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return make_coco(tmp_path)


def coco(files: tuple[Path, Path], **params) -> COCO:
    return COCO(COCO.Params(root=str(files[0]), annotations=str(files[1]), **params))


def reference_masks(path: Path, image_id: int, category: int) -> tuple[np.ndarray, np.ndarray]:
    """(union of instances, union of crowds) of a category in an image, by pycocotools' own COCO API."""
    from pycocotools.coco import COCO as Reference

    ref = Reference(str(path))
    anns = ref.loadAnns(ref.getAnnIds(imgIds=[image_id], catIds=[category], iscrowd=None))
    info = ref.loadImgs([image_id])[0]
    plain, crowd = np.zeros((info["height"], info["width"]), bool), np.zeros((info["height"], info["width"]), bool)
    for ann in anns:
        (crowd if ann["iscrowd"] else plain)[ref.annToMask(ann).astype(bool)] = True
    return plain, crowd


# ---------------------------------------------------------------- index


def test_one_sample_per_image_and_category(files: tuple[Path, Path]) -> None:
    data = coco(files)
    data.check()
    assert data.classes == ("person", "dog", "elephant")  # ordered by category id
    refs = data.index("test")
    assert [r.id for r in refs] == ["000000000003.jpg/person", "000000000003.jpg/dog", "000000000007.jpg/elephant"]
    assert [r.label for r in refs] == [0, 1, 2]  # image 9 holds only a crowd: no sample
    subset = coco(files, categories=["elephant", "dog"])
    assert subset.classes == ("elephant", "dog")
    assert [(r.id, r.label) for r in subset.index("test")] == [
        ("000000000003.jpg/dog", 1),
        ("000000000007.jpg/elephant", 0),
    ]


def test_min_area_and_largest_instance(files: tuple[Path, Path]) -> None:
    # areas: person 20/600, dogs (36 + 56)/600 = 0.153 (largest 56/600 = 0.093), elephant 137/600
    assert [r.id for r in coco(files, min_area=0.1).index("test")] == [
        "000000000003.jpg/dog",
        "000000000007.jpg/elephant",
    ]
    assert [r.id for r in coco(files, min_area=0.1, largest_instance=True).index("test")] == [
        "000000000007.jpg/elephant"
    ]
    # box areas: the dogs' 6 x 6 and 15 x 8 pixels (x 12.5 .. 26.5 touches 15 columns) = 156/600, elephant 165/600
    boxes = coco(files, ground_truth="box", min_area=0.26).index("test")
    assert [r.id for r in boxes] == ["000000000003.jpg/dog", "000000000007.jpg/elephant"]
    boxes = coco(files, ground_truth="box", min_area=0.27).index("test")
    assert [r.id for r in boxes] == ["000000000007.jpg/elephant"]


def test_unknown_categories_are_named(files: tuple[Path, Path]) -> None:
    with pytest.raises(DataError) as err:
        coco(files, categories=["dgo"]).check()
    assert "no categories ['dgo']" in err.value.problem and "did you mean dog" in err.value.problem
    assert err.value.field == "categories"


# ---------------------------------------------------------------- masks


def test_masks_equal_pycocotools_reference(files: tuple[Path, Path]) -> None:
    data = coco(files)
    batch = data.load(data.index("test"), "test", image_size=(10, 15))
    originals = dict(zip(batch.ids, batch.original_masks, strict=True))
    for sample_id, image_id, category in [
        ("000000000003.jpg/person", 3, PERSON),
        ("000000000003.jpg/dog", 3, DOG),
        ("000000000007.jpg/elephant", 7, ELEPHANT),
    ]:
        plain, crowd = reference_masks(files[1], image_id, category)
        mask = originals[sample_id][0].numpy()
        assert np.array_equal(mask == 1, plain), sample_id
        assert np.array_equal(mask == VOID, crowd & ~plain), sample_id  # crowds of its category are void
    assert np.array_equal(originals["000000000007.jpg/elephant"][0].numpy(), elephant_pixels())
    assert int((originals["000000000003.jpg/person"] == VOID).sum()) == 48
    assert batch.x.shape == (3, 3, 10, 15) and batch.mask.shape == (3, 1, 10, 15) and batch.skipped == []
    assert torch.equal(batch.x[0], batch.x[1])  # two samples, one image


def test_largest_instance_voids_the_others(files: tuple[Path, Path]) -> None:
    data = coco(files, largest_instance=True)
    dog = data.load(data.index("test")[1:2], "test").original_masks[0][0].numpy()
    first, _ = reference_masks(files[1], 3, DOG)
    assert int((dog == 1).sum()) > 36  # the two-part dog (area 56) is the object, the 6 x 6 one void
    assert (dog[2:8, 2:8] == VOID).all() and not (dog[2:8, 2:8] == 1).any()
    assert np.array_equal((dog == 1) | (dog == VOID), first)


def test_boxes_are_filled_and_crowd_boxes_void(files: tuple[Path, Path]) -> None:
    data = coco(files, ground_truth="box")
    batch = data.load(data.index("test"), "test")
    person, dog, _ = (m[0].numpy() for m in batch.original_masks)
    assert (person[0:5, 24:28] == 1).all() and int((person == 1).sum()) == 20
    assert (person[0:6, 0:8] == VOID).all()
    expected = np.zeros((20, 30), np.uint8)
    expected[2:8, 2:8] = 1
    expected[10:18, 12:27] = 1  # x 12.5 .. 26.5 touches columns 12..26
    assert np.array_equal(dog, expected)


# ---------------------------------------------------------------- problems


def test_missing_and_wrong_size_images_are_skipped(files: tuple[Path, Path]) -> None:
    (files[0] / "000000000007.jpg").unlink()
    Image.fromarray(smooth_rgb(20, 31, 0)).save(files[0] / "000000000003.jpg")
    data = coco(files)
    batch = data.load(data.index("test"), "test")
    assert len(batch) == 0 and batch.x.shape == (0, 3, 224, 224)
    assert dict(batch.skipped) == {
        "000000000003.jpg/person": "000000000003.jpg: the annotations say 30x20 but the image is 31x20",
        "000000000003.jpg/dog": "000000000003.jpg: the annotations say 30x20 but the image is 31x20",
        "000000000007.jpg/elephant": "000000000007.jpg: missing",
    }


def _broken(mutate) -> dict[str, Any]:
    data = copy.deepcopy(coco_json())
    mutate(data)
    return data


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["annotations"][0].update(image_id=99), "annotation 101: image_id 99 is not in `images`"),
        (lambda d: d["annotations"][1].update(category_id=5), "annotation 102: category_id 5 is not in `categories`"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "annotation 101: `bbox` must be [x, y, width, height]"),
        (lambda d: d["annotations"][0]["segmentation"][0].pop(), "annotation 101: a polygon has an odd number"),
        (lambda d: d["annotations"][4]["segmentation"].update(size=[30, 20]), "annotation 201: RLE size [30, 20]"),
        (lambda d: d["annotations"][0].update(iscrowd=2), "annotation 101: `iscrowd` is 2"),
        (lambda d: d["images"][1].pop("width"), "images[1]: `width` is None, not an integer"),
        (lambda d: d.pop("categories"), "`categories` must be a non-empty list"),
    ],
)
def test_annotations_that_do_not_parse_name_the_entry(tmp_path: Path, mutate, message: str) -> None:
    files = make_coco(tmp_path, _broken(mutate))
    with pytest.raises(DataError) as err:
        coco(files).check()
    assert str(files[1]) in err.value.problem and message in err.value.problem and err.value.field == "annotations"


def test_invalid_json_names_line_and_column(files: tuple[Path, Path]) -> None:
    files[1].write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=r"is not valid JSON: .*line 2 column 12"):
        coco(files).check()


def test_missing_paths_and_package(files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError) as err:
        COCO(COCO.Params(root=str(files[0]), annotations=str(tmp_path / "nope.json"))).check()
    assert "nope.json" in err.value.problem and err.value.field == "annotations"
    with pytest.raises(DataError) as err:
        COCO(COCO.Params(root=str(tmp_path / "no-images"), annotations=str(files[1]))).check()
    assert err.value.field == "root" and "no-images" in err.value.problem
    with pytest.raises(DataError) as err:
        COCO(COCO.Params(root=str(tmp_path / "no-images"), annotations=str(tmp_path / "nope.json"))).check()
    assert "no-images" in err.value.problem and "nope.json" in err.value.problem
    assert COCO(COCO.Params(root="x", annotations=str(tmp_path / "nope.json"))).classes == ()
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    with pytest.raises(ConfigError, match=r"pip install \"xbench\[coco\]\""):
        coco(files).check()


# ---------------------------------------------------------------- label maps and a run


def test_coco_categories_map_to_imagenet(files: tuple[Path, Path], tmp_path: Path) -> None:
    assert coco(files).class_sets("imagenet1k") == [(), COCO_IMAGENET["dog"], COCO_IMAGENET["elephant"]]
    custom = _broken(lambda d: d["categories"][0].update(name="mammoth"))
    other = make_coco(tmp_path / "custom", custom)
    assert coco(other).class_sets("imagenet1k") is None  # not COCO's categories: bring a label_map
    label_map = tmp_path / "map.csv"
    label_map.write_text("mammoth,African elephant\ndog,Chihuahua\n")
    sets = coco(other, label_map=str(label_map)).class_sets("imagenet1k")
    assert sets == [(), (151,), (386,)]


def test_a_coco_suite_runs_with_mapped_targets(files: tuple[Path, Path], tmp_path: Path) -> None:
    suite = {
        "name": "coco-tiny", "samples": None, "batch_size": 4, "device": "cpu", "warmup": False,
        "output": str(tmp_path / "run"), "target": "auto",
        "datasets": [{"name": "coco", "params": {"root": str(files[0]), "annotations": str(files[1])}}],
        "models": [{"name": "timm", "params": {"arch": "test_resnet", "pretrained": False}}],
        "explainers": ["gradcam"],
        "metrics": [{"name": "iou", "params": {"threshold": "mask_size"}},
                    {"name": "pointing_game", "params": {"resolution": "original"}}],
    }  # fmt: skip
    path = write_suite(tmp_path, suite)
    assert main(["run", str(path), "--no-progress"]) == 0
    df = read_results(tmp_path / "run")
    person = df[df["sample_id"] == "000000000003.jpg/person"]
    assert (person["status"] == "skipped").all()
    assert person["message"].str.contains("ImageNet-1k has no person class").all()
    scored = df[df["sample_id"] != "000000000003.jpg/person"]
    assert len(scored) == 4 and (scored["status"] == "ok").all()
