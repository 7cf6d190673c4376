"""The ImageNet-1k vocabulary: the 1000 class names in output order, without importing torchvision.

The names are torchvision's category list (``ResNet50_Weights.IMAGENET1K_V1.meta["categories"]``,
unique names), shipped as ``imagenet_classes.txt`` beside this module because
importing torchvision only to read them costs seconds; ``tests/test_label_maps.py``
checks the file against torchvision's list.
"""

from __future__ import annotations

from pathlib import Path

IMAGENET1K = "imagenet1k"
CLASSES_FILE = Path(__file__).with_name("imagenet_classes.txt")

#: The 1000 ImageNet-1k class names in output order.
IMAGENET_CATEGORIES: tuple[str, ...] = tuple(CLASSES_FILE.read_text(encoding="utf-8").splitlines())
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


#: Label spaces whose class names xbench knows without a model (a label map may name their classes).
VOCABULARIES: dict[str, tuple[str, ...]] = {IMAGENET1K: IMAGENET_CATEGORIES}
