"""voc2012 with ``ground_truth: box``: VOC's detection XML (written here exactly as VOC writes it) as filled masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.datasets.boxes import Box, box_mask, from_coco, from_voc, union_area
from bench.datasets.voc import VOC2012
from bench.errors import DataError
from bench.types import VOID
from tests.test_voc import smooth_rgb

# image id -> (height, width, [(class, xmin, ymin, xmax, ymax, difficult)]) in VOC's 1-based inclusive pixels
IMAGES = {
    "2007_000001": (10, 12, [("dog", 2, 3, 5, 6, 0), ("dog", 4, 5, 9, 9, 0), ("person", 10, 1, 12, 10, 1)]),
    "2007_000002": (8, 8, [("cat", 1, 1, 8, 4, 0), ("cat", 6, 6, 7, 7, 1)]),
    "2007_000003": (6, 9, [("car", 1, 1, 3, 3, 0), ("bus", 4.0, 2.0, 9.0, 6.0, 0)]),  # VOC writes decimals too
}
SPLITS = {"train": ["2007_000001", "2007_000002"], "test": ["2007_000003"], "trainval": list(IMAGES)}


def voc_xml(image_id: str, height: int, width: int, objects: list[tuple]) -> str:
    """An annotation in VOC's own layout (tab-indented, with the fields VOC 2007/2012 write)."""
    parts = [
        "<annotation>",
        "\t<folder>VOC2007</folder>",
        f"\t<filename>{image_id}.jpg</filename>",
        "\t<source>\n\t\t<database>The VOC2007 Database</database>\n\t\t<annotation>PASCAL VOC2007</annotation>"
        "\n\t\t<image>flickr</image>\n\t</source>",
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for name, xmin, ymin, xmax, ymax, difficult in objects:
        parts += [
            "\t<object>",
            f"\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>",
            f"\t\t<difficult>{difficult}</difficult>",
            f"\t\t<bndbox>\n\t\t\t<xmin>{xmin}</xmin>\n\t\t\t<ymin>{ymin}</ymin>\n\t\t\t<xmax>{xmax}</xmax>"
            f"\n\t\t\t<ymax>{ymax}</ymax>\n\t\t</bndbox>",
            "\t</object>",
        ]
    return "\n".join([*parts, "</annotation>"]) + "\n"


def make_voc2007(base: Path) -> Path:
    """A VOC 2007 devkit (no segmentation at all): JPEGImages, Annotations, ImageSets/Main."""
    voc = base / "VOCdevkit" / "VOC2007"
    for part in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / part).mkdir(parents=True)
    for seed, (image_id, (h, w, objects)) in enumerate(IMAGES.items()):
        Image.fromarray(smooth_rgb(h, w, seed)).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
        (voc / "Annotations" / f"{image_id}.xml").write_text(voc_xml(image_id, h, w, objects))
    for split, ids in SPLITS.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return base


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_voc2007(tmp_path)


def boxes(root: Path, **params) -> VOC2012:
    return VOC2012(VOC2012.Params(root=str(root), ground_truth="box", **params))


# ---------------------------------------------------------------- box arithmetic


def test_voc_and_coco_coordinates_become_exact_pixels() -> None:
    assert from_voc(1, 1, 3, 2) == Box(0, 0, 3, 2)  # columns 1..3, rows 1..2 (1-based, inclusive)
    assert from_voc(273.4, 10.6, 280.5, 20) == Box(272, 10, 280, 20)
    assert from_coco([0.0, 0.0, 3.0, 2.0]) == Box(0, 0, 3, 2)
    assert from_coco([1.5, 2.2, 2.0, 0.1]) == Box(1, 2, 4, 3)  # every pixel the box touches
    assert Box(-2, 1, 20, 3).clipped(4, 5) == Box(0, 1, 5, 3)
    assert union_area([Box(0, 0, 2, 2), Box(1, 1, 3, 3)], (4, 4)) == 7


def test_box_mask_object_void_and_largest() -> None:
    a, b, hard = Box(0, 0, 2, 2), Box(2, 1, 5, 4), Box(1, 1, 3, 3)
    mask = box_mask([a, b], [hard], (4, 5))
    assert (mask[0:2, 0:2] == 1).all() and (mask[1:4, 2:5] == 1).all()
    assert mask[2, 1] == VOID and mask[0, 2] == 0 and mask[3, 0] == 0  # void only outside the objects
    largest = box_mask([a, b], [], (4, 5), largest_only=True)
    assert int((largest == 1).sum()) == 9 and (largest[0:2, 0:2] == VOID).all()
    twins = box_mask([a, a], [], (4, 5), largest_only=True)  # identical boxes: one is the object
    assert int((twins == 1).sum()) == 4


# ---------------------------------------------------------------- the dataset


def test_voc2007_root_with_boxes_only(root: Path) -> None:
    data = boxes(root, split="trainval")
    data.check()
    assert data.voc_dir() == root / "VOCdevkit" / "VOC2007"
    refs = data.index("trainval")
    # the person is difficult only: no sample; a class counts when one of its objects is not difficult
    assert [r.id for r in refs] == ["2007_000001/dog", "2007_000002/cat", "2007_000003/bus", "2007_000003/car"]
    assert data.index_problems("trainval") == []
    assert [r.id for r in boxes(root, split="test").index("test")] == ["2007_000003/bus", "2007_000003/car"]


def test_boxes_become_filled_masks_with_difficult_ones_void(root: Path) -> None:
    data = boxes(root, split="train")
    batch = data.load(data.index("train"), "train", image_size=(10, 12))
    dog = batch.original_masks[0][0].numpy()
    expected = np.zeros((10, 12), np.uint8)
    expected[2:6, 1:5] = 1  # xmin 2..xmax 5, ymin 3..ymax 6 (1-based, inclusive)
    expected[4:9, 3:9] = 1
    assert np.array_equal(dog, expected)  # the difficult person is another class: background here
    cat = batch.original_masks[1][0].numpy()
    assert cat.shape == (8, 8) and int((cat == 1).sum()) == 32 and (cat[5:7, 5:7] == VOID).all()
    assert batch.mask.shape == (2, 1, 10, 12) and batch.skipped == []


def test_largest_box_and_area_filters(root: Path) -> None:
    data = boxes(root, split="train", instance_masks=True)
    dog = data.load(data.index("train")[:1], "train").original_masks[0][0].numpy()
    assert int((dog == 1).sum()) == 30 and int((dog == VOID).sum()) == 16 - 4  # the smaller dog, less the overlap
    # areas: dog union 42/120 = 0.35 (largest 30/120), cat 32/64, car 9/54, bus 30/54
    ids = [r.id for r in boxes(root, split="trainval", min_area=0.3).index("trainval")]
    assert ids == ["2007_000001/dog", "2007_000002/cat", "2007_000003/bus"]
    largest = boxes(root, split="trainval", min_area=0.3, instance_masks=True).index("trainval")
    assert [r.id for r in largest] == ["2007_000002/cat", "2007_000003/bus"]
    single = boxes(root, split="trainval", single_class_only=True).index("trainval")
    assert [r.id for r in single] == ["2007_000001/dog", "2007_000002/cat"]  # the difficult person does not count


def test_box_identity_differs_and_mask_identity_is_unchanged(root: Path) -> None:
    mask = VOC2012(VOC2012.Params(root=str(root))).content_identity()
    assert "ground_truth" not in mask["params"] and "label_map" not in mask["params"]
    assert boxes(root).content_identity()["params"]["ground_truth"] == "box"


# ---------------------------------------------------------------- problems


def annotation(root: Path, image_id: str) -> Path:
    return root / "VOCdevkit" / "VOC2007" / "Annotations" / f"{image_id}.xml"


def test_missing_annotation_is_a_counted_problem(root: Path) -> None:
    annotation(root, "2007_000002").unlink()
    data = boxes(root, split="train")
    with pytest.warns(UserWarning, match="1 images give no samples"):
        assert [r.id for r in data.index("train")] == ["2007_000001/dog"]
    assert data.index_problems("train") == [("2007_000002", "Annotations/2007_000002.xml: missing")]


def test_malformed_annotation_is_an_error_naming_file_and_line(root: Path) -> None:
    path = annotation(root, "2007_000002")
    path.write_text(path.read_text().replace("</size>", "</sise>"))
    with pytest.raises(DataError) as err:
        boxes(root, split="train").index("train")
    assert str(path) in err.value.problem and "does not parse: mismatched tag: line 13" in err.value.problem


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("<name>cat</name>", "<name>kitten</name>", "object 1 (kitten): 'kitten' is not a VOC class"),
        ("<xmax>8</xmax>", "<xmax>eight</xmax>", "object 1 (cat): <xmax> is 'eight', not a number"),
        ("<xmax>8</xmax>", "", "object 1 (cat): no <xmax>"),
        ("<xmin>1</xmin>\n\t\t\t<ymin>1</ymin>\n\t\t\t<xmax>8</xmax>", "<xmin>9</xmin><ymin>1</ymin><xmax>8</xmax>",
         "the box ends before it starts"),
    ],
)  # fmt: skip
def test_annotation_fields_that_do_not_parse_name_the_object(root: Path, old: str, new: str, message: str) -> None:
    path = annotation(root, "2007_000002")
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(DataError) as err:
        boxes(root, split="train").index("train")
    assert str(path) in err.value.problem and message in err.value.problem


def test_annotation_size_that_differs_from_the_image_is_skipped(root: Path) -> None:
    path = annotation(root, "2007_000002")
    path.write_text(path.read_text().replace("<height>8</height>", "<height>9</height>"))
    data = boxes(root, split="train")
    batch = data.load(data.index("train"), "train")
    assert batch.ids == ["2007_000001/dog"]
    assert batch.skipped == [("2007_000002/cat", "Annotations/2007_000002.xml: <size> is 8x9 but the image is 8x8")]


def test_zero_size_in_the_annotation_falls_back_to_the_image(root: Path) -> None:
    path = annotation(root, "2007_000002")
    path.write_text(path.read_text().replace("<width>8</width>", "<width>0</width>"))
    data = boxes(root, split="train")
    batch = data.load(data.index("train"), "train")
    assert batch.skipped == [] and batch.original_masks[1].shape == (1, 8, 8)


def test_layout_errors_name_the_missing_folder(root: Path) -> None:
    with pytest.raises(DataError) as err:
        VOC2012(VOC2012.Params(root=str(root), split="train")).check()  # masks wanted: VOC 2007 here has none
    assert "SegmentationClass" in err.value.problem and err.value.field == "root"
    (root / "VOCdevkit" / "VOC2007" / "Annotations").rename(root / "elsewhere")
    with pytest.raises(DataError) as err:
        boxes(root, split="train").check()
    assert "Annotations" in err.value.problem and err.value.field == "ground_truth"


# ---------------------------------------------------------------- cross-check with torchvision's parser


def test_boxes_match_torchvisions_voc_detection_parser(root: Path) -> None:
    from torchvision.datasets import VOCDetection

    reference = VOCDetection(str(root), year="2007", image_set="trainval", download=False)
    data = boxes(root, split="trainval")
    batch = data.load(data.index("trainval"), "trainval")
    originals = dict(zip(batch.ids, batch.original_masks, strict=True))
    for (image, target), image_id in zip(reference, SPLITS["trainval"], strict=True):
        objects = target["annotation"]["object"]
        for name in {o["name"] for o in objects if o["difficult"] == "0"}:
            expected = np.zeros((image.height, image.width), np.uint8)
            for o in objects:
                if o["name"] == name:
                    b = {k: round(float(v)) for k, v in o["bndbox"].items()}
                    value = VOID if o["difficult"] == "1" else 1
                    region = expected[b["ymin"] - 1 : b["ymax"], b["xmin"] - 1 : b["xmax"]]
                    region[region != 1] = value
            assert np.array_equal(originals[f"{image_id}/{name}"][0].numpy(), expected), (image_id, name)
