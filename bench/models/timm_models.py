"""`timm`: any timm classifier by name, with weights from a local checkpoint or the local Hugging Face cache.

timm is where most vision models come from. ``arch`` is any name that
``timm.create_model`` knows (``resnet50``, ``convnext_tiny``,
``vit_small_patch16_224.augreg_in21k_ft_in1k``...). Weights never come from the
network (as with ``HF_HUB_OFFLINE=1``): ``pretrained: true`` looks for the
pretrained tag's file in the local Hugging Face cache (``$HF_HUB_CACHE``, else
``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``) and then in the torch hub
cache where older timm versions kept them; a missing file is an error that
names it. ``checkpoint`` loads a fine-tuned state dict instead (strictly,
``weights_only``). Preprocessing (input size, mean, std, interpolation) comes
from the model's own pretrained config (``timm.data.resolve_data_config``),
and the CAM layer is resolved per architecture family (``cam_layer``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import torch
from pydantic import Field, field_validator
from torch import nn

from bench.component import Params
from bench.datasets.base import Dataset
from bench.errors import ConfigError, DataError
from bench.models.base import ModelContext, ModelSource, prepare
from bench.models.checkpoints import load_into, read_state_dict
from bench.types import LoadedModel, ModelSpec

HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm publishes on the Hugging Face hub
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def _timm() -> Any:
    try:
        import timm
    except ImportError as exc:
        raise ConfigError(
            "the timm model source needs the optional package timm", field="models", fix='pip install "xbench[timm]"'
        ) from exc
    return timm


class TimmParams(Params):
    arch: str = Field(description="timm model name, optionally with a pretrained tag (resnet50.a1_in1k)")
    pretrained: bool = Field(
        True, description="load the pretrained tag's weights from the local Hugging Face cache (never downloaded)"
    )
    checkpoint: str | None = Field(None, description="fine-tuned state dict to load instead (weights_only=True)")
    num_classes: int | None = Field(None, ge=2, description="outputs of the network; default: the pretrained config's")
    classes: list[str] | None = Field(None, description="class names of a fine-tuned model, in output order")
    layer: str | None = Field(None, description="CAM layer override (a module path under `net.`)")
    seed: int = Field(0, ge=0, description="seed of random initialisation (pretrained: false, new heads)")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        try:
            import timm
        except ImportError:
            return value  # check() says how to install it
        if not timm.is_model(value):
            import difflib

            close = difflib.get_close_matches(value.split(".")[0], timm.list_models(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"{value!r} is not a timm model{hint}")
        return value


# ---------------------------------------------------------------- local weights


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    )
    return Path(home) / "hub"


def hf_cached(repo_id: str, filenames: tuple[str, ...]) -> Path | None:
    """The first of ``filenames`` in the cached snapshot of ``repo_id`` (the one ``refs/main`` names, else
    the newest), or None."""
    repo = hf_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    snapshots = [repo / "snapshots" / ref.read_text().strip()] if ref.is_file() else []
    snapshots += sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for snapshot in snapshots:
        for name in filenames:
            if (snapshot / name).is_file():
                return snapshot / name
    return None


def local_weights(cfg: dict[str, Any]) -> tuple[Path | None, bool, list[str]]:
    """(file, whether it is a plain state dict from the hub, where it was looked for) of a pretrained config."""
    looked: list[str] = []
    if cfg.get("hf_hub_id"):
        names = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else HF_FILES
        found = hf_cached(cfg["hf_hub_id"], names)
        if found is not None:
            return found, True, looked
        repo = f"models--{cfg['hf_hub_id'].replace('/', '--')}"
        looked.append(str(hf_cache_dir() / repo / "snapshots" / "<revision>" / names[0]))
    if cfg.get("url"):
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg["url"]).name
        if path.is_file():
            return path, False, looked
        looked.append(str(path))
    return None, False, looked


# ---------------------------------------------------------------- CAM layers per family


def cam_layer(net: nn.Module) -> dict[str, Any]:
    """Default CAM layer of a timm classifier: its path under the wrapper and its output layout.

    Vision transformers (ViT, DeiT, EVA, BEiT): the first norm of the last block,
    whose tokens (after the class and register tokens) lie on the patch grid.
    MLP-Mixer likewise. EfficientNet and MobileNetV2: ``bn2``, the head
    convolution's normalisation and activation (the last spatial map).
    Everything else (ResNet, ConvNeXt, RegNet, MobileNetV3, Swin...): the last
    feature stage that timm's ``feature_info`` declares, in the model's own
    output format (Swin's is NHWC). MobileNetV3's ``conv_head`` follows global
    pooling, so its last stage is the last spatial map there.
    """
    blocks = getattr(net, "blocks", None)
    name = type(net).__name__
    if isinstance(blocks, nn.Sequential | nn.ModuleList) and len(blocks) and hasattr(net, "patch_embed"):
        last = len(blocks) - 1
        layer = f"blocks.{last}.norm1" if hasattr(blocks[last], "norm1") else f"blocks.{last}"
        grid = getattr(net.patch_embed, "grid_size", None)
        if grid is not None and hasattr(net, "num_prefix_tokens"):
            prefix = int(cast(Any, net).num_prefix_tokens)  # timm's ViT family (nn.Module types it Tensor | Module)
            return {
                "target_layer": f"net.{layer}",
                "cam_format": "tokens",
                "token_grid": tuple(grid),
                "prefix_tokens": prefix,
            }
    if name == "MlpMixer":
        mixer: Any = net  # timm's MlpMixer: blocks and stem.grid_size (nn.Module types attributes Tensor | Module)
        last = len(mixer.blocks) - 1
        grid = tuple(mixer.stem.grid_size)
        return {"target_layer": f"net.blocks.{last}.norm1", "cam_format": "tokens", "token_grid": grid}
    if name == "EfficientNet" and hasattr(net, "bn2"):
        return {"target_layer": "net.bn2"}
    info = getattr(net, "feature_info", None)
    if info:
        layout = "nhwc" if str(getattr(net, "output_fmt", "NCHW")).upper() == "NHWC" else "nchw"
        return {"target_layer": f"net.{info[-1]['module']}", "cam_format": layout}
    return {"target_layer": None}  # set params.layer explicitly


# ---------------------------------------------------------------- the source


class TimmModel(ModelSource):
    """Any timm classifier by name; weights from a local checkpoint or the local Hugging Face cache (offline)."""

    Params = TimmParams

    def pretrained_cfg(self) -> dict[str, Any]:
        cfg = _timm().models.get_pretrained_cfg(self.params.arch)
        return cfg.to_dict() if cfg is not None else {}

    def weights_file(self) -> tuple[Path, bool]:
        """The local pretrained weights (and whether they are a plain hub state dict); DataError naming
        where they were looked for when absent."""
        p = self.params
        found, plain, looked = local_weights(self.pretrained_cfg())
        if found is None:
            where = " or ".join(looked) if looked else "(timm has no pretrained weights for it)"
            raise DataError(
                f"pretrained weights of timm model {p.arch!r} are not on this machine: looked for {where}",
                field="pretrained",
                fix='download them where a network exists (python -c "import timm; timm.create_model('
                f"'{p.arch}', pretrained=True)\") and copy the Hugging Face cache folder here (or set "
                "HF_HUB_CACHE to it), give checkpoint: <file>, or set pretrained: false",
            )
        return found, plain

    def check(self, dataset: Dataset) -> None:
        _timm()
        if self.params.checkpoint:
            read_state_dict(self.params.checkpoint)
        elif self.params.pretrained:
            self.weights_file()

    def _num_classes(self) -> int:
        p = self.params
        if p.num_classes is not None:
            count: int = p.num_classes
            return count
        return len(p.classes) if p.classes else int(self.pretrained_cfg().get("num_classes") or 1000)

    def build(self) -> tuple[nn.Module, dict[str, Any]]:
        """The network with its weights (pretrained, checkpoint or seeded random) and facts about them."""
        p, timm = self.params, _timm()
        n = self._num_classes()
        info: dict[str, Any] = {"architecture": p.arch, "weights": "random"}
        overlay = None
        if p.pretrained and not p.checkpoint:
            path, plain = self.weights_file()
            overlay = {"file": str(path), **({"custom_load": False} if plain else {})}
            info.update(weights="pretrained", weights_file=str(path))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            net = timm.create_model(
                p.arch, pretrained=overlay is not None, num_classes=n, pretrained_cfg_overlay=overlay
            )
        if p.checkpoint:
            load_into(net, read_state_dict(p.checkpoint), p.checkpoint)
            info.update(weights="checkpoint", checkpoint=p.checkpoint)
        return net, info

    def load(self, ctx: ModelContext) -> LoadedModel:
        from timm.data.config import resolve_data_config

        from bench.datasets.imagenet import IMAGENET_CATEGORIES

        p = self.params
        net, info = self.build()
        n = self._num_classes()
        imagenet = n == 1000 and not p.classes
        names = IMAGENET_CATEGORIES if imagenet else tuple(p.classes or ctx.dataset.classes)
        if len(names) != n:
            raise ConfigError(
                f"timm model {p.arch!r} has {n} outputs but {len(names)} class names",
                field="classes",
                fix="give classes: [...] with one name per output, in output order",
            )
        data = resolve_data_config(model=net)  # type: ignore[no-untyped-call]  # timm leaves it unannotated
        interpolation = data.get("interpolation", "bilinear")
        spec = ModelSpec(
            num_classes=n,
            class_names=tuple(names),
            label_space="imagenet1k" if imagenet else "",
            # casts: timm's data config is an untyped dict; its input_size is (C, H, W), mean and std per channel
            input_size=cast(tuple[int, int], tuple(int(s) for s in data["input_size"][1:])),
            mean=cast(tuple[float, float, float], tuple(float(m) for m in data["mean"])),
            std=cast(tuple[float, float, float], tuple(float(s) for s in data["std"])),
            interpolation=interpolation if interpolation in INTERPOLATIONS else "bilinear",
            **({"target_layer": f"net.{p.layer}"} if p.layer else cam_layer(net)),
        )
        info["data_config"] = {k: v for k, v in data.items() if k in ("input_size", "interpolation", "crop_pct")}
        return prepare(net, spec, ctx.device, info)
