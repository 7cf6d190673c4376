"""VOC detection annotations (``Annotations/<id>.xml``) as the ground truth of ``voc2012`` with ``ground_truth: box``.

The XML is the one VOC writes (VOC 2007 and 2012 alike)::

    <annotation>
      <size><width>500</width><height>375</height><depth>3</depth></size>
      <object>
        <name>dog</name><difficult>0</difficult>
        <bndbox><xmin>48</xmin><ymin>240</ymin><xmax>195</xmax><ymax>371</ymax></bndbox>
      </object>
    </annotation>

Coordinates are 1-based pixel indices, both ends inclusive. Objects marked
``difficult`` are void (VOC's detection evaluation ignores them too: neither a
hit nor a miss), so a class whose only objects are difficult gives no sample.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.datasets.boxes import Box, box_mask, from_voc, largest, union_area
from bench.errors import DataError

FIX = "repair or remove the file; VOC's format has <size> and per <object> a <name> and a <bndbox> (xmin..ymax)"


@dataclass(frozen=True)
class VocObject:
    """One ``<object>``: its VOC index (1..20), its box, and whether VOC marks it difficult."""

    voc_index: int
    box: Box
    difficult: bool


@dataclass(frozen=True)
class BoxTruth:
    """The boxes of one image. ``shape`` (height, width) is the XML's ``<size>``; None when it gives none."""

    shape: tuple[int, int] | None
    objects: tuple[VocObject, ...]

    def boxes(self, voc_index: int, shape: tuple[int, int]) -> tuple[list[Box], list[Box]]:
        """(object boxes, difficult boxes) of class ``voc_index``, clipped to the image."""
        objects = [o for o in self.objects if o.voc_index == voc_index]
        plain = [o.box.clipped(*shape) for o in objects if not o.difficult]
        return plain, [o.box.clipped(*shape) for o in objects if o.difficult]

    def areas(self, shape: tuple[int, int], largest_only: bool) -> dict[int, float]:
        """VOC index -> fraction of the image that the sample's object covers (the union of the class's
        boxes, or its largest box), for each class with at least one object that is not difficult."""
        out = {}
        for voc_index in sorted({o.voc_index for o in self.objects if not o.difficult}):
            plain, _ = self.boxes(voc_index, shape)
            covered = plain[largest(plain)].area if largest_only else union_area(plain, shape)
            out[voc_index] = covered / (shape[0] * shape[1])
        return out

    def mask(self, voc_index: int, shape: tuple[int, int], largest_only: bool) -> np.ndarray:
        """The sample's ground truth: 1 in the class's boxes (or its largest box), VOID in its
        difficult boxes (and its other boxes with ``largest_only``), 0 elsewhere."""
        plain, difficult = self.boxes(voc_index, shape)
        if not plain:
            raise ValueError(f"the annotation has no box of class {voc_index} that is not difficult")
        return box_mask(plain, difficult, shape, largest_only)


def _number(element: ET.Element, tag: str, where: str) -> float:
    text = element.findtext(tag)
    if text is None:
        raise ValueError(f"{where}: no <{tag}>")
    try:
        return float((text or "").strip())
    except ValueError:
        raise ValueError(f"{where}: <{tag}> is {text!r}, not a number") from None


def _object(element: ET.Element, position: int, classes: tuple[str, ...]) -> VocObject:
    name = (element.findtext("name") or "").strip()
    where = f"object {position} ({name or 'no name'})"
    if name not in classes:
        raise ValueError(f"{where}: {name!r} is not a VOC class")
    bndbox = element.find("bndbox")
    if bndbox is None:
        raise ValueError(f"{where}: no <bndbox>")
    xmin, ymin, xmax, ymax = (_number(bndbox, tag, where) for tag in ("xmin", "ymin", "xmax", "ymax"))
    if xmax < xmin or ymax < ymin:
        raise ValueError(f"{where}: the box ends before it starts ({xmin}, {ymin}, {xmax}, {ymax})")
    difficult = (element.findtext("difficult") or "0").strip() == "1"
    return VocObject(classes.index(name) + 1, from_voc(xmin, ymin, xmax, ymax), difficult)


def parse_annotation(path: Path, classes: tuple[str, ...]) -> BoxTruth:
    """The boxes in a VOC XML file; a DataError naming the file (and line) when it does not parse."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:  # its message ends with "line L, column C"
        raise DataError(f"annotation {path} does not parse: {exc}", fix=FIX) from exc
    try:
        size = root.find("size")
        shape = None
        if size is not None:
            height, width = int(_number(size, "height", "<size>")), int(_number(size, "width", "<size>"))
            shape = (height, width) if height > 0 and width > 0 else None
        objects = tuple(_object(obj, i + 1, classes) for i, obj in enumerate(root.findall("object")))
    except ValueError as exc:
        raise DataError(f"annotation {path}: {exc}", fix=FIX) from exc
    return BoxTruth(shape, objects)
