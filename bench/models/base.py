"""The model contract: a registered source that yields a ready-to-explain classifier."""

from __future__ import annotations

import os
import sys
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from bench.component import Component
from bench.datasets.base import Dataset
from bench.types import LoadedModel, ModelSpec


def cache_root() -> Path:
    """Where trained models and other derived artefacts are kept between runs.

    ``$XBENCH_CACHE`` if set, else ``$XDG_CACHE_HOME/xbench``, else ``~/.cache/xbench``.
    """
    if os.environ.get("XBENCH_CACHE"):
        return Path(os.environ["XBENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xbench"


@dataclass
class ModelContext:
    """What a model source may use to build its model."""

    dataset: Dataset  # the dataset of the cell: its classes, and its train split for training
    device: torch.device
    cache_dir: Path = field(default_factory=cache_root)
    log: Callable[[str], None] = print
    allow_training: bool = True  # False: a model that is not trained yet raises TrainingRequired instead


class TrainingRequired(Exception):
    """Loading the model would train it first (``ModelContext.allow_training`` is False)."""


class ImageClassifier(nn.Module):
    """Wraps a network so that it takes images in [0, 1] at the dataset's resolution.

    Resizing (e.g. 32x32 CIFAR to a 224 ImageNet input) and normalisation happen
    inside ``forward``, so gradients and perturbations live in image space.
    """

    mean: torch.Tensor  # registered buffers (1, C, 1, 1)
    std: torch.Tensor

    def __init__(self, net: nn.Module, spec: ModelSpec):
        super().__init__()
        self.net = net
        self.input_size = spec.input_size
        self.interpolation = spec.interpolation
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and tuple(x.shape[-2:]) != tuple(self.input_size):
            x = nn.functional.interpolate(
                x, size=self.input_size, mode=self.interpolation, **_corners(self.interpolation)
            )
        logits: torch.Tensor = self.net((x - self.mean) / self.std)
        return logits


def target_outputs(logits: torch.Tensor, target: torch.Tensor, output: str = "logit") -> torch.Tensor:
    """Each sample's output for its ``target`` class: the logit, or with ``output="probability"`` its softmax
    probability: (N, K), (N,) -> (N,). What every metric and explainer that reads "the target score" reads."""
    if output == "probability":
        logits = logits.softmax(dim=1)
    elif output != "logit":
        raise ValueError(f"output must be 'logit' or 'probability', got {output!r}")
    return logits.gather(1, target.to(logits.device)[:, None]).squeeze(1)


def _corners(mode: str) -> dict[str, bool]:
    """``align_corners=False`` (pixel centres, like PIL) for the modes that take it."""
    return {"align_corners": False} if mode in ("bilinear", "bicubic") else {}


def prepare(net: nn.Module, spec: ModelSpec, device: torch.device, info: dict[str, Any] | None = None) -> LoadedModel:
    """Wrap, move, switch to eval mode and freeze parameters (explainers need input gradients only).

    In-place activations are switched off: gradient hooks (captum, CAM methods, LRP) break on them;
    activation modules that torchvision's ResNet blocks reuse are split (see ``canonical.unshare``).
    """
    if "torchvision.models.resnet" in sys.modules:  # a torchvision ResNet block exists only once it is imported
        from bench.models.canonical import unshare

        unshare(net)
    for sub in net.modules():
        if getattr(sub, "inplace", False) is True:
            cast(
                Any, sub
            ).inplace = False  # any module with an `inplace` flag (nn.Module types attributes as Tensor | Module)
    module = ImageClassifier(net, spec).to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return LoadedModel(module=module, spec=spec, info=dict(info or {}))


class ModelSource(Component):
    """A registered way to obtain a classifier (built, trained or loaded from weights)."""

    @abstractmethod
    def load(self, ctx: ModelContext) -> LoadedModel:
        """The eval-mode model for ``ctx.dataset`` on ``ctx.device``."""

    def check(self, dataset: Dataset) -> None:
        """Raise an XbenchError before any work when this model cannot serve ``dataset``."""

    def trains(self) -> bool:
        """True when loading this model trains it first (cached after the first time)."""
        return getattr(self.params, "train", None) is not None
