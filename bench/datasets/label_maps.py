"""Which ImageNet-1k classes depict each class of Pascal VOC and CIFAR-10.

A model trained on ImageNet-1k has no "dog" output but 118 dog breeds, and no
"person" output at all. To explain and score such a model on VOC or CIFAR-10
images, each dataset class maps to the *set* of ImageNet classes that depict it
(the runner explains the highest-scoring class inside the set, and counts a
prediction correct when the top-1 class lies inside it).

The tables are written with ImageNet class *names* (torchvision's category
list) and resolved to indices at import time, so a misspelt or missing name
fails loudly instead of silently pointing at the wrong output. The reasons for
non-obvious choices are in docs/label_maps.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from torchvision.models import ResNet50_Weights

IMAGENET1K = "imagenet1k"

#: The 1000 ImageNet-1k class names in output order (torchvision's list; the names are unique).
IMAGENET_CATEGORIES: tuple[str, ...] = tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
_POSITION = {name: i for i, name in enumerate(IMAGENET_CATEGORIES)}


def imagenet_index(name: str) -> int:
    """The output index of the ImageNet-1k class called ``name`` (exact, case-sensitive)."""
    try:
        return _POSITION[name]
    except KeyError:
        raise KeyError(f"{name!r} is not an ImageNet-1k class name (torchvision's category list)") from None


def imagenet_span(first: str, last: str) -> tuple[str, ...]:
    """The names of the contiguous run of ImageNet classes from ``first`` to ``last`` inclusive.

    ImageNet orders classes by WordNet, so related classes (the dog breeds, most
    birds) sit in runs; naming both ends keeps the tables readable and checkable.
    """
    start, stop = imagenet_index(first), imagenet_index(last)
    if stop < start:
        raise ValueError(f"ImageNet class {last!r} comes before {first!r}")
    return IMAGENET_CATEGORIES[start : stop + 1]


# Concepts that the two vocabularies share: one definition, so the sets cannot drift apart.
AIRCRAFT = ("airliner", "warplane", "wing")
BIRDS = (
    *imagenet_span("cock", "great grey owl"),  # 7..24: fowl, ostrich, finches, corvids, raptors, owl
    *imagenet_span("black grouse", "black swan"),  # 80..100: game birds, parrots, hummingbird, waterfowl
    *imagenet_span("white stork", "albatross"),  # 127..146: storks, herons, waders, pelican, penguin
)
CATS = ("tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat")  # domestic cats only
DOGS = imagenet_span("Chihuahua", "Mexican hairless")  # 151..268: the domestic breeds, no wolves or foxes
HORSES = ("sorrel",)
WATERCRAFT = (
    "aircraft carrier",
    "canoe",
    "catamaran",
    "container ship",
    "fireboat",
    "gondola",
    "lifeboat",
    "liner",
    "paddlewheel",
    "pirate",  # pirate ship
    "schooner",
    "speedboat",
    "submarine",
    "trimaran",
    "wreck",  # a wrecked ship
    "yawl",
)
PASSENGER_CARS = (
    "beach wagon",
    "cab",
    "convertible",
    "jeep",
    "limousine",
    "minivan",
    "Model T",
    "racer",
    "sports car",
)

#: Pascal VOC class -> ImageNet-1k class names (label order of VOC).
VOC_NAMES: dict[str, tuple[str, ...]] = {
    "aeroplane": AIRCRAFT,
    "bicycle": ("bicycle-built-for-two", "mountain bike", "tricycle", "unicycle"),
    "bird": BIRDS,
    "boat": WATERCRAFT,
    "bottle": ("beer bottle", "nipple", "pill bottle", "pop bottle", "water bottle", "wine bottle"),
    "bus": ("minibus", "school bus", "trolleybus"),
    "car": (*PASSENGER_CARS, "ambulance", "pickup", "police van"),
    "cat": CATS,
    "chair": ("barber chair", "folding chair", "rocking chair", "throne"),
    "cow": ("ox",),
    "diningtable": ("dining table",),
    "dog": DOGS,
    "horse": HORSES,
    "motorbike": ("moped", "motor scooter"),
    "person": (),
    "pottedplant": ("pot",),  # "pot, flowerpot"
    "sheep": ("ram", "bighorn"),
    "sofa": ("studio couch",),
    "train": ("bullet train", "electric locomotive", "freight car", "passenger car", "steam locomotive"),
    "tvmonitor": ("desktop computer", "monitor", "screen", "television"),
}

#: CIFAR-10 class -> ImageNet-1k class names (label order of CIFAR-10).
CIFAR10_NAMES: dict[str, tuple[str, ...]] = {
    "airplane": AIRCRAFT,
    "automobile": PASSENGER_CARS,
    "bird": BIRDS,
    "cat": CATS,
    "deer": (),
    "dog": DOGS,
    "frog": ("bullfrog", "tree frog", "tailed frog"),
    "horse": HORSES,
    "ship": WATERCRAFT,
    "truck": ("fire engine", "garbage truck", "moving van", "tow truck", "trailer truck"),
}


def resolve(names: Sequence[str]) -> tuple[int, ...]:
    """The sorted ImageNet-1k indices of ``names``; a KeyError for a name that does not exist."""
    indices = [imagenet_index(name) for name in names]
    if len(set(indices)) != len(indices):
        raise ValueError(f"a class name is listed twice in {list(names)}")
    return tuple(sorted(indices))


def inverse(sets: Sequence[tuple[int, ...]]) -> dict[int, int]:
    """Model output index -> position of the set that holds it (to map predictions back to dataset classes).

    Indices in no set are absent. An index in two sets would make the mapping
    ambiguous, so it is an error.
    """
    back: dict[int, int] = {}
    for position, indices in enumerate(sets):
        for index in indices:
            if index in back:
                raise ValueError(f"output index {index} is in the sets of classes {back[index]} and {position}")
            back[index] = position
    return back


def _resolve_table(names: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[int, ...]]:
    table = {cls: resolve(members) for cls, members in names.items()}
    inverse(list(table.values()))  # the sets of one vocabulary must be disjoint
    return table


#: Dataset class -> sorted ImageNet-1k indices, resolved (and checked) at import.
VOC_IMAGENET: dict[str, tuple[int, ...]] = _resolve_table(VOC_NAMES)
CIFAR10_IMAGENET: dict[str, tuple[int, ...]] = _resolve_table(CIFAR10_NAMES)

#: label space -> vocabularies (tried in this order) -> class -> indices.
TABLES: dict[str, tuple[dict[str, tuple[int, ...]], ...]] = {IMAGENET1K: (VOC_IMAGENET, CIFAR10_IMAGENET)}


def class_key(name: str) -> str:
    """A class name as the tables spell it: lower case without spaces, "/", "-" or "_" ("tv/monitor")."""
    return re.sub(r"[\s/_-]", "", name.lower())


def class_sets(classes: Sequence[str], label_space: str) -> list[tuple[int, ...]] | None:
    """For each of ``classes``, the indices of ``label_space`` outputs that depict it.

    Every class must come from one known vocabulary (VOC or CIFAR-10; a subset
    is fine); otherwise, and for unknown label spaces, None. An empty tuple means
    the class has no counterpart (VOC's person, CIFAR-10's deer).
    """
    keys = [class_key(name) for name in classes]
    for table in TABLES.get(label_space, ()):
        if keys and all(key in table for key in keys):
            return [table[key] for key in keys]
    return None
