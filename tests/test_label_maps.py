"""The VOC / CIFAR-10 / COCO -> ImageNet-1k class tables: names resolve, sets are right, disjoint and invertible."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from torchvision.models import ResNet50_Weights

from bench.datasets import label_maps as lm
from bench.datasets.voc import VOC_CLASSES
from tests.conftest import ROOT

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CATEGORIES = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]


def names(indices: tuple[int, ...]) -> set[str]:
    return {CATEGORIES[i] for i in indices}


COCO_CATEGORIES = tuple(lm.COCO_NAMES)


def test_shipped_imagenet_names_are_torchvisions() -> None:
    assert tuple(CATEGORIES) == lm.IMAGENET_CATEGORIES


def test_label_maps_import_without_torchvision() -> None:
    """Importing torchvision costs seconds; the class list must not need it."""
    code = "import sys, bench.datasets.label_maps, bench.datasets.label_map_files; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_every_name_resolves_to_torchvision_categories() -> None:
    assert len(lm.IMAGENET_CATEGORIES) == 1000 and len(set(lm.IMAGENET_CATEGORIES)) == 1000
    for table in (lm.VOC_NAMES, lm.CIFAR10_NAMES, lm.COCO_NAMES):
        for members in table.values():
            for name in members:
                assert CATEGORIES[lm.imagenet_index(name)] == name
    with pytest.raises(KeyError, match="not an ImageNet-1k class"):
        lm.imagenet_index("motorcycle")  # ImageNet-1k has none (moped, motor scooter)
    with pytest.raises(KeyError):
        lm.imagenet_index("persian cat")  # names are case-sensitive


def test_tables_cover_exactly_the_dataset_classes_in_label_order() -> None:
    assert tuple(lm.VOC_IMAGENET) == VOC_CLASSES
    assert tuple(lm.CIFAR10_IMAGENET) == CIFAR10_CLASSES
    for table in (lm.VOC_IMAGENET, lm.CIFAR10_IMAGENET):
        assert all(indices == tuple(sorted(indices)) for indices in table.values())


def test_known_sets() -> None:
    voc = lm.VOC_IMAGENET
    assert voc["dog"] == tuple(range(151, 269)) and len(voc["dog"]) == 118
    assert CATEGORIES[151] == "Chihuahua" and CATEGORIES[268] == "Mexican hairless"
    assert voc["bird"] == (*range(7, 25), *range(80, 101), *range(127, 147)) and len(voc["bird"]) == 59
    assert voc["person"] == ()
    assert voc["cat"] == (281, 282, 283, 284, 285)
    assert voc["aeroplane"] == (404, 895, 908)  # airliner, warplane, wing; not airship (405)
    assert voc["diningtable"] == (532,) and voc["sofa"] == (831,) and voc["pottedplant"] == (738,)
    assert names(voc["bicycle"]) == {"mountain bike", "bicycle-built-for-two", "tricycle", "unicycle"}
    assert names(voc["train"]) == {
        "bullet train",
        "electric locomotive",
        "steam locomotive",
        "freight car",
        "passenger car",
    }
    assert "streetcar" not in names(sum(voc.values(), ()))  # a tram is neither a bus nor a train
    assert lm.CIFAR10_IMAGENET["deer"] == ()  # ImageNet-1k has antelopes, not deer
    assert names(lm.CIFAR10_IMAGENET["frog"]) == {"bullfrog", "tree frog", "tailed frog"}


def test_shared_concepts_give_identical_sets() -> None:
    voc, cifar = lm.VOC_IMAGENET, lm.CIFAR10_IMAGENET
    for concept in ("cat", "dog", "bird", "horse"):
        assert voc[concept] == cifar[concept] and voc[concept]
    assert voc["aeroplane"] == cifar["airplane"]
    assert voc["boat"] == cifar["ship"]


def test_pickup_is_a_voc_car_but_neither_cifar_automobile_nor_truck() -> None:
    pickup = lm.imagenet_index("pickup")
    assert pickup in lm.VOC_IMAGENET["car"]
    assert pickup not in lm.CIFAR10_IMAGENET["automobile"] and pickup not in lm.CIFAR10_IMAGENET["truck"]
    assert set(lm.CIFAR10_IMAGENET["automobile"]) < set(lm.VOC_IMAGENET["car"])


def test_coco_sets() -> None:
    coco = lm.COCO_IMAGENET
    assert len(coco) == 80 and COCO_CATEGORIES[:3] == ("person", "bicycle", "car")
    assert names(coco["elephant"]) == {"African elephant", "Indian elephant", "tusker"}
    assert names(coco["zebra"]) == {"zebra"} and coco["giraffe"] == ()  # ImageNet-1k has no giraffe
    assert coco["kite"] == ()  # ImageNet's kite (21) is the bird
    assert 21 in coco["bird"]
    assert names(coco["mouse"]) == {"mouse"} and CATEGORIES[673] == "mouse"  # the computer mouse
    assert coco["person"] == () and coco["dog"] == lm.VOC_IMAGENET["dog"] and coco["tv"] == lm.VOC_IMAGENET["tvmonitor"]
    pickup, streetcar = lm.imagenet_index("pickup"), lm.imagenet_index("streetcar")
    assert pickup in coco["truck"] and pickup not in coco["car"] and streetcar in coco["train"]
    empty = {cls for cls, members in coco.items() if not members}
    assert empty == {cls for cls, entry in lm.COCO_MAP.entries.items() if entry.reason}  # each says why


@pytest.mark.parametrize(
    "table", [lm.VOC_IMAGENET, lm.CIFAR10_IMAGENET, lm.COCO_IMAGENET], ids=["voc", "cifar10", "coco"]
)
def test_sets_within_a_vocabulary_are_disjoint(table: dict[str, tuple[int, ...]]) -> None:
    members = [i for indices in table.values() for i in indices]
    assert len(members) == len(set(members))


@pytest.mark.parametrize("classes", [VOC_CLASSES, CIFAR10_CLASSES, COCO_CATEGORIES], ids=["voc", "cifar10", "coco"])
def test_inverse_round_trips(classes: tuple[str, ...]) -> None:
    sets = lm.class_sets(classes, "imagenet1k")
    assert sets is not None
    back = lm.inverse(sets)
    assert len(back) == sum(len(s) for s in sets)
    for position, indices in enumerate(sets):
        assert all(back[i] == position for i in indices)
    assert {i for i, position in back.items() if position == classes.index("dog")} == set(range(151, 269))
    assert 0 not in back  # tench is nobody's class


def test_inverse_rejects_an_index_in_two_sets() -> None:
    with pytest.raises(ValueError, match="output index 5"):
        lm.inverse([(1, 5), (5, 7)])


def test_class_sets_by_vocabulary() -> None:
    assert lm.class_sets(VOC_CLASSES, "imagenet1k") == list(lm.VOC_IMAGENET.values())
    assert lm.class_sets(CIFAR10_CLASSES, "imagenet1k") == list(lm.CIFAR10_IMAGENET.values())
    assert lm.class_sets(("dog", "cat"), "imagenet1k") == [lm.VOC_IMAGENET["dog"], lm.VOC_IMAGENET["cat"]]
    assert lm.class_sets(COCO_CATEGORIES, "imagenet1k") == list(lm.COCO_IMAGENET.values())
    assert lm.class_sets(("elephant", "zebra", "giraffe"), "imagenet1k") == [
        lm.COCO_IMAGENET["elephant"],
        lm.COCO_IMAGENET["zebra"],
        (),
    ]
    assert lm.class_sets(("Dining Table", "TV/monitor", "potted_plant"), "imagenet1k") == [
        lm.VOC_IMAGENET["diningtable"],
        lm.VOC_IMAGENET["tvmonitor"],
        lm.VOC_IMAGENET["pottedplant"],
    ]


def test_unknown_vocabulary_or_label_space_gives_none() -> None:
    assert lm.class_sets(("disk", "square", "triangle"), "imagenet1k") is None
    assert lm.class_sets(("cat", "square"), "imagenet1k") is None  # every class must be known
    assert lm.class_sets(("aeroplane", "automobile"), "imagenet1k") is None  # VOC and CIFAR names mixed
    assert lm.class_sets(VOC_CLASSES, "places365") is None
    assert lm.class_sets((), "imagenet1k") is None


def test_span_and_resolve_fail_loudly() -> None:
    assert lm.imagenet_span("tabby", "Egyptian cat") == (
        "tabby",
        "tiger cat",
        "Persian cat",
        "Siamese cat",
        "Egyptian cat",
    )
    with pytest.raises(ValueError, match="comes before"):
        lm.imagenet_span("Egyptian cat", "tabby")
    with pytest.raises(ValueError, match="listed twice"):
        lm.resolve(("ox", "ox"))


def doc_rows(heading: str) -> dict[str, tuple[int, str]]:
    """class -> (n, listed classes) from a table of docs/label_maps.md."""
    text = (ROOT / "docs" / "label_maps.md").read_text()
    table = text.split(heading, 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in table.splitlines()[2:]:
        cls, n, listed = (cell.strip() for cell in line.strip("|").split("|"))
        rows[cls] = (int(n), listed)
    return rows


@pytest.mark.parametrize(
    ("heading", "table"),
    [
        ("## Pascal VOC -> ImageNet-1k", lm.VOC_IMAGENET),
        ("## CIFAR-10 -> ImageNet-1k", lm.CIFAR10_IMAGENET),
        ("## COCO -> ImageNet-1k", lm.COCO_IMAGENET),
    ],
    ids=["voc", "cifar10", "coco"],
)
def test_documented_tables_match_the_code(heading: str, table: dict[str, tuple[int, ...]]) -> None:
    rows = doc_rows(heading)
    assert list(rows) == list(table)
    for cls, (n, listed) in rows.items():
        assert n == len(table[cls]), cls
        pairs = [(name.strip(" ,:"), int(i)) for name, i in re.findall(r"([^,:(…]+?) \((\d+)\)", listed)]
        for name, index in pairs:
            assert CATEGORIES[index] == name and index in table[cls], (cls, name, index)
        if "…" not in listed and "same set" not in listed:
            assert tuple(sorted(i for _, i in pairs)) == table[cls], cls
