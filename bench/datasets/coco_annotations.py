"""Reading COCO instance annotations (``instances_*.json``) with errors that name the file and the annotation.

The format (cocodataset.org/#format-data)::

    {"images": [{"id": 397133, "file_name": "000000397133.jpg", "height": 427, "width": 640}, ...],
     "annotations": [{"id": 1, "image_id": 397133, "category_id": 18, "iscrowd": 0, "area": 702.1,
                      "bbox": [x, y, width, height],
                      "segmentation": [[x1, y1, x2, y2, ...], ...]           # polygons, or
                                      {"counts": [...] or "<compressed>", "size": [height, width]}}, # RLE
                     ...],
     "categories": [{"id": 18, "name": "dog", "supercategory": "animal"}, ...]}

Everything is checked once, when the file is read, so that a malformed
annotation is an error naming it (its ``id``, or its position) instead of a
crash halfway through a benchmark. Decoding masks is ``coco.py``'s job.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

from bench.errors import DataError

FIX = "repair the file; COCO's instance format is described at cocodataset.org/#format-data"


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str
    height: int
    width: int


@dataclass(frozen=True)
class CocoObject:
    """One annotation: its category id, geometry (``segmentation`` as written), ``area`` and crowd flag."""

    id: int
    category: int
    bbox: tuple[float, float, float, float]
    segmentation: Any
    area: float
    crowd: bool


@dataclass
class CocoFile:
    path: Path
    images: dict[int, CocoImage]
    categories: dict[int, str]  # category id -> name, in the file's order
    objects: dict[int, list[CocoObject]] = field(default_factory=lambda: defaultdict(list))  # by image id


class _Problem(ValueError):
    """A malformed entry; ``read_coco`` turns it into a DataError naming the file."""


def _int(entry: dict[str, Any], key: str, what: str) -> int:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Problem(f"{what}: `{key}` is {value!r}, not an integer")
    return value


def _numbers(values: Any, what: str, key: str) -> list[float]:
    if not isinstance(values, list) or not all(isinstance(v, Real) and not isinstance(v, bool) for v in values):
        raise _Problem(f"{what}: `{key}` must be a list of numbers")
    return [float(v) for v in values]


def _segmentation(value: Any, image: CocoImage, what: str) -> Any:
    """Check a segmentation: polygons (lists of an even number of coordinates) or RLE of the image's size."""
    if isinstance(value, list):
        for polygon in value:
            if len(_numbers(polygon, what, "segmentation")) % 2:
                raise _Problem(f"{what}: a polygon has an odd number of coordinates")
        return value
    if isinstance(value, dict):
        counts, size = value.get("counts"), value.get("size")
        if size != [image.height, image.width]:
            raise _Problem(
                f"{what}: RLE size {size!r} is not the image's [height, width] {[image.height, image.width]}"
            )
        if isinstance(counts, list):
            _numbers(counts, what, "segmentation.counts")
        elif not isinstance(counts, str):
            raise _Problem(f"{what}: RLE `counts` must be a list of run lengths or a compressed string")
        return value
    raise _Problem(f"{what}: `segmentation` must be a list of polygons or an RLE mapping")


def _image(entry: Any, position: int) -> CocoImage:
    what = f"images[{position}]"
    if not isinstance(entry, dict):
        raise _Problem(f"{what} is not a mapping")
    name = entry.get("file_name")
    if not isinstance(name, str) or not name:
        raise _Problem(f"{what}: `file_name` is missing")
    height, width = _int(entry, "height", what), _int(entry, "width", what)
    if height < 1 or width < 1:
        raise _Problem(f"{what}: `height` and `width` must be positive")
    return CocoImage(_int(entry, "id", what), name, height, width)


def _object(entry: Any, position: int, coco: CocoFile) -> tuple[int, CocoObject]:
    if not isinstance(entry, dict):
        raise _Problem(f"annotations[{position}] is not a mapping")
    what = f"annotation {entry.get('id', f'at position {position}')}"
    image = coco.images.get(_int(entry, "image_id", what))
    if image is None:
        raise _Problem(f"{what}: image_id {entry['image_id']} is not in `images`")
    category = _int(entry, "category_id", what)
    if category not in coco.categories:
        raise _Problem(f"{what}: category_id {category} is not in `categories`")
    bbox = _numbers(entry.get("bbox"), what, "bbox")
    if len(bbox) != 4 or bbox[2] < 0 or bbox[3] < 0:
        raise _Problem(f"{what}: `bbox` must be [x, y, width, height] with width, height >= 0")
    crowd = entry.get("iscrowd", 0)
    if crowd not in (0, 1):
        raise _Problem(f"{what}: `iscrowd` is {crowd!r}, not 0 or 1")
    area = entry.get("area", bbox[2] * bbox[3])
    if not isinstance(area, Real) or isinstance(area, bool):
        raise _Problem(f"{what}: `area` is {area!r}, not a number")
    segmentation = _segmentation(entry.get("segmentation", []), image, what)
    obj = CocoObject(
        _int(entry, "id", what), category, (bbox[0], bbox[1], bbox[2], bbox[3]), segmentation, float(area), bool(crowd)
    )
    return image.id, obj


def _parse(data: Any, path: Path) -> CocoFile:
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
        raise _Problem("expected a mapping with `images`, `annotations` and `categories` lists")
    if not isinstance(data.get("categories"), list) or not data["categories"]:
        raise _Problem("`categories` must be a non-empty list")
    categories: dict[int, str] = {}
    for i, entry in enumerate(data["categories"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _Problem(f"categories[{i}] needs an `id` and a `name`")
        categories[_int(entry, "id", f"categories[{i}]")] = entry["name"]
    if len(set(categories.values())) != len(categories):
        raise _Problem("two categories have the same name")
    coco = CocoFile(path, {}, dict(sorted(categories.items())))
    for i, entry in enumerate(data["images"]):
        image = _image(entry, i)
        if image.id in coco.images:
            raise _Problem(f"images[{i}]: id {image.id} is listed twice")
        coco.images[image.id] = image
    for i, entry in enumerate(data["annotations"]):
        image_id, obj = _object(entry, i, coco)
        coco.objects[image_id].append(obj)
    return coco


def read_coco(path: Path, field_name: str = "annotations") -> CocoFile:
    """The checked contents of a COCO instances file; a DataError naming the file and the entry otherwise."""
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}", field=field_name, fix=FIX) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}", field=field_name, fix=FIX) from exc
    try:
        return _parse(data, path)
    except _Problem as exc:
        raise DataError(f"{path}: {exc}", field=field_name, fix=FIX) from exc
