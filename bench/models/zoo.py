"""torchvision classifiers by name, with ImageNet weights from the torch hub cache.

``torchvision`` takes any classifier of ``torchvision.models`` as ``arch``; the
architectures of the studies are also registered under their own names
(``resnet50``, ``vgg16``, ``vit_b_16``...). Weights come from
``$TORCH_HOME/hub/checkpoints`` (downloaded there where a network exists); when
the file is missing and cannot be downloaded, the error names the file and
where to put it. ``weights: none`` gives random initialisation; ``checkpoint``
loads a fine-tuned state dict (``weights_only=True``); a ``train`` block
fine-tunes on a dataset first (see ``bench.models.finetune``).
"""

from __future__ import annotations

import socket
from functools import cache
from pathlib import Path
from typing import Any, cast

import torch
from pydantic import Field, field_validator
from torch import nn

from bench.component import Params
from bench.datasets.base import Dataset
from bench.errors import ConfigError, DataError
from bench.models import STUDY_ARCHS
from bench.models.base import ModelContext, ModelSource, prepare
from bench.models.checkpoints import load_into, read_state_dict
from bench.models.finetune import TrainSpec, finetune_cached, replace_head
from bench.types import LoadedModel, ModelSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# torchvision 0.29's classifiers: a suite naming one of them validates without importing torchvision
# (seconds: it loads torch._dynamo); any other name is looked up in the installed torchvision.
KNOWN_CLASSIFIERS = frozenset({
    "alexnet", "convnext_base", "convnext_large", "convnext_small", "convnext_tiny", "densenet121", "densenet161",
    "densenet169", "densenet201", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_l",
    "efficientnet_v2_m", "efficientnet_v2_s", "googlenet", "inception_v3", "maxvit_t", "mnasnet0_5", "mnasnet0_75",
    "mnasnet1_0", "mnasnet1_3", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "regnet_x_16gf",
    "regnet_x_1_6gf", "regnet_x_32gf", "regnet_x_3_2gf", "regnet_x_400mf", "regnet_x_800mf", "regnet_x_8gf",
    "regnet_y_128gf", "regnet_y_16gf", "regnet_y_1_6gf", "regnet_y_32gf", "regnet_y_3_2gf", "regnet_y_400mf",
    "regnet_y_800mf", "regnet_y_8gf", "resnet101", "resnet152", "resnet18", "resnet34", "resnet50",
    "resnext101_32x8d", "resnext101_64x4d", "resnext50_32x4d", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "squeezenet1_0", "squeezenet1_1", "swin_b", "swin_s", "swin_t",
    "swin_v2_b", "swin_v2_s", "swin_v2_t", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
    "vgg19_bn", "vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32", "wide_resnet101_2", "wide_resnet50_2",
})  # fmt: skip


@cache
def classifier_names() -> tuple[str, ...]:
    """Every classifier of the installed torchvision (imports it)."""
    import torchvision
    from torchvision.models import list_models

    return tuple(list_models(module=torchvision.models))


def is_classifier(name: str) -> bool:
    return name in KNOWN_CLASSIFIERS or name in classifier_names()


class TorchvisionParams(Params):
    arch: str = Field(description="torchvision classifier name (e.g. resnet50, vgg16, vit_b_16)")
    weights: str = Field(
        "DEFAULT", description="DEFAULT (the best ImageNet weights), a weights name such as IMAGENET1K_V1, or none"
    )
    checkpoint: str | None = Field(None, description="fine-tuned state dict to load instead (weights_only=True)")
    num_classes: int | None = Field(None, ge=2, description="outputs of a fine-tuned checkpoint (replaces the head)")
    classes: list[str] | None = Field(None, description="class names of a fine-tuned checkpoint, in output order")
    input_size: int | None = Field(None, ge=16, description="model input side; smaller images are upsampled to it")
    layer: str | None = Field(None, description="CAM layer override (a module path under `net.`)")
    seed: int = Field(0, ge=0, description="seed of random initialisation (weights: none, new heads)")
    train: TrainSpec | None = Field(None, description="fine-tune on a dataset first (see `xbench train`)")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        if not is_classifier(value):
            import difflib

            close = difflib.get_close_matches(value, classifier_names(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"{value!r} is not a torchvision classifier{hint}")
        return value

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, value: str) -> str:
        return value if value.lower() != "none" else "none"


def weights_enum(arch: str, name: str) -> Any:
    """The torchvision weights entry ``name`` of ``arch`` ("DEFAULT" resolves to the best one)."""
    from torchvision.models import get_model_weights

    options = get_model_weights(arch)
    if name == "DEFAULT":
        return options.DEFAULT
    try:
        return options[name]
    except KeyError:
        raise ConfigError(
            f"{arch} has no weights {name!r}",
            field="weights",
            fix=f"use DEFAULT, none or one of {', '.join(w.name for w in options)}",
        ) from None


def weights_file(weights: Any) -> Path:
    """Where torch hub keeps (or would download) a weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def _network_reachable(host: str = "download.pytorch.org") -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return False
    return True


def _missing_weights(weights: Any, arch: str) -> DataError:
    path = weights_file(weights)
    return DataError(
        f"ImageNet weights of {arch} are not in the torch hub cache and cannot be downloaded here",
        field="weights",
        fix=f"place {path.name} (from {weights.url}) at {path} (set TORCH_HOME to use another cache folder), "
        "or use weights: none",
    )


def load_imagenet_state(arch: str, weights: Any) -> dict[str, torch.Tensor]:
    """The state dict of ``weights``: from the hub cache, else downloaded into it (``weights_only``)."""
    path = weights_file(weights)
    if path.exists():
        return read_state_dict(path, field="weights")
    if not _network_reachable():
        raise _missing_weights(weights, arch)
    try:
        state: dict[str, torch.Tensor] = weights.get_state_dict(progress=False, weights_only=True)
        return state
    except Exception as exc:
        raise _missing_weights(weights, arch) from exc


# ---------------------------------------------------------------- CAM layers per family


def _last_conv_activation(features: nn.Sequential) -> str:
    """Index (as a string) of the activation after the last conv of a VGG/AlexNet feature stack."""
    modules = list(features)
    last_conv = max(i for i, m in enumerate(modules) if isinstance(m, nn.Conv2d))
    after = last_conv + 1
    while after < len(modules) and not isinstance(modules[after], nn.ReLU | nn.BatchNorm2d):
        after += 1
    if after < len(modules) and isinstance(modules[after], nn.BatchNorm2d):
        after += 1
    return str(after if after < len(modules) and isinstance(modules[after], nn.ReLU) else last_conv)


def cam_layer(arch: str, net: nn.Module) -> dict[str, Any]:
    """Default CAM layer of a torchvision classifier: path under the wrapper and its output layout."""
    if arch.startswith(("resnet", "resnext", "wide_resnet")):
        return {"target_layer": "net.layer4"}
    if arch.startswith(("vgg", "alexnet")):
        features = cast(nn.Sequential, net.features)  # torchvision's VGG and AlexNet (torchvision ships no types)
        return {"target_layer": f"net.features.{_last_conv_activation(features)}"}
    if arch.startswith(("squeezenet", "densenet", "efficientnet", "mobilenet", "convnext")):
        return {"target_layer": "net.features"}
    if arch.startswith("mnasnet"):
        return {"target_layer": "net.layers"}
    if arch.startswith("regnet"):
        return {"target_layer": "net.trunk_output"}
    if arch.startswith("shufflenet"):
        return {"target_layer": "net.conv5"}
    if arch == "googlenet":
        return {"target_layer": "net.inception5b"}
    if arch == "inception_v3":
        return {"target_layer": "net.Mixed_7c"}
    if arch.startswith("swin"):
        return {"target_layer": "net.features", "cam_format": "nhwc"}
    if arch.startswith("vit"):
        vit: Any = net  # torchvision's VisionTransformer (torchvision ships no types)
        last = len(vit.encoder.layers) - 1
        grid = vit.image_size // vit.patch_size
        return {
            "target_layer": f"net.encoder.layers.encoder_layer_{last}.ln_1",
            "cam_format": "tokens",
            "token_grid": (grid, grid),
            "prefix_tokens": 1,
        }
    return {"target_layer": None}  # e.g. maxvit: set params.layer explicitly


def input_side(arch: str, weights: Any | None) -> int:
    if weights is not None:
        keywords = getattr(weights.transforms, "keywords", {})
        if "crop_size" in keywords:
            return int(keywords["crop_size"])
    return 299 if arch == "inception_v3" else 224


class TorchvisionModel(ModelSource):
    """Any torchvision classifier by name, ImageNet weights from the torch hub cache (TORCH_HOME)."""

    Params = TorchvisionParams

    def check(self, dataset: Dataset) -> None:
        p = self.params
        if p.checkpoint:
            read_state_dict(p.checkpoint)
        elif p.weights != "none" and p.train is None:
            weights = weights_enum(p.arch, p.weights)
            if not weights_file(weights).exists() and not _network_reachable():
                raise _missing_weights(weights, p.arch)

    def build(self, num_classes: int) -> nn.Module:
        """The architecture with random weights (seeded), ``num_classes`` outputs."""
        from torchvision.models import get_model

        p = self.params
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            kwargs = {"aux_logits": False, "init_weights": False} if p.arch in ("googlenet", "inception_v3") else {}
            net: nn.Module = get_model(p.arch, weights=None, num_classes=num_classes, **kwargs)
            return net

    def base_network(self) -> tuple[nn.Module, Any, dict[str, Any]]:
        """ImageNet (or random) network before any fine-tuning: (net, weights entry or None, info)."""
        p = self.params
        net = self.build(1000)
        if p.weights == "none":
            return net, None, {"weights": "none"}
        weights = weights_enum(p.arch, p.weights)
        load_into(net, load_imagenet_state(p.arch, weights), str(weights_file(weights)), field="weights")
        return net, weights, {"weights": weights.name, "weights_file": str(weights_file(weights))}

    def load(self, ctx: ModelContext) -> LoadedModel:
        p = self.params
        info: dict[str, Any] = {"architecture": p.arch}
        if p.checkpoint:
            n = p.num_classes or 1000
            net = self.build(n)
            load_into(net, read_state_dict(p.checkpoint), p.checkpoint)
            weights = None if n != 1000 else weights_enum(p.arch, "DEFAULT")
            names = tuple(p.classes) if p.classes else (_imagenet_names() if n == 1000 else ctx.dataset.classes)
            info["checkpoint"] = p.checkpoint
        else:
            net, weights, more = self.base_network()
            info.update(more)
            names = _imagenet_names()
            if p.train is not None:
                net, names, trained = self._finetune(net, ctx)
                info.update(trained)
        side = p.input_size or (p.train.input_size if p.train and p.train.input_size else input_side(p.arch, weights))
        layer = {"target_layer": f"net.{p.layer}"} if p.layer else cam_layer(p.arch, net)
        spec = ModelSpec(
            num_classes=len(names),
            class_names=tuple(names),
            label_space="imagenet1k" if len(names) == 1000 and names == _imagenet_names() else "",
            input_size=(side, side),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            **layer,
        )
        return prepare(net, spec, ctx.device, info)

    def _finetune(self, net: nn.Module, ctx: ModelContext) -> tuple[nn.Module, tuple[str, ...], dict[str, Any]]:
        p = self.params
        train = p.train
        data = train.resolve_dataset(ctx.dataset)
        names = data.classes
        if train.head == "replace":
            replace_head(net, len(names), train.dropout, seed=p.seed)
        side = train.input_size or input_side(p.arch, None)
        spec = ModelSpec(
            num_classes=len(names), class_names=names, input_size=(side, side), mean=IMAGENET_MEAN, std=IMAGENET_STD
        )
        identity = {k: v for k, v in self.identity().items()}
        net, meta = finetune_cached(
            net=net, spec=spec, dataset=data, spec_train=train, ctx=ctx, key={"model": identity}, name=p.arch
        )
        return net, names, {"finetuned": meta}


def _imagenet_names() -> tuple[str, ...]:
    """The ImageNet-1k class names in output order (torchvision's list, shipped with xbench)."""
    from bench.datasets.imagenet import IMAGENET_CATEGORIES

    return IMAGENET_CATEGORIES


def _study_alias(name: str) -> type[TorchvisionModel]:
    """A registered source whose ``arch`` defaults to ``name`` (``resnet50`` instead of torchvision + arch)."""

    class AliasParams(TorchvisionParams):
        arch: str = Field(name, description="torchvision classifier name")

    doc = f"torchvision {name} with ImageNet weights from the torch hub cache (TORCH_HOME)."
    return type(f"Torchvision_{name}", (TorchvisionModel,), {"Params": AliasParams, "__doc__": doc})


STUDY_MODELS = {arch: _study_alias(arch) for arch in STUDY_ARCHS}
globals().update({cls.__name__: cls for cls in STUDY_MODELS.values()})
