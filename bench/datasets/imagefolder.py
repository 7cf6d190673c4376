"""`imagefolder`: images stored as ``root/<class>/<image>``, labels from folder names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import Field, field_validator

from bench.component import Params
from bench.datasets.base import Dataset
from bench.datasets.image_io import IMAGE_SUFFIXES, first_image_shape, is_image_file, load_image_batch
from bench.datasets.label_map_files import label_map_field
from bench.errors import DataError
from bench.types import Batch, ImageShape, SampleRef

__all__ = ["IMAGE_SUFFIXES", "ImageFolder", "ImageFolderParams", "unique_class_names"]


def unique_class_names(names: list[str] | None) -> list[str] | None:
    """``names`` unchanged when none is empty or repeated (labels are positions in this list)."""
    if names is None:
        return None
    if not names:
        raise ValueError("classes must name at least one class")
    if any(not n for n in names):
        raise ValueError("class names must not be empty")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"class names repeat: {repeated}")
    return names


class ImageFolderParams(Params):
    root: str = Field(description="folder with one sub-folder of images per class (the benchmark split)")
    train_root: str | None = Field(None, description="same layout, used when a model is trained on this dataset")
    classes: list[str] | None = Field(
        None, description="class names in label order (sub-folder names); default: sorted sub-folders"
    )
    image_size: tuple[int, int] | None = Field(None, description="resize every image to (H, W); default: as stored")
    label_map: str | None = label_map_field()

    validate_classes = field_validator("classes")(unique_class_names)


class ImageFolder(Dataset):
    """Generic labelled images in root/<class>/<image> folders (no masks); unreadable files are skipped."""

    Params = ImageFolderParams
    version = 1

    def _root(self, split: str) -> Path:
        if split == "train":
            if self.params.train_root is None:
                raise DataError(
                    "this imagefolder dataset has no train split",
                    field="train_root",
                    fix="set params.train_root to a folder of the same layout",
                )
            return Path(self.params.train_root)
        return Path(self.params.root)

    @property
    def classes(self) -> tuple[str, ...]:
        if self.params.classes is not None:
            return tuple(self.params.classes)
        root = Path(self.params.root)
        return tuple(sorted(p.name for p in root.iterdir() if p.is_dir())) if root.is_dir() else ()

    @property
    def eval_split(self) -> str:
        return "test"

    def splits(self) -> tuple[str, ...]:
        return ("train", "test") if self.params.train_root else ("test",)

    def check(self) -> None:
        for split in self.splits():
            root = self._root(split)
            field = "train_root" if split == "train" else "root"
            if not root.is_dir():
                raise DataError(
                    f"data directory {str(root)!r} does not exist (resolved to {root.resolve()})",
                    field=field,
                    fix="point it at a folder that holds one sub-folder per class (paths are relative to "
                    "the directory you run xbench from)",
                )
            missing = [c for c in self.classes if not (root / c).is_dir()]
            if missing or not self.classes:
                raise DataError(
                    f"data directory {str(root)!r} lacks class folders {missing or '(none found)'}",
                    field=field,
                    fix="give params.classes that match the sub-folder names, or fix the layout root/<class>/<image>",
                )
        self.check_label_map()

    def index(self, split: str) -> list[SampleRef]:
        """Every image as ``<class>/<file name>``, classes in label order, files sorted by name."""
        root = self._root(split)
        refs = []
        for label, cls in enumerate(self.classes):
            files = sorted(p.name for p in (root / cls).iterdir() if p.is_file() and is_image_file(p))
            refs += [SampleRef(f"{cls}/{name}", label) for name in files]
        return refs

    def image_shape(self) -> ImageShape | None:
        """``image_size``, else the stored size of the first image (reads one file header)."""
        if self.params.image_size is not None:
            return (3, *self.params.image_size)
        try:
            refs = self.index(self.eval_split)
        except (OSError, DataError):
            return None
        return first_image_shape(refs, self._root(self.eval_split))

    def load(self, refs: Sequence[SampleRef], split: str, image_size: tuple[int, int] | None = None) -> Batch:
        """The images of ``refs``; unreadable ones are left out and listed in ``Batch.skipped``."""
        root = self._root(split)
        size = image_size or self.params.image_size
        return load_image_batch(refs, [root / ref.id for ref in refs], size, where=root)
