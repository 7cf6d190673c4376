"""`segfolder`: images and class-index mask PNGs side by side, the simplest layout anyone can export to.

Folder mode (one sample per image and class present, like `voc2012`)::

    root/images/<stem>.jpg      any image format
    root/masks/<stem>.png       one value per pixel: 0 background, the classes' values (1..K by default),
                                ``ignore`` (255) void

CSV mode (``labels_csv``): one binary object mask per row, ``image,mask,label``
(paths relative to root, an optional header row); in the mask 0 is background,
``ignore`` void and any other value the object. The sample id is the mask's
path, so one image may carry several objects.

Unreadable files, masks with values that are no class, and masks of another
size than their image are skipped and reported with the file name; a CSV row
that does not parse is an error naming its line.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydantic import Field, field_validator, model_validator

from bench.component import Params
from bench.datasets.base import Dataset
from bench.datasets.image_io import IMAGE_SUFFIXES, UnreadableImage, mask_batch, read_image, resize
from bench.datasets.imagefolder import unique_class_names
from bench.datasets.label_map_files import label_map_field
from bench.errors import DataError
from bench.types import VOID, Batch, SampleRef

READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
CSV_HEADER = ("image", "mask", "label")


class SegFolderParams(Params):
    root: str = Field(description="folder with images/ and masks/ (or the folder the CSV's paths are relative to)")
    classes: list[str] = Field(description="class names in label order; in folder mode, of mask values 1..K")
    values: list[int] | None = Field(
        None, description="folder mode: the mask value of each class (default 1..K); other values are errors"
    )
    background: int = Field(0, ge=0, description="mask value of background pixels")
    ignore: int | None = Field(
        255, ge=0, description="mask value of void pixels (neither object nor background); null: none (0/255 masks)"
    )
    labels_csv: str | None = Field(
        None, description="CSV of `image,mask,label` rows: one binary object mask per row instead of folder mode"
    )
    min_area: float = Field(0.0, ge=0, lt=1, description="drop samples whose object covers less of the image")
    image_size: tuple[int, int] = Field(
        (224, 224), description="(H, W) that images and masks are resized to when the runner asks for no size"
    )
    keep_original_masks: bool = Field(
        True, description="also return each mask at the image's full resolution (metrics with resolution: original)"
    )
    label_map: str | None = label_map_field()

    validate_classes = field_validator("classes")(unique_class_names)

    @model_validator(mode="after")
    def _consistent_values(self) -> SegFolderParams:
        values = self.class_values()
        if len(values) != len(self.classes) or len(set(values)) != len(values):
            raise ValueError("values must give one distinct mask value per class")
        if {self.background, self.ignore} & set(values):
            raise ValueError("a class value equals the background or ignore value")
        return self

    def class_values(self) -> list[int]:
        return list(self.values) if self.values is not None else list(range(1, len(self.classes) + 1))


class Unusable(Exception):
    """A file of one sample cannot be used; the message ("<file>: <problem>") is the skip reason."""


def read_index_mask(path: Path) -> np.ndarray:
    """The per-pixel values of a mask PNG (palette, greyscale, 16-bit or 1-bit); ValueError for colour images."""
    with Image.open(path) as img:
        if img.mode not in ("P", "L", "I", "I;16", "1"):
            raise ValueError(f"a {img.mode} image, not a class-index mask (one value per pixel)")
        return np.asarray(img).astype(np.int64)


class SegFolder(Dataset):
    """Images with class-index mask PNGs (images/, masks/) or binary object masks listed in a CSV."""

    Params = SegFolderParams
    has_masks = True
    variable_size = True
    version = 1

    def __init__(self, params: SegFolderParams | None = None):
        super().__init__(params)
        self._refs: list[SampleRef] | None = None
        self._problems: list[tuple[str, str]] = []
        self._files: dict[str, tuple[str, str, int]] = {}  # sample id -> (image path, mask path, mask value)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.params.classes)

    @property
    def root(self) -> Path:
        return Path(self.params.root)

    def check(self) -> None:
        folders = [self.root] if self.params.labels_csv else [self.root / "images", self.root / "masks"]
        for folder in folders:
            if not folder.is_dir():
                raise DataError(
                    f"folder {str(folder)!r} does not exist (resolved to {folder.resolve()})",
                    field="root",
                    fix="point root at the folder that holds images/ and masks/ (paths are relative to the "
                    "directory you run xbench from)",
                )
        if self.params.labels_csv and not Path(self.params.labels_csv).is_file():
            raise DataError(
                f"labels file {self.params.labels_csv!r} does not exist",
                field="labels_csv",
                fix="point it at a CSV with `image,mask,label` rows",
            )
        self.check_label_map()

    # ------------------------------------------------------------ index

    def index(self, split: str) -> list[SampleRef]:
        """Folder mode: every mask is read once (one sample per class present); CSV mode: one per row."""
        if self._refs is None:
            self.check()
            pairs = self._csv_rows() if self.params.labels_csv else self._folder_pairs()
            refs: list[SampleRef] = []
            for stem, image, mask, label in pairs:
                try:
                    refs += self._samples(stem, image, mask, label)
                except Unusable as exc:
                    self._problems.append((stem, str(exc)))
            if self._problems:
                warnings.warn(
                    f"segfolder: {len(self._problems)} images give no samples because their files cannot be used, "
                    f"e.g. {self._problems[0][1]}",
                    stacklevel=2,
                )
            self._refs = refs
        return list(self._refs)

    def index_problems(self, split: str) -> list[tuple[str, str]]:
        self.index(split)
        return list(self._problems)

    def _folder_pairs(self) -> Iterator[tuple[str, str, str, int | None]]:
        """(stem, image path, mask path, None) for every image in images/; problems for unpaired files."""
        images: dict[str, list[str]] = {}
        for path in sorted((self.root / "images").iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                images.setdefault(path.stem, []).append(f"images/{path.name}")
        masks = {p.stem for p in (self.root / "masks").glob("*.png")}
        for stem in sorted(masks - set(images)):
            self._problems.append((stem, f"masks/{stem}.png: no image images/{stem}.*"))
        for stem, found in sorted(images.items()):
            if len(found) > 1:
                self._problems.append((stem, f"{', '.join(found)}: several images share the stem {stem!r}"))
            elif stem not in masks:
                self._problems.append((stem, f"masks/{stem}.png: missing (the mask of {found[0]})"))
            else:
                yield stem, found[0], f"masks/{stem}.png", None

    def _csv_rows(self) -> Iterator[tuple[str, str, str, int | None]]:
        """(mask path, image path, mask path, label) of every CSV row; DataError naming a bad line."""
        path, labels = Path(self.params.labels_csv), {name: i for i, name in enumerate(self.classes)}
        seen: dict[str, int] = {}
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            for row in reader:
                cells = [c.strip() for c in row]
                if not any(cells) or (reader.line_num == 1 and tuple(c.lower() for c in cells) == CSV_HEADER):
                    continue
                problem = None
                if len(cells) != 3 or not all(cells):
                    problem = f"expected `image,mask,label`, found {','.join(row)!r}"
                elif cells[2] not in labels:
                    problem = f"label {cells[2]!r} is not one of the classes ({', '.join(self.classes)})"
                elif cells[1] in seen:
                    problem = f"mask {cells[1]!r} is listed again (first on line {seen[cells[1]]})"
                if problem:
                    raise DataError(f"{path}, line {reader.line_num}: {problem}", field="labels_csv", fix="fix the row")
                seen[cells[1]] = reader.line_num
                yield cells[1], cells[0], cells[1], labels[cells[2]]

    def _samples(self, stem: str, image: str, mask: str, label: int | None) -> list[SampleRef]:
        """The samples of one image (folder mode) or one CSV row, after ``min_area``."""
        if label is not None and self.params.min_area == 0:  # CSV rows need no mask read to be indexed
            self._files[stem] = (image, mask, -1)
            return [SampleRef(stem, label)]
        values = self._read_mask(mask)
        pixels = values.size
        if label is not None:
            area = float((self._object(values, -1) == 1).sum()) / pixels
            self._files[stem] = (image, mask, -1)
            return [SampleRef(stem, label)] if area >= self.params.min_area else []
        counts = dict(zip(*np.unique(values, return_counts=True), strict=True))
        refs = []
        for position, (name, value) in enumerate(zip(self.classes, self.params.class_values(), strict=True)):
            if counts.get(value, 0) and counts[value] / pixels >= self.params.min_area:
                sample_id = f"{stem}/{name}"
                self._files[sample_id] = (image, mask, value)
                refs.append(SampleRef(sample_id, position))
        return refs

    # ------------------------------------------------------------ masks

    def _read_mask(self, relative: str) -> np.ndarray:
        """A mask's values; Unusable naming the file when it is missing, unreadable or holds foreign values."""
        path = self.root / relative
        if not path.is_file():
            raise Unusable(f"{relative}: missing")
        try:
            values = read_index_mask(path)
        except READ_ERRORS as exc:
            raise Unusable(f"{relative}: {exc}") from exc
        if not self.params.labels_csv:
            known = {self.params.background, self.params.ignore, *self.params.class_values()}
            foreign = sorted(set(np.unique(values).tolist()) - known)
            if foreign:
                raise Unusable(
                    f"{relative}: values {foreign[:5]} are no class, background or ignore value "
                    f"(classes have {self.params.class_values()[:5]}...; set values: to match the masks)"
                )
        return values

    def _object(self, values: np.ndarray, value: int) -> np.ndarray:
        """The ground truth (uint8) of one class value (-1: a binary mask, any non-background value)."""
        p = self.params
        ignored = values == p.ignore if p.ignore is not None else np.zeros(values.shape, dtype=bool)
        mask: np.ndarray
        if value < 0:
            mask = ((values != p.background) & ~ignored).astype(np.uint8)
        else:
            mask = (values == value).astype(np.uint8)
        mask[ignored] = VOID
        return mask

    # ------------------------------------------------------------ load

    def _image(self, image: str) -> torch.Tensor:
        """An image as (3, h, w); Unusable with the reason."""
        path = self.root / image
        if not path.is_file():
            raise Unusable(f"{image}: missing")
        try:
            return read_image(path)
        except UnreadableImage as exc:
            raise Unusable(f"{image}: {exc.reason}") from exc

    def _mask(self, sample_id: str, shape: tuple[int, int]) -> torch.Tensor:
        """The (1, h, w) ground truth of a sample whose image is of ``shape``; Unusable with the reason."""
        _, relative, value = self._files[sample_id]
        mask = self._object(self._read_mask(relative), value)
        if mask.shape != shape:
            (h, w), (ih, iw) = mask.shape, shape
            raise Unusable(f"{relative}: mask is {w}x{h} but the image is {iw}x{ih}")
        if value < 0 and not (mask == 1).any():
            raise Unusable(f"{relative}: no object pixels (masks stored as 0/255 need ignore: null)")
        return torch.from_numpy(mask)[None]

    def load(self, refs: Sequence[SampleRef], split: str, image_size: tuple[int, int] | None = None) -> Batch:
        """Images resized bilinearly and masks by nearest neighbour to ``image_size`` (default: the param);
        each image is read once, unusable samples are left out and listed in ``skipped``."""
        wanted = image_size or self.params.image_size
        size = (int(wanted[0]), int(wanted[1]))
        self.index(split)
        kept: list[tuple[SampleRef, torch.Tensor, torch.Tensor]] = []
        skipped: list[tuple[str, str]] = []
        images: dict[str, tuple[torch.Tensor, tuple[int, int]] | str] = {}
        for ref in refs:
            image = self._files[ref.id][0]
            if image not in images:
                try:
                    x = self._image(image)
                    images[image] = (resize(x, size), (int(x.shape[-2]), int(x.shape[-1])))
                except Unusable as exc:
                    images[image] = str(exc)
            entry = images[image]
            try:
                if isinstance(entry, str):
                    raise Unusable(entry)
                kept.append((ref, entry[0], self._mask(ref.id, entry[1])))
            except Unusable as exc:
                skipped.append((ref.id, str(exc)))
        return mask_batch(kept, skipped, size, self.params.keep_original_masks)
