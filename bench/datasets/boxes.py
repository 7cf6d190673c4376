"""Bounding boxes as ground truth: filled masks, so that every localisation metric works on them.

The published pointing-game numbers (TorchRay; Zhang et al. 2016) score against
boxes, not masks. A box becomes a mask of 1 inside, 0 outside, and ``VOID``
where a box that should count neither way lies (VOC's "difficult" objects,
COCO's crowd regions, the other instances when only the largest one is the
object). Boxes are in pixel edges: a box covers rows ``y0..y1-1`` and columns
``x0..x1-1`` (0-based, end exclusive), so its area is exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.types import VOID


@dataclass(frozen=True)
class Box:
    """Pixels ``[y0, y1) x [x0, x1)`` of an image (0-based, end exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)

    def clipped(self, height: int, width: int) -> Box:
        """The part inside an image of ``height`` x ``width`` (at least one pixel when it touches it)."""
        x0, y0 = min(max(self.x0, 0), width - 1), min(max(self.y0, 0), height - 1)
        return Box(x0, y0, max(min(self.x1, width), x0 + 1), max(min(self.y1, height), y0 + 1))


def from_voc(xmin: float, ymin: float, xmax: float, ymax: float) -> Box:
    """A VOC ``bndbox``: 1-based pixel indices, both ends inclusive (xmin=1, xmax=3: the first 3 columns).

    Some VOC files write coordinates as decimals ("273.5"); they are rounded to the nearest pixel.
    """
    x0, y0 = round(xmin) - 1, round(ymin) - 1
    return Box(x0, y0, max(round(xmax), x0 + 1), max(round(ymax), y0 + 1))


def from_coco(bbox: Sequence[float]) -> Box:
    """A COCO ``bbox`` ``[x, y, width, height]`` in continuous pixel coordinates (0 = the left edge of
    the first pixel): every pixel the box touches, at least one."""
    x, y, w, h = (float(v) for v in bbox)
    x0, y0 = math.floor(x), math.floor(y)
    return Box(x0, y0, max(math.ceil(x + w), x0 + 1), max(math.ceil(y + h), y0 + 1))


def largest(boxes: Sequence[Box]) -> int:
    """Position of the largest box (the first one on a tie)."""
    return max(range(len(boxes)), key=lambda i: (boxes[i].area, -i))


def union_area(boxes: Sequence[Box], shape: tuple[int, int]) -> int:
    """Pixels covered by any of ``boxes`` in an image of ``shape`` (overlaps counted once)."""
    covered = np.zeros(shape, dtype=bool)
    for box in boxes:
        covered[box.y0 : box.y1, box.x0 : box.x1] = True
    return int(covered.sum())


def box_mask(
    objects: Sequence[Box], void: Sequence[Box], shape: tuple[int, int], largest_only: bool = False
) -> np.ndarray:
    """The ground truth (uint8, ``shape``) of the object boxes: 1 inside any of ``objects`` (only the
    largest with ``largest_only``, the others then void), ``VOID`` inside ``void`` boxes outside the
    object, 0 elsewhere."""
    mask = np.zeros(shape, dtype=np.uint8)
    chosen, others = list(objects), []
    if largest_only and objects:
        k = largest(objects)
        chosen, others = [objects[k]], [b for i, b in enumerate(objects) if i != k]
    for box in (*void, *others):
        mask[box.y0 : box.y1, box.x0 : box.x1] = VOID
    for box in chosen:
        mask[box.y0 : box.y1, box.x0 : box.x1] = 1
    return mask
