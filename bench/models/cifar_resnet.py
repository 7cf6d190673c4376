"""`cifar_resnet`: CIFAR-native ResNet-20/32/44/56/110 (He et al. 2016, section 4.2).

Three stages of 16/32/64 channels on 32x32 inputs, with option-A shortcuts
(identity, subsampled and zero-padded in channels: no parameters). The module
and parameter names match the widely used implementation by Yerlan Idelbayev
(akamaster/pytorch_resnet_cifar10), so its published state dicts load strictly.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.component import Params
from bench.datasets.base import Dataset
from bench.models.base import ModelContext, ModelSource, prepare
from bench.models.checkpoints import load_into, read_state_dict
from bench.types import LoadedModel, ModelSpec

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PadShortcut(nn.Module):
    """Option-A shortcut: take every other pixel and zero-pad the new channels."""

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = PadShortcut(planes) if stride != 1 or in_planes != planes else nn.Identity()
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()  # modules, so that hooks and LRP rules see them

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        activation: torch.Tensor = self.relu2(out + self.shortcut(x))
        return activation


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.in_planes = 16
        self.layer1 = self._stage(16, n, 1)
        self.layer2 = self._stage(32, n, 2)
        self.layer3 = self._stage(64, n, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        logits: torch.Tensor = self.linear(self.pool(out).flatten(1))
        return logits


class CifarResNetParams(Params):
    depth: Literal[20, 32, 44, 56, 110] = Field(20, description="network depth (6n+2)")
    checkpoint: str | None = Field(None, description="state dict to load (e.g. akamaster's resnet20-12fca82f.th)")
    weights: Literal["checkpoint", "none"] = Field(
        "checkpoint", description="checkpoint: load `checkpoint`; none: random initialisation (sanity checks)"
    )
    num_classes: int = Field(10, ge=2, description="outputs of the classifier")
    seed: int = Field(0, ge=0, description="seed of the random initialisation (weights: none)")


class CifarResNetSource(ModelSource):
    """CIFAR-native ResNet-20/32/44/56/110 with option-A shortcuts; loads akamaster's weights strictly."""

    Params = CifarResNetParams

    def check(self, dataset: Dataset) -> None:
        from bench.errors import ConfigError

        if self.params.weights == "checkpoint" and not self.params.checkpoint:
            raise ConfigError(
                "cifar_resnet needs a checkpoint", field="checkpoint", fix="set params.checkpoint, or weights: none"
            )
        if self.params.weights == "checkpoint":
            read_state_dict(self.params.checkpoint)  # fails early, naming the file, when unreadable

    def load(self, ctx: ModelContext) -> LoadedModel:
        p = self.params
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            net = CifarResNet(p.depth, p.num_classes)
        info: dict[str, Any] = {"architecture": f"cifar_resnet{p.depth}"}
        if p.weights == "checkpoint":
            load_into(net, read_state_dict(p.checkpoint), p.checkpoint)
            info["checkpoint"] = p.checkpoint
        names = CIFAR10_CLASSES if p.num_classes == 10 else ()
        spec = ModelSpec(
            num_classes=p.num_classes,
            class_names=names,
            label_space="cifar10" if names else "",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            target_layer="net.layer3",
        )
        return prepare(net, spec, ctx.device, info)
