"""The explainer contract: (model, images, targets) -> (N, 1, H, W) float32 attributions."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field

from bench.cards import ExplainerCard, params_json
from bench.component import Component, Params
from bench.types import ImageShape, LoadedModel, Passes

Reduction = Literal["sum", "abs_sum", "l2", "max_abs", "mean"]


class ReduceFields(Params):
    """How per-channel attributions become one map; recorded with every result."""

    reduce: Reduction = Field("sum", description="channel reduction: sum|abs_sum|l2|max_abs|mean")


# What ``forward_batch: auto`` aims at per forward pass: about 256k input values, at least 16 images, at
# most 256, on a CPU; 32M values on a GPU, where large batches pay. Measured with the tuned allocator
# (bench.fastpath), 1 thread, 2-core CPU, interleaved medians: ResNet-50 at 224 px ran 54-58 ms/image at
# batches of 16-24, against 72-81 at 1-12 and 67-72 at 32-64; CIFAR ResNet-20 at 32 px 600-630 us/image
# at 16-64 images (85 here), 745 at 256; the small CNN at 64 px is flat from 16 to 256 images (21 here).
# The 16-image floor gives way for large images: at most 4M input values (16 images of 512 px would be
# 12.6M, and their activations gigabytes).
AUTO_BATCH_VALUES = {"cpu": 2**18, "cuda": 2**25}
AUTO_MIN_IMAGES = {"cpu": 16, "cuda": 1}
AUTO_FLOOR_VALUES = 2**22
ForwardBatch = Annotated[int, Field(ge=1)] | Literal["auto"]


def forward_batch_size(setting: int | str, x: torch.Tensor) -> int:
    """Images per forward pass: the setting, or for ``auto`` a size from the image size and the device
    (``auto_batch``). The batch size changes speed and memory, never what is computed."""
    return int(setting) if setting != "auto" else auto_batch(x[0].numel(), x.device.type)


def auto_batch(values_per_image: int, device_type: str) -> int:
    """Images per forward pass that suit images of ``values_per_image`` values on a device of this type."""
    kind, values = "cuda" if device_type == "cuda" else "cpu", max(1, values_per_image)
    floor = min(AUTO_MIN_IMAGES[kind], AUTO_FLOOR_VALUES // values)
    return max(1, floor, min(256, AUTO_BATCH_VALUES[kind] // values))


def reduce_channels(attr: torch.Tensor, how: Reduction) -> torch.Tensor:
    """(N, C, H, W) -> (N, 1, H, W) by the named reduction over channels."""
    if how == "sum":
        return attr.sum(1, keepdim=True)
    if how == "abs_sum":
        return attr.abs().sum(1, keepdim=True)
    if how == "l2":
        return attr.pow(2).sum(1, keepdim=True).sqrt()
    if how == "max_abs":
        return attr.abs().amax(1, keepdim=True)
    if how == "mean":
        return attr.mean(1, keepdim=True)
    raise ValueError(f"unknown channel reduction {how!r}")


@dataclass
class ExplainerContext:
    """What an explainer may use to prepare itself for a cell (once, before any batch).

    ``background(n)`` returns ``n`` images (N, C, H, W) on ``device`` drawn
    (stratified, seeded) from the dataset's train split, or from the benchmark
    split when there is no train split: the reference set of SHAP-style methods.
    """

    model: LoadedModel
    device: torch.device
    seed: int
    background: Callable[[int], torch.Tensor]
    log: Callable[[str], None] = print


class Explainer(Component):
    """Attributes a model's target output to the input pixels.

    Subclasses implement ``attribute``; ``explain`` checks the contract.
    ``requires`` names model capabilities the method needs ("gradients",
    "spatial_layer", "vit"); ``deterministic`` is False for methods that draw
    random numbers (they must draw them from the per-sample ``seeds``, which
    makes them batch invariant too). ``prepare`` runs once per cell before any
    batch; ``expand`` turns one configured explainer into several (a layer
    sweep) once the model is known.
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    deterministic: ClassVar[bool] = True
    family: ClassVar[str] = "other"  # gradient | perturbation | cam | relevance | attention | control
    control: ClassVar[bool] = False  # a reference line that ignores the model (random, centre, edges)

    def card(self, key: str, control: bool | None = None) -> ExplainerCard:
        """The immutable facts of this configured explainer under the suite id ``key``; ``control``
        (the suite entry's ``control:``) overrides the class's flag."""
        return ExplainerCard(
            key=key,
            name=self.name,
            version=self.version,
            params=params_json(self.params),
            family=self.family,
            control=self.control if control is None else control,
            deterministic=self.deterministic,
            requires=tuple(sorted(self.requires)),
        )

    def prepare(self, ctx: ExplainerContext) -> None:
        """Set up per-cell state (e.g. a background set). Default: nothing."""

    def sweeps(self) -> bool:
        """True when ``expand`` may return several variants (then cells are planned per variant)."""
        return False

    def expand(self, model: LoadedModel) -> list[tuple[str, Explainer]]:
        """(suffix, explainer) pairs that this entry stands for on ``model``; the suffix names
        the variant in results (``@net.features.3`` for a layer sweep). Default: itself."""
        return [("", self)]

    def supports(self, model: LoadedModel) -> str | None:
        """None when the method applies to ``model``, else the reason it does not."""
        if "spatial_layer" in self.requires:
            layer = getattr(self.params, "layer", None) or model.spec.target_layer
            if layer is None:
                return "the model declares no spatial layer for CAM methods; set params.layer"
        return None

    def passes(self, image_shape: ImageShape) -> Passes:
        """Model passes per image of ``image_shape`` (C, H, W), in images, as ``bench.cost.PassCounter``
        counts them: the estimate `xbench validate` prints. Default: one forward and one backward pass."""
        return Passes(1, 1)

    @abstractmethod
    def attribute(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        """Attributions for ``x`` (N, C, H, W) towards ``target`` (N,): (N, 1, H, W)."""

    def explain(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int] | None = None
    ) -> torch.Tensor:
        """``attribute`` with the contract enforced: (N, 1, H, W) float32 on x's device, detached."""
        if seeds is None:
            seeds = list(range(len(x)))
        out = self.attribute(model, x, target, seeds)
        expected = (x.shape[0], 1, *x.shape[-2:])
        if tuple(out.shape) != expected:
            raise RuntimeError(f"{self.name} returned attributions of shape {tuple(out.shape)}, expected {expected}")
        return out.detach().to(device=x.device, dtype=torch.float32)
