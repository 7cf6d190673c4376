"""Make models friendly to attribution methods without changing what they compute.

torchvision's ResNet blocks call one ``nn.ReLU`` module several times per
forward. Methods that attach rules or hooks to activation modules (captum's
DeepLIFT and Guided Backprop, LRP) need one module per use: captum refuses
reused modules, and hooks on a shared module fire several times. ``unshare``
switches each block to a subclass whose forward uses a separate ReLU for each
place (same arithmetic, no new parameters, ``out + identity`` instead of an
in-place add). A subclass is used (not an instance-level forward), so tools
that patch and later delete an instance ``forward`` (zennit's canonizers) fall
back to this one.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck


class UnsharedBasicBlock(BasicBlock):  # type: ignore[misc]  # torchvision ships no type information
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu_a(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        activation: torch.Tensor = self.relu_out(out + identity)
        return activation


class UnsharedBottleneck(Bottleneck):  # type: ignore[misc]  # torchvision ships no type information
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu_a(self.bn1(self.conv1(x)))
        out = self.relu_b(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        activation: torch.Tensor = self.relu_out(out + identity)
        return activation


def unshare(net: nn.Module) -> int:
    """Give every torchvision ResNet block separate ReLU modules (in place); returns how many blocks."""
    count = 0
    for module in net.modules():
        if type(module) is BasicBlock:
            module.relu_a, module.relu_out = nn.ReLU(), nn.ReLU()
            module.__class__ = UnsharedBasicBlock
            count += 1
        elif type(module) is Bottleneck:
            module.relu_a, module.relu_b, module.relu_out = nn.ReLU(), nn.ReLU(), nn.ReLU()
            module.__class__ = UnsharedBottleneck
            count += 1
    return count
