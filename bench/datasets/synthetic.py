"""`synthetic`: the embedded shapes benchmark with exact ground-truth masks (no files needed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field, model_validator

from bench.component import Params
from bench.datasets import shapes
from bench.datasets.base import Dataset
from bench.datasets.image_io import resize, resize_mask
from bench.types import Batch, ImageShape, SampleRef


class SyntheticParams(Params):
    size: int = Field(64, ge=24, le=256, description="image side in pixels")
    train_size: int = Field(6000, ge=10, le=1_000_000, description="images in the train split")
    test_size: int = Field(1000, ge=10, le=1_000_000, description="images in the test split")
    data_seed: int = Field(0, ge=0, description="seed that generates the images (the data itself, not the sampling)")
    split: Literal["train", "test"] = Field("test", description="split the benchmark samples from")
    min_radius: float = Field(0.16, gt=0, le=0.45, description="smallest shape radius, fraction of the side")
    max_radius: float = Field(0.26, gt=0, le=0.45, description="largest shape radius, fraction of the side")
    lines: int = Field(6, ge=0, le=100, description="clutter line segments per image")
    dots: int = Field(12, ge=0, le=500, description="clutter dots per image")
    noise: float = Field(0.04, ge=0, le=0.5, description="per-pixel Gaussian noise std")

    @model_validator(mode="after")
    def _radius_order(self) -> SyntheticParams:
        if self.min_radius > self.max_radius:
            raise ValueError("min_radius must not exceed max_radius")
        return self


class Synthetic(Dataset):
    """Shapes (disk, square, triangle, cross, star) on clutter; class = outline; exact masks."""

    Params = SyntheticParams
    has_masks = True
    version = 1

    @property
    def classes(self) -> tuple[str, ...]:
        return shapes.CLASSES

    @property
    def style(self) -> shapes.ShapeStyle:
        p = self.params
        return shapes.ShapeStyle(
            size=p.size, min_radius=p.min_radius, max_radius=p.max_radius, lines=p.lines, dots=p.dots, noise=p.noise
        )

    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def image_shape(self) -> ImageShape:
        return (3, self.params.size, self.params.size)

    def _count(self, split: str) -> int:
        count: int = self.params.train_size if split == "train" else self.params.test_size
        return count

    def index(self, split: str) -> list[SampleRef]:
        seed = self.params.data_seed
        return [SampleRef(f"{split}/{i:06d}", shapes.label_of(seed, split, i)) for i in range(self._count(split))]

    def load(self, refs: Sequence[SampleRef], split: str, image_size: tuple[int, int] | None = None) -> Batch:
        indices = [int(ref.id.rsplit("/", 1)[1]) for ref in refs]
        images, masks, labels = shapes.render_many(self.params.data_seed, split, indices, self.style)
        x = torch.from_numpy(images)
        mask = torch.from_numpy(masks).unsqueeze(1)
        if image_size is not None:
            x = resize(x, image_size)
            mask = torch.stack([resize_mask(m, (image_size[0], image_size[1])) for m in mask])
        return Batch(x=x, label=torch.from_numpy(labels), ids=[r.id for r in refs], mask=mask)
