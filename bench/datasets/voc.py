"""`voc2012`: Pascal VOC 2012 segmentation, one sample per (image, object class) with that class's mask.

VOC images hold several objects of several classes, but an explanation is of
one class. So every class present in an image gives its own sample, whose
ground truth is that class's pixels (or its largest instance), with VOC's
border pixels (255) marked ``VOID`` so that metrics ignore them.

The data stays in the original VOCdevkit layout::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png    palette PNG: 0 background, 1..20 classes, 255 border
    VOCdevkit/VOC2012/SegmentationObject/<id>.png   optional: instance ids, 255 border
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
"""

from __future__ import annotations

import tarfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from PIL import Image
from pydantic import Field, field_validator

from bench.component import Params
from bench.datasets.base import Dataset
from bench.datasets.image_io import UnreadableImage, read_image, resize, resize_mask
from bench.errors import DataError
from bench.types import VOID, Batch, SampleRef

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
SPLITS = ("train", "val", "trainval")

IMAGES = "JPEGImages"
CLASS_MASKS = "SegmentationClass"
OBJECT_MASKS = "SegmentationObject"
IMAGE_SETS = "ImageSets/Segmentation"
ARCHIVE = "VOCtrainval_11-May-2012.tar"
# Errors that PIL raises for truncated or garbled files (SyntaxError, EOFError: some broken PNGs).
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)

T = TypeVar("T")


class VOC2012Params(Params):
    root: str = Field(
        description="folder that holds VOCdevkit (or the VOCdevkit or VOC2012 folder itself); "
        "paths are relative to the directory you run xbench from"
    )
    split: Literal["train", "val", "trainval"] = Field("val", description="segmentation split the benchmark samples")
    download: bool = Field(False, description="download VOCtrainval_11-May-2012.tar (2 GB) into root when absent")
    single_class_only: bool = Field(False, description="keep only images whose mask holds exactly one object class")
    min_area: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="drop samples whose ground truth (the class, or its largest instance) covers less than this "
        "fraction of the image's pixels",
    )
    instance_masks: bool = Field(
        False,
        description="ground truth = the largest instance of the class (SegmentationObject); its other instances "
        "become void",
    )
    image_size: tuple[int, int] = Field(
        (224, 224), description="(H, W) that images and masks are resized to when the runner asks for no size"
    )
    keep_original_masks: bool = Field(
        True, description="also return each mask at the image's full resolution (metrics with resolution: original)"
    )

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        if min(size) < 1:
            raise ValueError("image_size must be two positive integers (H, W)")
        return size


class UnreadableSample(Exception):
    """A file of one image cannot be used; the message ("<file>: <problem>") goes to ``Batch.skipped``."""


# ---------------------------------------------------------------- mask logic (pure NumPy, unit-tested)


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
    """Where the VOC2012 folder may be: root is the folder holding VOCdevkit, VOCdevkit, or VOC2012 itself."""
    return (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root)


def find_voc2012(root: Path) -> Path | None:
    """The first candidate folder that has any of VOC2012's folders (check() says which others are missing)."""
    for folder in voc_candidates(root):
        if any((folder / part).is_dir() for part in (IMAGES, CLASS_MASKS, "ImageSets")):
            return folder
    return None


def object_problem(image_id: str, exc: ValueError) -> str:
    """The skip reason when an object mask lacks an instance of a class that the class mask has."""
    return f"{OBJECT_MASKS}/{image_id}.png: {exc}"


def parse_sample_id(sample_id: str) -> tuple[str, int]:
    """``"<image id>/<class name>"`` -> (image id, VOC index 1..20)."""
    image_id, _, class_name = sample_id.rpartition("/")
    if not image_id or class_name not in VOC_CLASSES:
        raise ValueError(f"{sample_id!r} is not a voc2012 sample id (<image id>/<class name>)")
    return image_id, VOC_CLASSES.index(class_name) + 1


# ---------------------------------------------------------------- dataset


class VOC2012(Dataset):
    """Pascal VOC 2012 segmentation: one sample per (image, class present), class masks with void borders."""

    Params = VOC2012Params
    has_masks = True
    variable_size = True
    version = 1

    def __init__(self, params: Params | None = None):
        super().__init__(params)
        self._voc: Path | None = None
        self._index: dict[str, list[SampleRef]] = {}
        self._problems: dict[str, list[tuple[str, str]]] = {}

    @property
    def classes(self) -> tuple[str, ...]:
        return VOC_CLASSES

    def splits(self) -> tuple[str, ...]:
        return SPLITS

    def content_identity(self) -> dict[str, Any]:
        identity = super().content_identity()
        identity["params"].pop("download", None)  # how the files got there does not change them
        return identity

    # ------------------------------------------------------------ layout

    def voc_dir(self) -> Path:
        """The VOC2012 folder (downloaded first when ``download`` is set and nothing is found)."""
        if self._voc is None:
            root = Path(self.params.root)
            found = find_voc2012(root)
            if found is None and self.params.download:
                self._download(root)
                found = find_voc2012(root)
            if found is None:
                looked = ", ".join(str(p) for p in voc_candidates(root))
                raise DataError(
                    f"no VOC2012 folder (with {IMAGES}, {CLASS_MASKS}, ImageSets) found: looked at {looked}",
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

    def _check_layout(self, split: str) -> Path:
        voc = self.voc_dir()
        required = [(voc / IMAGES, "root"), (voc / CLASS_MASKS, "root"), (voc / IMAGE_SETS / f"{split}.txt", "root")]
        if self.params.instance_masks:
            required.append((voc / OBJECT_MASKS, "instance_masks"))
        for path, field in required:
            if not path.exists():
                raise DataError(
                    f"the VOC2012 data at {voc} lacks {path}",
                    field=field,
                    fix="set instance_masks: false (the folder has no instance masks)"
                    if field == "instance_masks"
                    else f"use the complete VOCdevkit/VOC2012 folder from {ARCHIVE}, or set download: true",
                )
        return voc

    def check(self) -> None:
        self._check_layout(self.params.split)

    # ------------------------------------------------------------ index

    def _masks(self, voc: Path, image_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The class mask of an image and, with ``instance_masks``, its object mask."""
        class_mask = read_or_skip(voc, f"{CLASS_MASKS}/{image_id}.png", read_class_png)
        if not self.params.instance_masks:
            return class_mask, None
        object_mask = read_or_skip(voc, f"{OBJECT_MASKS}/{image_id}.png", read_label_png)
        if object_mask.shape != class_mask.shape:
            raise UnreadableSample(f"{OBJECT_MASKS}/{image_id}.png: size differs from {CLASS_MASKS}")
        return class_mask, object_mask

    def image_ids(self, split: str) -> list[str]:
        """The image ids listed in ``ImageSets/Segmentation/<split>.txt``, in file order."""
        voc = self._check_layout(split)
        lines = (voc / IMAGE_SETS / f"{split}.txt").read_text().splitlines()
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
        """Reads every mask of the split once (cached): one sample per (image, class present)."""
        if split not in self._index:
            image_ids, voc = self.image_ids(split), self.voc_dir()
            refs: list[SampleRef] = []
            problems: list[tuple[str, str]] = []
            for image_id in image_ids:
                try:
                    areas = gt_areas(*self._masks(voc, image_id))
                except UnreadableSample as exc:
                    problems.append((image_id, str(exc)))
                    continue
                except ValueError as exc:  # an instance-less class in the object mask
                    problems.append((image_id, object_problem(image_id, exc)))
                    continue
                refs += self._samples_of(image_id, areas)
            if problems:
                warnings.warn(
                    f"voc2012 {split}: {len(problems)} images give no samples because their masks cannot be used, "
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

    def _read(self, voc: Path, image_id: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray | None]:
        """An image and its masks; UnreadableSample when one is missing, undecodable or of another size."""
        image = read_or_skip(voc, f"{IMAGES}/{image_id}.jpg", read_image)
        class_mask, object_mask = self._masks(voc, image_id)
        if class_mask.shape != tuple(image.shape[-2:]):
            (h, w), (ih, iw) = class_mask.shape, image.shape[-2:]
            raise UnreadableSample(f"{CLASS_MASKS}/{image_id}.png: mask is {w}x{h} but the image is {iw}x{ih}")
        return image, class_mask, object_mask

    def load(self, refs: Sequence[SampleRef], split: str, image_size: tuple[int, int] | None = None) -> Batch:
        """Images resized bilinearly and masks by nearest neighbour to ``image_size`` (default: the param).

        Each image is read once however many of its samples are in ``refs``;
        samples whose files cannot be used are left out and listed in ``skipped``.
        """
        wanted = image_size or self.params.image_size
        size = (int(wanted[0]), int(wanted[1]))
        voc = self.voc_dir()
        parsed = [parse_sample_id(ref.id) for ref in refs]
        images: dict[str, tuple[torch.Tensor, np.ndarray, np.ndarray | None] | str] = {}
        for image_id, _ in parsed:
            if image_id not in images:
                try:
                    image, class_mask, object_mask = self._read(voc, image_id)
                    images[image_id] = (resize(image, size), class_mask, object_mask)
                except UnreadableSample as exc:
                    images[image_id] = str(exc)
        kept: list[tuple[SampleRef, torch.Tensor, torch.Tensor]] = []
        skipped: list[tuple[str, str]] = []
        for ref, (image_id, voc_index) in zip(refs, parsed, strict=True):
            entry = images[image_id]
            if isinstance(entry, str):
                skipped.append((ref.id, entry))
                continue
            x, class_mask, object_mask = entry
            try:
                mask = torch.from_numpy(sample_mask(class_mask, voc_index, object_mask))[None]
            except ValueError as exc:
                skipped.append((ref.id, object_problem(image_id, exc)))
                continue
            kept.append((ref, x, mask))
        return self._batch(kept, skipped, size)

    def _batch(
        self,
        kept: list[tuple[SampleRef, torch.Tensor, torch.Tensor]],
        skipped: list[tuple[str, str]],
        size: tuple[int, int],
    ) -> Batch:
        """Stack the usable samples (full-resolution masks resized; kept as originals when asked)."""
        if not kept:
            x, mask = torch.empty(0, 3, *size), torch.empty(0, 1, *size, dtype=torch.uint8)
        else:
            x = torch.stack([x for _, x, _ in kept])
            mask = torch.stack([resize_mask(m, size) for _, _, m in kept])
        return Batch(
            x=x,
            label=torch.tensor([ref.label for ref, _, _ in kept], dtype=torch.long),
            ids=[ref.id for ref, _, _ in kept],
            mask=mask,
            original_masks=[m for _, _, m in kept] if self.params.keep_original_masks else None,
            skipped=skipped,
        )
