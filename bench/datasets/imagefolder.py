"""`imagefolder`: images stored as ``root/<class>/<image>``, labels from folder names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import Field

from bench.component import Params
from bench.datasets.base import Dataset
from bench.errors import DataError
from bench.types import Batch, SampleRef

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


class ImageFolderParams(Params):
    root: str = Field(description="folder with one sub-folder of images per class (the benchmark split)")
    train_root: str | None = Field(None, description="same layout, used when a model is trained on this dataset")
    classes: list[str] | None = Field(
        None, description="class names in label order (sub-folder names); default: sorted sub-folders"
    )
    image_size: tuple[int, int] | None = Field(None, description="resize every image to (H, W); default: as stored")


class ImageFolder(Dataset):
    """Generic labelled images in root/<class>/<image> folders (no masks)."""

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

    def index(self, split: str) -> list[SampleRef]:
        root = self._root(split)
        refs = []
        for label, cls in enumerate(self.classes):
            files = sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            refs += [SampleRef(f"{cls}/{p.name}", label) for p in files]
        return refs

    def _read(self, path: Path) -> torch.Tensor:
        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read image {path}: {exc}", fix="replace or delete the file") from exc
        return torch.from_numpy(array).permute(2, 0, 1)

    def load(self, refs: Sequence[SampleRef], split: str, image_size: tuple[int, int] | None = None) -> Batch:
        root = self._root(split)
        size = image_size or self.params.image_size
        images = []
        for ref in refs:
            x = self._read(root / ref.id)
            if size is not None and tuple(x.shape[-2:]) != tuple(size):
                x = F.interpolate(x[None], size=tuple(size), mode="bilinear", align_corners=False)[0].clamp(0, 1)
            images.append(x)
        shapes = {tuple(x.shape) for x in images}
        if len(shapes) > 1:
            raise DataError(
                f"images under {root} differ in size {sorted(shapes)[:3]}",
                field="image_size",
                fix="set params.image_size so that they are resized to one size",
            )
        x = torch.stack(images) if images else torch.empty(0, 3, 1, 1)
        labels = torch.tensor([r.label for r in refs], dtype=torch.long)
        return Batch(x=x, label=labels, ids=[r.id for r in refs])
