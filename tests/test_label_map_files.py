"""Users' label maps (YAML and CSV): parsing, resolution against a model, errors naming file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from bench.datasets.imagefolder import ImageFolder, ImageFolderParams
from bench.datasets.imagenet import IMAGENET_CATEGORIES
from bench.datasets.label_map_files import read_label_map
from bench.datasets.label_maps import COCO_IMAGENET, VOC_IMAGENET
from bench.errors import ConfigError, DataError
from bench.targets import plan_targets
from bench.types import ModelSpec, SampleRef

IMAGENET = ModelSpec(num_classes=1000, class_names=IMAGENET_CATEGORIES, label_space="imagenet1k")
PRIVATE = ModelSpec(num_classes=3, class_names=("feline", "canine", "other"))

YAML = """\
label_space: imagenet1k
classes:
  elephant: [African elephant, Indian elephant, tusker]
  zebra: zebra
  cat: [281, 282, 283, 284, 285]
  giraffe: {classes: [], reason: "ImageNet-1k has no giraffe"}
"""

CSV = """\
dataset_class,model_class,reason
elephant,African elephant,
elephant,Indian elephant,
elephant,tusker,
# a comment
zebra,zebra,
cat,281,
giraffe,,ImageNet-1k has no giraffe
"""


def folder_dataset(tmp_path: Path, classes: list[str], **params) -> ImageFolder:
    """An imagefolder with one tiny image per class."""
    for i, name in enumerate(classes):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "data" / name / "a.png")
    return ImageFolder(ImageFolderParams(root=str(tmp_path / "data"), classes=classes, **params))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_and_csv_give_the_same_sets(tmp_path: Path) -> None:
    classes = ["elephant", "zebra", "cat", "giraffe"]
    yaml_map = read_label_map(write(tmp_path, "map.yaml", YAML))
    csv_map = read_label_map(write(tmp_path, "map.csv", CSV))
    assert yaml_map.label_space == "imagenet1k" and csv_map.label_space is None
    a = yaml_map.resolve(classes, IMAGENET_CATEGORIES, 1000)
    b = csv_map.resolve(classes, IMAGENET_CATEGORIES, 1000)
    assert a.sets[:2] == [COCO_IMAGENET["elephant"], COCO_IMAGENET["zebra"]] == b.sets[:2]
    assert a.sets[2] == (281, 282, 283, 284, 285) and b.sets[2] == (281,)
    assert a.sets[3] == b.sets[3] == () and a.reasons[3] == b.reasons[3] == "ImageNet-1k has no giraffe"
    assert a.reasons[:3] == [None, None, None]
    assert yaml_map.entries["zebra"].where == "line 4" and csv_map.entries["zebra"].where == "line 6"


def test_a_dataset_uses_its_label_map_for_targets(tmp_path: Path) -> None:
    data = folder_dataset(tmp_path, ["Elephant", "giraffe", "okapi"], label_map=str(write(tmp_path, "m.yaml", YAML)))
    data.check()
    assert data.class_sets("imagenet1k") == [COCO_IMAGENET["elephant"], (), ()]
    refs = [SampleRef("a", 0), SampleRef("b", 1), SampleRef("c", 2)]
    probs = torch.zeros(3, 1000)
    probs[0, 385], probs[0, 101] = 0.5, 0.3
    plan = plan_targets("auto", probs, refs, IMAGENET, data)
    assert plan.rule == "mapped" and plan.target.tolist() == [385, -1, -1] and plan.correct[0] is True
    assert plan.reasons[1] == "class 'giraffe' has no counterpart in imagenet1k: ImageNet-1k has no giraffe"
    assert "'okapi' is not listed in" in plan.reasons[2] and "m.yaml" in plan.reasons[2]
    # the map is for imagenet1k models only: a private model falls back to its top-1
    assert plan_targets("auto", torch.rand(3, 3), refs, PRIVATE, data).rule == "predicted"


def test_a_map_without_label_space_serves_a_private_model(tmp_path: Path) -> None:
    path = write(tmp_path, "private.csv", "cat,feline\ndog,canine\ndog,2\n")
    data = folder_dataset(tmp_path, ["cat", "dog"], label_map=str(path))
    assert data.class_map(PRIVATE).sets == [(0,), (1, 2)]
    plan = plan_targets(
        "mapped", torch.tensor([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]]), [SampleRef("x", 1)] * 2, PRIVATE, data
    )
    assert plan.target.tolist() == [2, 1] and plan.correct == [True, False] and plan.predicted_class == [1, 0]
    with pytest.raises(ConfigError, match="'feline' is not a class name of the model's classes"):
        data.class_map(IMAGENET)


def test_builtin_maps_are_used_without_a_file(tmp_path: Path) -> None:
    voc_like = folder_dataset(tmp_path, ["dog", "person"])
    found = voc_like.class_map(IMAGENET)
    assert found is not None and found.sets == [VOC_IMAGENET["dog"], ()]
    assert "ImageNet-1k has no person class" in found.reasons[1] and "Pascal VOC" in found.source
    assert voc_like.class_map(PRIVATE) is None  # built-in maps are for ImageNet-1k models only


def test_content_identity_follows_the_maps_content(tmp_path: Path) -> None:
    plain = folder_dataset(tmp_path, ["cat", "dog"])
    assert "label_map" not in plain.content_identity()["params"]  # unchanged identity without a map
    path = write(tmp_path, "m.csv", "cat,tabby\n")
    mapped = ImageFolder(ImageFolderParams(root=str(tmp_path / "data"), classes=["cat", "dog"], label_map=str(path)))
    first = mapped.content_identity()
    assert first["params"]["label_map"].startswith("sha256:")
    path.write_text("cat,tiger cat\n")
    assert mapped.content_identity() != first


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "classes:\n  cat: [tabby\n", "not valid YAML"),
        ("flat.yaml", "cat: tabby\n", "expected a mapping with `classes:`"),
        ("extra.yaml", "classes: {cat: tabby}\nspace: x\n", "unknown keys ['space']"),
        ("twice.yaml", "classes:\n  cat: [tabby, tabby]\n", "line 2: a model class is listed twice"),
        ("float.yaml", "classes:\n  dog: tabby\n  cat: [1.5]\n", "line 3: 1.5 is neither"),
        ("negative.yaml", "classes:\n  cat: -3\n", "line 2: output index -3 is negative"),
        ("short.csv", "cat,tabby\ndog\n", "line 2: expected `dataset_class,model_class[,reason]`"),
        ("both.csv", "cat,\ncat,tabby\n", "line 1: 'cat' has an empty row and model classes"),
        ("again.csv", "cat,tabby\ncat,tabby\n", "line 2: 'tabby' is listed twice"),
        ("empty.csv", "dataset_class,model_class\n", "maps no class"),
    ],
)
def test_malformed_maps_name_file_and_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as err:
        read_label_map(path)
    assert str(path) in str(err.value) and message in str(err.value) and err.value.field == "label_map"


def test_resolution_errors_name_the_entry(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "label_space: imagenet1k\nclasses:\n  cat: [tabby]\n  dog: [Tabby, 1000]\n")
    data = folder_dataset(tmp_path, ["cat", "dog"], label_map=str(path))
    with pytest.raises(ConfigError) as err:
        data.check()  # imagenet1k names are checked before any model is loaded
    text = str(err.value)
    assert f"{path}, line 4 (class 'dog')" in text and "'Tabby' is not a class name of imagenet1k" in text
    assert "did you mean 'tabby'" in text
    path.write_text("classes:\n  cat: [1000]\n")
    with pytest.raises(ConfigError, match="output index 1000 is out of range; the model has 1000 outputs"):
        data.class_map(IMAGENET)
    path.write_text("classes:\n  cat: [tabby, 7]\n  dog: [7]\n")
    with pytest.raises(ConfigError, match="output 7 is in the sets of both 'cat' and 'dog'"):
        data.class_map(IMAGENET)


def test_missing_map_file_is_a_data_error(tmp_path: Path) -> None:
    data = folder_dataset(tmp_path, ["cat"], label_map=str(tmp_path / "nowhere.yaml"))
    with pytest.raises(DataError) as err:
        data.check()
    assert "nowhere.yaml" in str(err.value) and err.value.field == "label_map"
