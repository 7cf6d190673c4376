"""Pascal VOC's label masks as ground truth: the pure NumPy logic of ``voc2012`` (unit-tested).

``SegmentationClass`` PNGs hold the VOC index (1..20) of each pixel, 0 for
background and 255 for the void border; ``SegmentationObject`` PNGs hold an
instance id per pixel. A sample's mask is its class's pixels (or its largest
instance, the other instances void), with VOC's void kept void.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.types import VOID

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)  # VOC index i (1..20) is label i - 1
VOC_VOID = 255  # VOC's border/"difficult" pixels in both label PNGs


def classes_present(class_mask: np.ndarray) -> tuple[int, ...]:
    """The VOC indices (1..20) that occur in a SegmentationClass array; a ValueError for foreign values."""
    counts = np.bincount(class_mask.ravel(), minlength=256)
    foreign = [v for v in np.flatnonzero(counts) if len(VOC_CLASSES) < v < VOC_VOID]
    if foreign:
        raise ValueError(f"class mask has values {foreign[:5]} outside 0..20 and 255 (an RGB-coloured mask?)")
    return tuple(int(v) for v in np.flatnonzero(counts[1 : len(VOC_CLASSES) + 1]) + 1)


def instance_sizes(class_mask: np.ndarray, object_mask: np.ndarray, voc_index: int) -> dict[int, int]:
    """Instance id -> pixel count for the instances (SegmentationObject ids) of class ``voc_index``."""
    counts = np.bincount(object_mask[class_mask == voc_index], minlength=256)
    return {int(i): int(counts[i]) for i in np.flatnonzero(counts) if i not in (0, VOC_VOID)}


def largest_instance(class_mask: np.ndarray, object_mask: np.ndarray, voc_index: int) -> int:
    """The id of the class's largest instance (the lowest id on a tie); a ValueError when it has none."""
    sizes = instance_sizes(class_mask, object_mask, voc_index)
    if not sizes:
        raise ValueError(f"SegmentationObject has no instance of class {VOC_CLASSES[voc_index - 1]!r}")
    return min(sizes, key=lambda i: (-sizes[i], i))


def sample_mask(class_mask: np.ndarray, voc_index: int, object_mask: np.ndarray | None = None) -> np.ndarray:
    """The ground truth of one sample as uint8: 1 object, 0 background, ``VOID`` where VOC marks void.

    With ``object_mask`` the object is the class's largest instance, and the
    class's other instances become ``VOID``: they are neither the explained
    object nor background, so metrics should count them neither way.
    """
    in_class = class_mask == voc_index
    mask: np.ndarray
    if object_mask is None:
        mask = in_class.astype(np.uint8)
    else:
        chosen = in_class & (object_mask == largest_instance(class_mask, object_mask, voc_index))
        mask = chosen.astype(np.uint8)
        mask[in_class & ~chosen] = VOID
    mask[class_mask == VOC_VOID] = VOID
    return mask


def gt_areas(class_mask: np.ndarray, object_mask: np.ndarray | None = None) -> dict[int, float]:
    """VOC index -> fraction of the image's pixels that the sample's object covers, for each class present."""
    pixels = class_mask.size
    if object_mask is None:
        counts = np.bincount(class_mask.ravel(), minlength=256)
        return {c: int(counts[c]) / pixels for c in classes_present(class_mask)}
    return {
        c: instance_sizes(class_mask, object_mask, c)[largest_instance(class_mask, object_mask, c)] / pixels
        for c in classes_present(class_mask)
    }


@dataclass(frozen=True)
class MaskTruth:
    """The label PNGs of one image: the class mask and, for ``instance_masks``, the object mask.

    Same interface as ``voc_boxes.BoxTruth``, so that voc2012 reads either kind of ground truth alike.
    """

    class_mask: np.ndarray
    object_mask: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.class_mask.shape[0]), int(self.class_mask.shape[1]))

    def areas(self, shape: tuple[int, int], largest_only: bool) -> dict[int, float]:
        """VOC index -> fraction of the image that each present class's object covers."""
        return gt_areas(self.class_mask, self.object_mask)

    def mask(self, voc_index: int, shape: tuple[int, int], largest_only: bool) -> np.ndarray:
        """The sample's ground truth (``largest_only`` is implied by the object mask)."""
        return sample_mask(self.class_mask, voc_index, self.object_mask)
