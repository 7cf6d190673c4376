"""`coco`: COCO instance annotations, one sample per (image, category present), like `voc2012`.

Any dataset in COCO's ``instances_*.json`` format works: COCO 2017 itself, or
your own annotations exported by a labelling tool. A sample's ground truth is
the union of its category's instances in the image (or, with
``largest_instance``, the largest one, the others void); ``iscrowd`` regions
of its category are ``VOID`` (COCO's own evaluation ignores them), and with
``ground_truth: box`` the instances' ``bbox`` rectangles are filled instead.
Polygons and RLE are decoded with ``pycocotools`` (``pip install
"xbench[coco]"``), the field's reference implementation.

A category that is present only as crowd in an image gives no sample there
(there is no single object to explain). Images that are missing, unreadable or
of another size than the annotation says are skipped and reported; a file that
does not parse is an error naming the entry.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from bench.component import Params
from bench.datasets.base import Dataset
from bench.datasets.boxes import box_mask, from_coco, union_area
from bench.datasets.coco_annotations import CocoFile, CocoImage, CocoObject, read_coco
from bench.datasets.image_io import UnreadableImage, mask_batch, read_image, resize
from bench.datasets.label_map_files import label_map_field
from bench.datasets.label_maps import COCO_MAP, LabelMap
from bench.errors import ConfigError, DataError
from bench.types import VOID, Batch, SampleRef


class COCOParams(Params):
    root: str = Field(description="folder of the images (the JSON's file_name is relative to it), e.g. coco/val2017")
    annotations: str = Field(description="COCO instances JSON, e.g. coco/annotations/instances_val2017.json")
    categories: list[str] | None = Field(
        None, description="category names to keep, in label order; default: every category, ordered by id"
    )
    ground_truth: Literal["mask", "box"] = Field(
        "mask", description="mask: the instances' segmentation (polygons, RLE); box: their bbox, filled"
    )
    largest_instance: bool = Field(
        False, description="ground truth = the category's largest instance (by area); its other instances void"
    )
    min_area: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="drop samples whose ground truth covers less than this fraction of the image (mask: the "
        "annotations' area, summed; box: the boxes' union)",
    )
    image_size: tuple[int, int] = Field(
        (224, 224), description="(H, W) that images and masks are resized to when the runner asks for no size"
    )
    keep_original_masks: bool = Field(
        True, description="also return each mask at the image's full resolution (metrics with resolution: original)"
    )
    label_map: str | None = label_map_field()

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        if min(size) < 1:
            raise ValueError("image_size must be two positive integers (H, W)")
        return size


def _mask_utils() -> Any:
    try:
        from pycocotools import mask
    except ImportError as exc:
        raise ConfigError(
            "the coco dataset needs the optional package pycocotools",
            field="datasets",
            fix='pip install "xbench[coco]"',
        ) from exc
    return mask


def instance_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """The pixels (bool, height x width) of one annotation's polygons or RLE, decoded by pycocotools.

    Polygons with fewer than three points have no area and are ignored.
    """
    mask_utils = _mask_utils()
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation["counts"], list):  # uncompressed RLE (crowd regions)
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
    with warnings.catch_warnings():  # pycocotools' own NumPy 2 deprecation notice, not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded: np.ndarray = mask_utils.decode(rle)
        return decoded.astype(bool)


def sample_mask(objects: Sequence[CocoObject], image: CocoImage, box: bool, largest: bool) -> np.ndarray:
    """The ground truth (uint8) of one (image, category): 1 on its instances (or the largest), ``VOID`` on
    its crowd regions (and its other instances with ``largest``), 0 elsewhere."""
    shape = (image.height, image.width)
    plain = [o for o in objects if not o.crowd]
    crowd = [o for o in objects if o.crowd]
    if box:
        boxes = [from_coco(o.bbox).clipped(*shape) for o in plain]
        return box_mask(boxes, [from_coco(o.bbox).clipped(*shape) for o in crowd], shape, largest)
    chosen = [max(plain, key=lambda o: o.area)] if largest and plain else plain
    mask = np.zeros(shape, dtype=np.uint8)
    for obj in [*crowd, *(o for o in plain if all(o is not c for c in chosen))]:
        mask[instance_mask(obj.segmentation, *shape)] = VOID
    for obj in chosen:
        mask[instance_mask(obj.segmentation, *shape)] = 1
    return mask


class COCO(Dataset):
    """COCO-format instance annotations (polygons, RLE, boxes): one sample per (image, category present)."""

    Params = COCOParams
    has_masks = True
    variable_size = True
    version = 1

    def __init__(self, params: COCOParams | None = None):
        super().__init__(params)
        self._coco: CocoFile | None = None
        self._refs: list[SampleRef] | None = None
        self._where: dict[str, tuple[int, int]] = {}  # sample id -> (image id, category id)

    # ------------------------------------------------------------ annotations and classes

    def annotations(self) -> CocoFile:
        """The parsed annotation file (read once)."""
        if self._coco is None:
            path = Path(self.params.annotations)
            if not path.is_file():
                raise DataError(
                    f"COCO annotations {str(path)!r} do not exist (resolved to {path.resolve()})",
                    field="annotations",
                    fix="point annotations at an instances_*.json file (paths are relative to the directory you "
                    "run xbench from)",
                )
            self._coco = read_coco(path)
        return self._coco

    def _category_ids(self) -> list[int]:
        """The kept category ids in label order; DataError naming unknown ``categories``."""
        names = self.annotations().categories
        if self.params.categories is None:
            return list(names)
        by_name = {name: cid for cid, name in names.items()}
        unknown = [c for c in self.params.categories if c not in by_name]
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], list(by_name), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise DataError(
                f"{self.params.annotations} has no categories {unknown}{hint}",
                field="categories",
                fix=f"use names from the file's categories: {', '.join(list(by_name)[:20])}...",
            )
        return [by_name[c] for c in self.params.categories]

    @property
    def classes(self) -> tuple[str, ...]:
        if self.params.categories is not None:
            return tuple(self.params.categories)
        if not Path(self.params.annotations).is_file():
            return ()
        return tuple(self.annotations().categories.values())

    def builtin_label_map(self) -> LabelMap | None:
        """COCO's own map when every category is a COCO 2017 category (your own categories need label_map)."""
        return COCO_MAP if COCO_MAP.covers(self.classes) else None

    def check(self) -> None:
        """Both paths exist (one error naming every missing one), the file parses, pycocotools imports,
        the ``categories`` exist and the label map reads."""
        root, annotations = Path(self.params.root), Path(self.params.annotations)
        missing = [(f"image folder {str(root)!r}", "root")] if not root.is_dir() else []
        if not annotations.is_file():
            missing.append((f"annotations {str(annotations)!r}", "annotations"))
        if missing:
            raise DataError(
                " and ".join(what for what, _ in missing) + f" not found (paths are relative to {Path.cwd()})",
                field=missing[0][1],
                fix="point root at the folder that the file_name entries are relative to and annotations at an "
                "instances_*.json file",
            )
        self.annotations()
        _mask_utils()
        self._category_ids()
        self.check_label_map()

    # ------------------------------------------------------------ index

    def _area(self, objects: list[CocoObject], image: CocoImage) -> float:
        """Fraction of the image that a sample's ground truth covers (see ``min_area``)."""
        covered: float
        if self.params.ground_truth == "box":
            boxes = [from_coco(o.bbox).clipped(image.height, image.width) for o in objects]
            covered = (
                max(b.area for b in boxes)
                if self.params.largest_instance
                else union_area(boxes, (image.height, image.width))
            )
        else:
            areas = [o.area for o in objects]
            covered = max(areas) if self.params.largest_instance else sum(areas)
        return covered / (image.height * image.width)

    def index(self, split: str) -> list[SampleRef]:
        """One sample ``<file_name>/<category>`` per (image, kept category with a non-crowd instance),
        images in id order, categories in label order."""
        if self._refs is None:
            coco, ids = self.annotations(), self._category_ids()
            label = {cid: i for i, cid in enumerate(ids)}
            refs = []
            for image_id, image in sorted(coco.images.items()):
                present: dict[int, list[CocoObject]] = {}
                for obj in coco.objects.get(image_id, []):
                    if obj.category in label and not obj.crowd:
                        present.setdefault(obj.category, []).append(obj)
                for cid in sorted(present, key=label.__getitem__):
                    if self._area(present[cid], image) >= self.params.min_area:
                        sample_id = f"{image.file_name}/{coco.categories[cid]}"
                        refs.append(SampleRef(sample_id, label[cid]))
                        self._where[sample_id] = (image_id, cid)
            self._refs = refs
        return list(self._refs)

    # ------------------------------------------------------------ load

    def _read(self, image: CocoImage) -> torch.Tensor | str:
        """The image, or why it cannot be used ("<file_name>: <problem>")."""
        path = Path(self.params.root) / image.file_name
        if not path.is_file():
            return f"{image.file_name}: missing"
        try:
            x = read_image(path)
        except UnreadableImage as exc:
            return f"{image.file_name}: {exc.reason}"
        if tuple(x.shape[-2:]) != (image.height, image.width):
            h, w = x.shape[-2:]
            return f"{image.file_name}: the annotations say {image.width}x{image.height} but the image is {w}x{h}"
        return x

    def load(self, refs: Sequence[SampleRef], split: str, image_size: tuple[int, int] | None = None) -> Batch:
        """Images resized bilinearly and masks by nearest neighbour to ``image_size`` (default: the param);
        each image is read once, unusable ones are left out and listed in ``skipped``."""
        wanted = image_size or self.params.image_size
        size = (int(wanted[0]), int(wanted[1]))
        self.index(split)
        coco = self.annotations()
        images: dict[int, torch.Tensor | str] = {}
        kept: list[tuple[SampleRef, torch.Tensor, torch.Tensor]] = []
        skipped: list[tuple[str, str]] = []
        for ref in refs:
            image_id, cid = self._where[ref.id]
            image = coco.images[image_id]
            if image_id not in images:
                read = self._read(image)
                images[image_id] = read if isinstance(read, str) else resize(read, size)
            x = images[image_id]
            if isinstance(x, str):
                skipped.append((ref.id, x))
                continue
            objects = [o for o in coco.objects[image_id] if o.category == cid]
            mask = sample_mask(objects, image, self.params.ground_truth == "box", self.params.largest_instance)
            kept.append((ref, x, torch.from_numpy(mask)[None]))
        return mask_batch(kept, skipped, size, self.params.keep_original_masks)
