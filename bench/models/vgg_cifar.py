"""`vgg13_cifar`: the layer-wise study's VGG13 for 32x32 CIFAR-10, trained from scratch.

Convolutions 64-64-M-128-128-M-256-256-M (3x3, ReLU; batch norm optional), then a
classifier 4096-1024-1024-10 with dropout 0.5. Trained on first use with the
``vgg13_cifar10_scratch`` preset (or the given ``train`` block) and cached.
"""

from __future__ import annotations

from typing import cast

from pydantic import Field
from torch import nn

from bench.component import Params
from bench.models.base import ModelContext, prepare
from bench.models.finetune import TrainSpec
from bench.models.scratch import TrainedFromScratch
from bench.types import LoadedModel, ModelSpec

CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, "M")
MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10 channel statistics
STD = (0.2470, 0.2435, 0.2616)


def build_vgg13_cifar(num_classes: int = 10, batch_norm: bool = False) -> nn.Module:
    layers: list[nn.Module] = []
    channels = 3
    for item in CONFIG:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers.append(nn.Conv2d(channels, int(item), 3, padding=1))
            layers += [nn.BatchNorm2d(int(item)), nn.ReLU()] if batch_norm else [nn.ReLU()]
            channels = int(item)
    classifier = nn.Sequential(
        nn.Flatten(),
        nn.Linear(256 * 4 * 4, 1024),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(1024, 1024),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(1024, num_classes),
    )
    return nn.Sequential(nn.Sequential(*layers), classifier)


class VGG13CifarParams(Params):
    checkpoint: str | None = Field(None, description="trained state dict to load instead of training")
    train: TrainSpec = Field(
        default_factory=lambda: TrainSpec(preset="vgg13_cifar10_scratch"), description="training protocol"
    )
    batch_norm: bool = Field(False, description="batch norm after each conv (the study's network has none)")
    seed: int = Field(0, ge=0, description="seed of the initialisation")


class VGG13Cifar(TrainedFromScratch):
    """The layer-wise study's VGG13 for 32x32 inputs, trained from scratch on first use."""

    Params = VGG13CifarParams

    def load(self, ctx: ModelContext) -> LoadedModel:
        p = self.params
        data = self.training_data(ctx)
        names = data.classes
        net = self.initialised(lambda: build_vgg13_cifar(len(names), p.batch_norm))
        features = cast(nn.Sequential, net.get_submodule("0"))  # build_vgg13_cifar: Sequential(features, classifier)
        last_relu = max(i for i, m in enumerate(features) if isinstance(m, nn.ReLU))
        spec = ModelSpec(  # its classifier takes 4x4 maps: other image sizes are resized to 32x32 inside
            num_classes=len(names),
            class_names=names,
            input_size=(32, 32),
            mean=MEAN,
            std=STD,
            target_layer=f"net.0.{last_relu}",
        )
        net, info = self.trained(net, spec, data, ctx)
        return prepare(net, spec, ctx.device, {"architecture": "vgg13_cifar", **info})
