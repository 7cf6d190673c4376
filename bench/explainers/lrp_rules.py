"""The zennit side of LRP (``bench.explainers.lrp``): canonizers, composites and their registration.

Kept apart because zennit imports torchvision, whose import costs seconds (it loads
``torch._dynamo``): ``xbench list`` and ``validate`` describe and check the LRP
explainer without it, and only explaining imports this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import AttributeCanonizer, Canonizer, SequentialMergeBatchNorm
from zennit.composites import (
    EpsilonAlpha2Beta1,
    EpsilonAlpha2Beta1Flat,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    LayerMapComposite,
    layer_map_base,
)
from zennit.core import Composite
from zennit.layer import Sum
from zennit.rules import Epsilon
from zennit.torchvision import ResNetCanonizer, VGGCanonizer
from zennit.types import Linear as AnyLinear

from bench.models.cifar_resnet import BasicBlock as CifarBasicBlock

if TYPE_CHECKING:
    from bench.explainers.lrp import CanonizerName, LRPParams

__all__ = ["CifarBasicBlockCanonizer", "Composite", "Gradient", "make_canonizers", "make_composite", "registered"]


class CifarBasicBlockCanonizer(AttributeCanonizer):  # type: ignore[misc]  # zennit ships no type information
    """Routes the residual addition of bench's CIFAR ResNet blocks through a zennit ``Sum`` module.

    The same rewrite as zennit's ResNetBasicBlockCanonizer, for ``bench.models.cifar_resnet``'s
    block (separate ``relu1``/``relu2`` and an option-A ``shortcut``): without it the addition
    passes the relevance of the sum to both branches and relevance is not conserved.
    """

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name: str, module: nn.Module) -> dict[str, object] | None:
        if isinstance(module, CifarBasicBlock):
            return {"forward": cls._forward.__get__(module), "canonizer_sum": Sum()}
        return None

    @staticmethod
    def _forward(self: CifarBasicBlock, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # cast: the canonizer attaches canonizer_sum (a zennit Sum) to the block
        out = cast(nn.Module, self.canonizer_sum)(torch.stack([self.shortcut(x), out], dim=-1))
        activation: torch.Tensor = self.relu2(out)
        return activation


def make_canonizers(name: CanonizerName) -> list[Canonizer]:
    """Fresh zennit canonizer instances for a (resolved) canonizer name."""
    if name == "resnet":
        return [ResNetCanonizer(), CifarBasicBlockCanonizer()]
    if name == "vgg":
        return [VGGCanonizer()]
    if name == "merge_bn":
        return [SequentialMergeBatchNorm()]
    return []


def make_composite(p: LRPParams, low: torch.Tensor, high: torch.Tensor, canonizers: list[Canonizer]) -> Composite:
    """The zennit composite named by ``p.composite``; ``low``/``high`` bound the first layer's input (ZBox)."""
    if p.composite == "epsilon":
        layer_map = [*layer_map_base(), (AnyLinear, Epsilon(epsilon=p.epsilon))]
        return LayerMapComposite(layer_map=layer_map, canonizers=canonizers)
    if p.composite == "epsilon_gamma_box":
        return EpsilonGammaBox(low=low, high=high, epsilon=p.epsilon, gamma=p.gamma, canonizers=canonizers)
    composite_class = {
        "epsilon_plus_flat": EpsilonPlusFlat,
        "epsilon_plus": EpsilonPlus,
        "epsilon_alpha2_beta1_flat": EpsilonAlpha2Beta1Flat,
        "epsilon_alpha2_beta1": EpsilonAlpha2Beta1,
    }[p.composite]
    return composite_class(epsilon=p.epsilon, canonizers=canonizers)


@contextmanager
def registered(composite: Composite, module: nn.Module) -> Iterator[None]:
    """``composite``'s canonizers and rule hooks applied to ``module`` for the block; reverted and
    removed on exit, also when the block raises or a later canonizer fails to apply.

    A canonizer that fails halfway through its own ``apply`` keeps no handle of what it already
    changed (zennit returns none), so ``LRP.attribute`` checks ``supports`` before registering.
    """
    try:
        composite.register(module)
        yield
    finally:
        composite.remove()
