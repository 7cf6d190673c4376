"""`voc2012`: Pascal VOC, one sample per (image, object class) with that class's mask or boxes.

VOC images hold several objects of several classes, but an explanation is of
one class. So every class present in an image gives its own sample, whose
ground truth is that class's pixels (or its largest instance), with VOC's
border pixels (255) marked ``VOID`` so that metrics ignore them. With
``ground_truth: box`` it is the class's bounding boxes from the detection
annotations instead, filled (see ``voc_boxes``): what the published
pointing-game numbers use, on VOC 2007 as well as 2012.

The data stays in the original VOCdevkit layout::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png    palette PNG: 0 background, 1..20 classes, 255 border
    VOCdevkit/VOC2012/SegmentationObject/<id>.png   optional: instance ids, 255 border
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
    VOCdevkit/VOC2012/Annotations/<id>.xml          ground_truth: box (images from ImageSets/Main/<split>.txt)
"""

from __future__ import annotations

import tarfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
from PIL import Image
from pydantic import Field, field_validator

from bench.component import Params
from bench.datasets.base import Dataset
from bench.datasets.image_io import UnreadableImage, mask_batch, read_image, resize
from bench.datasets.label_map_files import label_map_field
from bench.datasets.label_maps import VOC_MAP, LabelMap
from bench.datasets.voc_boxes import BoxTruth, parse_annotation
from bench.datasets.voc_masks import (
    VOC_CLASSES,
    VOC_VOID,
    MaskTruth,
    classes_present,
    gt_areas,
    instance_sizes,
    largest_instance,
    sample_mask,
)
from bench.errors import DataError
from bench.types import Batch, SampleRef

__all__ = [
    "VOC2012",
    "VOC_CLASSES",
    "VOC_VOID",
    "VOC2012Params",
    "classes_present",
    "gt_areas",
    "instance_sizes",
    "largest_instance",
    "sample_mask",
]

SPLITS = ("train", "val", "trainval")
IMAGES = "JPEGImages"
CLASS_MASKS = "SegmentationClass"
OBJECT_MASKS = "SegmentationObject"
ANNOTATIONS = "Annotations"
IMAGE_SETS = {"mask": "ImageSets/Segmentation", "box": "ImageSets/Main"}
ARCHIVE = "VOCtrainval_11-May-2012.tar"
# Errors that PIL raises for truncated or garbled files (SyntaxError, EOFError: some broken PNGs).
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)

T = TypeVar("T")
Truth = MaskTruth | BoxTruth


class VOC2012Params(Params):
    root: str = Field(
        description="folder that holds VOCdevkit (or the VOCdevkit, VOC2012 or VOC2007 folder itself); "
        "paths are relative to the directory you run xbench from"
    )
    split: Literal["train", "val", "trainval", "test"] = Field(
        "val", description="split the benchmark samples (test: VOC 2007's, with ground_truth: box)"
    )
    ground_truth: Literal["mask", "box"] = Field(
        "mask",
        description="mask: the class's pixels (SegmentationClass); box: its bounding boxes from Annotations/<id>.xml, "
        "filled, difficult ones void (images from ImageSets/Main)",
    )
    download: bool = Field(False, description="download VOCtrainval_11-May-2012.tar (2 GB) into root when absent")
    single_class_only: bool = Field(False, description="keep only images whose ground truth holds exactly one class")
    min_area: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="drop samples whose ground truth (the class, or its largest instance) covers less than this "
        "fraction of the image's pixels",
    )
    instance_masks: bool = Field(
        False,
        description="ground truth = the largest instance of the class (SegmentationObject; the largest box with "
        "ground_truth: box); its other instances become void",
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


class UnreadableSample(Exception):
    """A file of one image cannot be used; the message ("<file>: <problem>") goes to ``Batch.skipped``."""


# ---------------------------------------------------------------- files


def read_label_png(path: Path) -> np.ndarray:
    """The index array (h, w) uint8 of a VOC label PNG: palette ("P") or greyscale ("L") mode."""
    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise ValueError(f"a {img.mode} image, not a palette (P) label PNG")
        return np.array(img, dtype=np.uint8)


def read_class_png(path: Path) -> np.ndarray:
    """A SegmentationClass PNG as an index array; a ValueError when it holds values that are no VOC class."""
    class_mask = read_label_png(path)
    classes_present(class_mask)
    return class_mask


def image_shape(path: Path) -> tuple[int, int]:
    """(height, width) of an image from its header, without decoding it."""
    with Image.open(path) as img:
        return img.height, img.width


def read_or_skip(voc: Path, relative: str, read: Callable[[Path], T]) -> T:
    """``read(voc / relative)``; an UnreadableSample naming the file when it is missing or undecodable."""
    path = voc / relative
    if not path.is_file():
        raise UnreadableSample(f"{relative}: missing")
    try:
        return read(path)
    except UnreadableImage as exc:
        raise UnreadableSample(f"{relative}: {exc.reason}") from exc
    except READ_ERRORS as exc:
        raise UnreadableSample(f"{relative}: {exc}") from exc


def voc_candidates(root: Path) -> tuple[Path, ...]:
    """Where the VOC folder may be: root holds VOCdevkit, or is VOCdevkit, or is VOC2012 (VOC2007) itself."""
    devkit = root / "VOCdevkit"
    return (devkit / "VOC2012", devkit / "VOC2007", root / "VOC2012", root / "VOC2007", root)


def find_voc2012(root: Path) -> Path | None:
    """The first candidate folder that has any of VOC's folders (check() says which others are missing)."""
    for folder in voc_candidates(root):
        if any((folder / part).is_dir() for part in (IMAGES, CLASS_MASKS, ANNOTATIONS, "ImageSets")):
            return folder
    return None


def parse_sample_id(sample_id: str) -> tuple[str, int]:
    """``"<image id>/<class name>"`` -> (image id, VOC index 1..20)."""
    image_id, _, class_name = sample_id.rpartition("/")
    if not image_id or class_name not in VOC_CLASSES:
        raise ValueError(f"{sample_id!r} is not a voc2012 sample id (<image id>/<class name>)")
    return image_id, VOC_CLASSES.index(class_name) + 1


# ---------------------------------------------------------------- dataset


class VOC2012(Dataset):
    """Pascal VOC 2012 (or 2007): one sample per (image, class present), class masks or boxes as ground truth."""

    Params = VOC2012Params
    has_masks = True
    variable_size = True
    version = 1
    identity_defaults: ClassVar[dict[str, Any]] = {"label_map": None, "ground_truth": "mask"}

    def __init__(self, params: VOC2012Params | None = None):
        super().__init__(params)
        self._voc: Path | None = None
        self._index: dict[str, list[SampleRef]] = {}
        self._problems: dict[str, list[tuple[str, str]]] = {}

    @property
    def classes(self) -> tuple[str, ...]:
        return VOC_CLASSES

    @property
    def boxes(self) -> bool:
        box: bool = self.params.ground_truth == "box"
        return box

    def splits(self) -> tuple[str, ...]:
        return (*SPLITS, "test") if self.params.split == "test" else SPLITS

    def builtin_label_map(self) -> LabelMap:
        return VOC_MAP

    def content_identity(self) -> dict[str, Any]:
        identity = super().content_identity()
        identity["params"].pop("download", None)  # how the files got there does not change them
        return identity

    # ------------------------------------------------------------ layout

    def voc_dir(self) -> Path:
        """The VOC folder (downloaded first when ``download`` is set and nothing is found)."""
        if self._voc is None:
            root = Path(self.params.root)
            found = find_voc2012(root)
            if found is None and self.params.download:
                self._download(root)
                found = find_voc2012(root)
            if found is None:
                looked = ", ".join(str(p) for p in voc_candidates(root))
                raise DataError(
                    f"no VOC folder (with {IMAGES}, {CLASS_MASKS} or {ANNOTATIONS}, ImageSets) found: "
                    f"looked at {looked}",
                    field="root",
                    fix=f"point root at the folder that holds VOCdevkit (unpacked from {ARCHIVE}), "
                    "or set download: true",
                )
            self._voc = found
        return self._voc

    def _download(self, root: Path) -> None:
        from torchvision.datasets import VOCSegmentation

        try:
            VOCSegmentation(str(root), year="2012", image_set=self.params.split, download=True)
        except (OSError, RuntimeError, ValueError, tarfile.TarError) as exc:
            raise DataError(
                f"downloading VOC 2012 into {root} failed: {exc}",
                field="download",
                fix=f"download {ARCHIVE} by hand, unpack it so that {root / 'VOCdevkit' / 'VOC2012' / IMAGES} "
                "exists, and set download: false",
            ) from exc

    def _image_set(self, split: str) -> str:
        return f"{IMAGE_SETS[self.params.ground_truth]}/{split}.txt"

    def _check_layout(self, split: str) -> Path:
        voc = self.voc_dir()
        truth = [(voc / ANNOTATIONS, "ground_truth")] if self.boxes else [(voc / CLASS_MASKS, "root")]
        required = [(voc / IMAGES, "root"), *truth, (voc / self._image_set(split), "root")]
        if self.params.instance_masks and not self.boxes:
            required.append((voc / OBJECT_MASKS, "instance_masks"))
        fixes = {
            "instance_masks": "set instance_masks: false (the folder has no instance masks)",
            "ground_truth": "set ground_truth: mask, or use a VOCdevkit folder with the detection annotations",
        }
        for path, field in required:
            if not path.exists():
                raise DataError(
                    f"the VOC data at {voc} lacks {path}",
                    field=field,
                    fix=fixes.get(field, f"use the complete VOCdevkit folder from {ARCHIVE}, or set download: true"),
                )
        return voc

    def check(self) -> None:
        self._check_layout(self.params.split)
        self.check_label_map()

    # ------------------------------------------------------------ ground truth of one image

    def _truth(self, voc: Path, image_id: str) -> Truth:
        """The ground truth of an image: its label PNGs, or its annotation's boxes (UnreadableSample when
        a file is missing or undecodable; DataError for an annotation that does not parse)."""
        if self.boxes:
            path = voc / ANNOTATIONS / f"{image_id}.xml"
            if not path.is_file():
                raise UnreadableSample(f"{ANNOTATIONS}/{image_id}.xml: missing")
            return parse_annotation(path, VOC_CLASSES)
        class_mask = read_or_skip(voc, f"{CLASS_MASKS}/{image_id}.png", read_class_png)
        if not self.params.instance_masks:
            return MaskTruth(class_mask)
        object_mask = read_or_skip(voc, f"{OBJECT_MASKS}/{image_id}.png", read_label_png)
        if object_mask.shape != class_mask.shape:
            raise UnreadableSample(f"{OBJECT_MASKS}/{image_id}.png: size differs from {CLASS_MASKS}")
        return MaskTruth(class_mask, object_mask)

    def _truth_file(self, image_id: str) -> str:
        if self.boxes:
            return f"{ANNOTATIONS}/{image_id}.xml"
        return f"{OBJECT_MASKS if self.params.instance_masks else CLASS_MASKS}/{image_id}.png"

    def _areas(self, voc: Path, image_id: str) -> dict[int, float]:
        """VOC index -> ground-truth area (fraction of the image) of every class the image gives a sample of."""
        truth = self._truth(voc, image_id)
        shape = truth.shape or read_or_skip(voc, f"{IMAGES}/{image_id}.jpg", image_shape)
        try:
            return truth.areas(shape, self.params.instance_masks)
        except ValueError as exc:  # a class without instance in the object mask
            raise UnreadableSample(f"{self._truth_file(image_id)}: {exc}") from exc

    # ------------------------------------------------------------ index

    def image_ids(self, split: str) -> list[str]:
        """The image ids listed in the split's ImageSets file, in file order."""
        voc = self._check_layout(split)
        lines = (voc / self._image_set(split)).read_text().splitlines()
        return [line.split()[0] for line in lines if line.strip()]

    def _samples_of(self, image_id: str, areas: dict[int, float]) -> list[SampleRef]:
        """The samples that one image gives after the ``single_class_only`` and ``min_area`` filters."""
        if self.params.single_class_only and len(areas) != 1:
            return []
        return [
            SampleRef(f"{image_id}/{VOC_CLASSES[c - 1]}", c - 1)
            for c, area in sorted(areas.items())
            if area >= self.params.min_area
        ]

    def index(self, split: str) -> list[SampleRef]:
        """Reads every mask (or annotation) of the split once (cached): one sample per (image, class present)."""
        if split not in self._index:
            image_ids, voc = self.image_ids(split), self.voc_dir()
            refs: list[SampleRef] = []
            problems: list[tuple[str, str]] = []
            for image_id in image_ids:
                try:
                    refs += self._samples_of(image_id, self._areas(voc, image_id))
                except UnreadableSample as exc:
                    problems.append((image_id, str(exc)))
            if problems:
                warnings.warn(
                    f"voc2012 {split}: {len(problems)} images give no samples because their files cannot be used, "
                    f"e.g. {problems[0][1]}",
                    stacklevel=2,
                )
            self._index[split], self._problems[split] = refs, problems
        return list(self._index[split])

    def index_problems(self, split: str) -> list[tuple[str, str]]:
        """(image id, "<file>: <problem>") of the images that ``index(split)`` left out."""
        self.index(split)
        return list(self._problems[split])

    # ------------------------------------------------------------ load

    def _read(self, voc: Path, image_id: str) -> tuple[torch.Tensor, Truth]:
        """An image and its ground truth; UnreadableSample when a file is missing, undecodable or of another size."""
        image = read_or_skip(voc, f"{IMAGES}/{image_id}.jpg", read_image)
        truth = self._truth(voc, image_id)
        (ih, iw) = image.shape[-2:]
        if truth.shape is not None and truth.shape != (ih, iw):
            (h, w) = truth.shape
            what = (
                f"{ANNOTATIONS}/{image_id}.xml: <size> is" if self.boxes else f"{CLASS_MASKS}/{image_id}.png: mask is"
            )
            raise UnreadableSample(f"{what} {w}x{h} but the image is {iw}x{ih}")
        return image, truth

    def _mask(self, truth: Truth, image_id: str, voc_index: int, shape: tuple[int, int]) -> torch.Tensor | str:
        """The (1, h, w) ground truth of one sample, or the reason it cannot be made."""
        try:
            return torch.from_numpy(truth.mask(voc_index, shape, self.params.instance_masks))[None]
        except ValueError as exc:
            return f"{self._truth_file(image_id)}: {exc}"

    def load(self, refs: Sequence[SampleRef], split: str, image_size: tuple[int, int] | None = None) -> Batch:
        """Images resized bilinearly and masks by nearest neighbour to ``image_size`` (default: the param).

        Each image is read once however many of its samples are in ``refs``;
        samples whose files cannot be used are left out and listed in ``skipped``.
        """
        wanted = image_size or self.params.image_size
        size = (int(wanted[0]), int(wanted[1]))
        voc = self.voc_dir()
        parsed = [parse_sample_id(ref.id) for ref in refs]
        images: dict[str, tuple[torch.Tensor, Truth, tuple[int, int]] | str] = {}
        for image_id, _ in parsed:
            if image_id not in images:
                try:
                    image, truth = self._read(voc, image_id)
                    images[image_id] = (resize(image, size), truth, (image.shape[-2], image.shape[-1]))
                except UnreadableSample as exc:
                    images[image_id] = str(exc)
        kept: list[tuple[SampleRef, torch.Tensor, torch.Tensor]] = []
        skipped: list[tuple[str, str]] = []
        for ref, (image_id, voc_index) in zip(refs, parsed, strict=True):
            entry = images[image_id]
            if isinstance(entry, str):
                skipped.append((ref.id, entry))
                continue
            mask = self._mask(entry[1], image_id, voc_index, entry[2])
            if isinstance(mask, str):
                skipped.append((ref.id, mask))
                continue
            kept.append((ref, entry[0], mask))
        return mask_batch(kept, skipped, size, self.params.keep_original_masks)
