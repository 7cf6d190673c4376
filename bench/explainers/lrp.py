"""Layer-wise Relevance Propagation (Bach et al. 2015) for CNNs, backed by zennit.

The zennit side (canonizers, composites) is in ``bench.explainers.lrp_rules``, imported when a
map is computed: zennit imports torchvision, which takes seconds, and describing or checking
the explainer (``xbench list``, ``validate``) needs neither.

Where the relevance lives. Models take images in [0, 1] and normalise inside
(``ImageClassifier``: optional bilinear resize, then ``(x - mean) / std``, then
``net``). The LRP rules attach to the layers of ``net``, so the first layer's
rule sees the *normalised* image, and that is where relevance is conserved: the
normalisation is not a layer with a rule. zennit's modified gradient carries the
relevance ``R_z`` of the normalised input back through the wrapper as a plain
gradient, which divides it by ``std`` per channel; multiplying by ``std`` undoes
exactly that. The result is ``R_z`` on the image's own pixel grid. When the model
resizes its input, the resize's transposed weights carry ``R_z`` from the model's
grid to the image's; every resized pixel is a convex combination of image pixels
(bilinear weights are non-negative and sum to 1), so this conserves relevance too.
The box bounds of the ZBox first-layer rule are the normalised images of black
and white, ``(0 - mean) / std`` and ``(1 - mean) / std`` per channel.

Canonizers rewrite the model temporarily so that the rules apply: batch norms are
merged into the convolution before them, and residual additions become zennit
``Sum`` modules (whose rule splits relevance in proportion to the summands). They
are chosen from the architecture (``canonizer: auto``) and reverted afterwards;
hooks are removed, also when the computation fails. Without a ``Sum`` module a
residual addition is a plain gradient pass-through: both branches receive the
full relevance of the sum, so relevance is duplicated at every block and the map
no longer sums to the logit (``canonizer: merge_bn`` on a ResNet-8 gives sums
60-400 % off the logit; with the Sum module they are within 1e-4).

Conservation. On a bias-free ReLU network every composite here (the flat and
ZBox first-layer rules included) gives a map that sums to the target logit within
1e-4 relative, the rules' stabilisers (1e-6 per layer) being the only leak; with
``composite: epsilon`` and a tiny epsilon the map equals gradient x normalised
input. Biases, including those that merged batch norms create, absorb relevance,
so trained networks conserve only approximately.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.errors import ConfigError
from bench.explainers.base import Explainer, ReduceFields, reduce_channels
from bench.models.base import ImageClassifier
from bench.models.cifar_resnet import BasicBlock as CifarBasicBlock
from bench.models.cifar_resnet import CifarResNet, PadShortcut
from bench.models.small_cnn import MaxPool2x2
from bench.types import ImageShape, LoadedModel, Passes

if TYPE_CHECKING:
    from bench.explainers.lrp_rules import Composite

CompositeName = Literal[
    "epsilon_plus_flat",
    "epsilon_plus",
    "epsilon_gamma_box",
    "epsilon_alpha2_beta1_flat",
    "epsilon_alpha2_beta1",
    "epsilon",
]
CanonizerName = Literal["auto", "resnet", "vgg", "merge_bn", "none"]

# Modules whose computation LRP handles: layers with a rule, and element-wise or routing
# layers whose gradient passes relevance on unchanged (max-pooling, flatten, dropout in eval).
LAYERS: tuple[type[nn.Module], ...] = (
    nn.Conv2d,
    nn.Linear,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.MaxPool2d,
    MaxPool2x2,  # the small CNN's (nn.MaxPool2d with gradients)
    nn.AdaptiveMaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Dropout,
    nn.Identity,
)
# Containers whose forward only chains, concatenates or (canonized) adds their children.
BLOCKS: tuple[type[nn.Module], ...] = (nn.Sequential, ImageClassifier, CifarResNet, CifarBasicBlock, PadShortcut)


def supported_types() -> frozenset[type[nn.Module]]:
    """Module types LRP handles: ``LAYERS``, ``BLOCKS`` and torchvision's ResNet, VGG, AlexNet and
    SqueezeNet blocks. A torchvision module exists only once torchvision is imported, so they are
    added only then: checking a model never imports torchvision (seconds of start-up)."""
    if "torchvision.models" not in sys.modules:
        return frozenset(LAYERS + BLOCKS)
    import torchvision.models as tvm

    from bench.models.canonical import UnsharedBasicBlock, UnsharedBottleneck

    resnets = (tvm.ResNet, tvm.resnet.BasicBlock, tvm.resnet.Bottleneck, UnsharedBasicBlock, UnsharedBottleneck)
    others = (tvm.VGG, tvm.AlexNet, tvm.SqueezeNet, tvm.squeezenet.Fire)
    return frozenset((*LAYERS, *BLOCKS, *resnets, *others))  # Unshared*: torchvision blocks after prepare()


class LRPParams(ReduceFields):
    composite: CompositeName = Field(
        "epsilon_plus_flat",
        description="zennit rule set: epsilon_plus_flat (flat first layer, z+ convolutions, epsilon dense layers), "
        "epsilon_plus, epsilon_gamma_box (ZBox first layer, gamma convolutions), epsilon_alpha2_beta1[_flat], "
        "or epsilon (the epsilon rule everywhere)",
    )
    canonizer: CanonizerName = Field(
        "auto",
        description="model rewrite before the rules apply: resnet (merge batch norms, residual sums as Sum modules), "
        "vgg or merge_bn (merge batch norms), none; auto picks from the architecture",
    )
    epsilon: float = Field(
        1e-6, gt=0, le=100, description="stabiliser of the epsilon rule (dense layers; all for epsilon)"
    )
    gamma: float = Field(0.25, ge=0, le=100, description="epsilon_gamma_box: extra weight of positive contributions")
    start: Literal["logit", "one"] = Field(
        "logit",
        description="relevance put on the target output: its logit (Bach et al.; the map sums to about the logit) "
        "or 1 (the map sums to about 1 whatever the logit's sign)",
    )


def auto_canonizer(module: nn.Module) -> CanonizerName:
    """The canonizer for ``module``'s architecture: resnet for residual blocks, vgg for torchvision
    VGGs, merge_bn for other networks with batch norms, none otherwise."""
    kinds = [type(m) for m in module.modules()]
    residual: tuple[type[nn.Module], ...] = (CifarBasicBlock,)
    vgg: tuple[type[nn.Module], ...] = ()
    if "torchvision.models" in sys.modules:  # else the model has no torchvision module
        import torchvision.models as tvm

        residual, vgg = (*residual, tvm.resnet.BasicBlock, tvm.resnet.Bottleneck), (tvm.VGG,)
    if any(issubclass(k, residual) for k in kinds):
        return "resnet"
    if any(issubclass(k, vgg) for k in kinds):
        return "vgg"
    if any(issubclass(k, nn.BatchNorm2d) for k in kinds):
        return "merge_bn"
    return "none"


def unsupported_modules(module: nn.Module) -> list[str]:
    """Type names of ``module``'s submodules that LRP cannot handle (sorted, each once).

    Types are matched exactly: a subclass may compute something else in its forward. Batch
    norms need affine parameters and running statistics to be merged into a convolution.
    """
    found = set()
    supported = supported_types()
    for sub in module.modules():
        if type(sub) not in supported:
            found.add(type(sub).__name__)
        elif isinstance(sub, nn.BatchNorm2d) and not (sub.affine and sub.track_running_stats):
            found.add("BatchNorm2d without affine parameters or running statistics")
    return sorted(found)


def start_relevance(target: torch.Tensor, start: Literal["logit", "one"]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The relevance put on the outputs: the target's logit (or 1) at the target, 0 elsewhere."""

    def relevance(logits: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(target, logits.shape[1]).to(logits)
        return one_hot * logits.detach() if start == "logit" else one_hot

    return relevance


class LRP(Explainer):
    """Layer-wise Relevance Propagation (Bach et al. 2015) with zennit composites and canonizers, for CNNs.

    The relevance is that of the normalised input (see the module docstring) on the
    image's pixel grid, reduced over channels. ``supports`` refuses models with layers
    that have no LRP rule (attention, layer norm, unknown blocks), listing their types.
    """

    family = "relevance"

    Params = LRPParams
    version = 1
    requires = frozenset({"gradients"})

    def supports(self, model: LoadedModel) -> str | None:
        unknown = unsupported_modules(model.module)
        if not unknown:
            return None
        return (
            f"LRP has no rule for these module types: {', '.join(unknown)}; it handles CNNs built from "
            "Conv2d, Linear, BatchNorm2d, ReLU, pooling, Flatten and Dropout (VGG, AlexNet, SqueezeNet, "
            "torchvision and CIFAR ResNets)"
        )

    def passes(self, image_shape: ImageShape) -> Passes:
        """One forward and one (modified) backward pass; the rules recompute each layer's
        forward inside the backward, which makes it a few times a plain backward."""
        return Passes(1, 1)

    def attribute(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        reason = self.supports(model)
        if reason is not None:  # before any canonizer touches the model: a failed merge leaves it modified
            raise ConfigError(reason, field="explainer", fix="use LRP with CNNs of the supported layer types")
        p = self.params
        mean = torch.tensor(model.spec.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(model.spec.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        from bench.explainers.lrp_rules import Gradient, make_canonizers, make_composite, registered

        canonizer = auto_canonizer(model.module) if p.canonizer == "auto" else p.canonizer
        composite: Composite = make_composite(
            p, low=(0 - mean) / std, high=(1 - mean) / std, canonizers=make_canonizers(canonizer)
        )
        with torch.enable_grad(), registered(composite, model.module):
            _, grad = Gradient(model.module, composite)(x.detach(), start_relevance(target, p.start))
        return reduce_channels(grad * std, p.reduce)
