"""Data that flows between datasets, models, explainers, metrics and the runner."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

import torch
from torch import nn

ImageShape = tuple[int, int, int]  # (C, H, W) of the images a component sees
VOID = 255  # mask value for pixels that count neither as object nor as background (VOC's border)


class Direction(StrEnum):
    """Which way a metric improves; used to rank and to flag regressions."""

    HIGHER = "higher"
    LOWER = "lower"

    @property
    def higher_is_better(self) -> bool:
        return self is Direction.HIGHER


@dataclass(frozen=True)
class SampleRef:
    """A sample of a dataset split: a stable id (the same on every machine) and its class label."""

    id: str
    label: int


@dataclass
class Batch:
    """A batch of images with everything metrics may need.

    x: (N, C, H, W) float32 images in [0, 1] (models normalise internally).
    label: (N,) int64 dataset labels.
    ids: stable sample ids.
    mask: (N, 1, H, W) uint8 ground truth of the explained target: 1 object,
        0 background, ``VOID`` ignored; None when the dataset has no masks.
    target: (N,) int64 model output index to explain; set by the runner.
    original_masks: per sample, the mask at the image's original resolution
        (1, h, w) uint8 on the CPU, for datasets whose images were resized
        (metrics with ``resolution: original`` use them); None otherwise.
    skipped: (sample id, reason) of requested samples that could not be read
        (a corrupt image, a mask of the wrong size); they are not in the batch.
    """

    x: torch.Tensor
    label: torch.Tensor
    ids: list[str]
    mask: torch.Tensor | None = None
    target: torch.Tensor | None = None
    original_masks: list[torch.Tensor] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> Batch:
        return replace(
            self,
            x=self.x.to(device),
            label=self.label.to(device),
            mask=None if self.mask is None else self.mask.to(device),
            target=None if self.target is None else self.target.to(device),
        )

    def select(self, index: slice | list[int] | torch.Tensor) -> Batch:
        """The sub-batch at ``index`` (a slice or positions)."""
        if isinstance(index, slice):
            rows = torch.arange(len(self.ids))[index]
        else:
            rows = torch.as_tensor(index, dtype=torch.long).cpu()
        positions = rows

        def pick(t: torch.Tensor) -> torch.Tensor:
            return t[rows.to(t.device)]

        ids = [self.ids[i] for i in rows.tolist()]
        originals = None
        if self.original_masks is not None:
            positions_list = list(range(len(self.ids)))[index] if isinstance(index, slice) else positions.tolist()
            originals = [self.original_masks[i] for i in positions_list]
        return Batch(
            x=pick(self.x),
            label=pick(self.label),
            ids=ids,
            mask=None if self.mask is None else pick(self.mask),
            target=None if self.target is None else pick(self.target),
            original_masks=originals,
        )


@dataclass(frozen=True)
class ModelSpec:
    """What travels with a model: its preprocessing and where CAM methods look.

    The wrapped module takes images in [0, 1] at the dataset's resolution and
    resizes and normalises internally, so every explainer attributes to the same
    pixel space that the metrics perturb and the masks describe.
    """

    num_classes: int
    class_names: tuple[str, ...] = ()
    label_space: str = ""  # e.g. "imagenet1k": datasets map their classes into it (see Dataset.class_sets)
    input_size: tuple[int, int] | None = None  # resize inside the model; None = as given
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"  # how that resize samples
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    target_layer: str | None = None  # default layer for CAM methods (a named_modules() path)
    cam_format: Literal["nchw", "nhwc", "tokens"] = "nchw"  # layout of that layer's output
    token_grid: tuple[int, int] | None = None  # tokens: the patch grid (h, w) the tokens come from
    prefix_tokens: int = 0  # tokens: leading non-patch tokens (ViT's class token) to drop


@dataclass
class LoadedModel:
    """An eval-mode classifier with frozen parameters, its spec, and facts about it."""

    module: nn.Module
    spec: ModelSpec
    info: dict[str, Any] = field(default_factory=dict)  # e.g. training accuracy, weights file

    @property
    def device(self) -> torch.device:
        first = next(self.module.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.module(x)
        return out

    def layer(self, path: str) -> nn.Module:
        """The submodule at ``path``; an error listing the model's layers when absent."""
        from bench.errors import ConfigError

        modules = dict(self.module.named_modules())
        if path not in modules:
            names = [n for n in modules if n]
            raise ConfigError(
                f"the model has no layer {path!r}",
                field="layer",
                fix="use one of: " + ", ".join(names[:60]) + (" ..." if len(names) > 60 else ""),
            )
        layer: nn.Module = modules[path]
        return layer


@dataclass(frozen=True)
class Passes:
    """Model passes per image that a component needs: for `xbench validate` estimates."""

    forward: float = 0.0
    backward: float = 0.0

    def __add__(self, other: Passes) -> Passes:
        return Passes(self.forward + other.forward, self.backward + other.backward)

    def __mul__(self, k: float) -> Passes:
        return Passes(self.forward * k, self.backward * k)
