"""`vit_tiny`: a small Vision Transformer (torchvision's VisionTransformer) trained from scratch.

For CNN-versus-ViT comparisons where an ImageNet ViT-B/16 cannot be fine-tuned
(no weights offline, no GPU): a few transformer blocks on small images train
on a CPU in minutes. The CAM layer is the last block's first LayerNorm, read
as a token grid (the class token dropped), as for ViT-B/16; attention rollout
and transformer attribution work on it unchanged.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from bench.component import Params
from bench.models.base import ModelContext, prepare
from bench.models.finetune import TrainSpec
from bench.models.scratch import TrainedFromScratch
from bench.types import LoadedModel, ModelSpec


def _default_training() -> TrainSpec:
    """AdamW with a one-cycle schedule (its warm-up matters: with a cold cosine start the ViT stayed at chance)."""
    return TrainSpec(optimizer="adamw", lr=1e-3, weight_decay=0.05, epochs=30, batch_size=64, scheduler="onecycle",
                     augment=["flip"], head="keep", eval_samples=None)  # fmt: skip


class ViTTinyParams(Params):
    image_size: int = Field(32, ge=8, le=512, description="input side (images are resized to it inside the model)")
    patch_size: int = Field(4, ge=2, le=64, description="patch side; image_size must be a multiple")
    layers: int = Field(4, ge=1, le=24, description="transformer blocks")
    heads: int = Field(4, ge=1, le=16, description="attention heads")
    hidden_dim: int = Field(128, ge=8, le=1024, description="token width (a multiple of heads)")
    mlp_dim: int = Field(256, ge=8, le=4096, description="MLP width")
    checkpoint: str | None = Field(None, description="trained state dict to load instead of training")
    train: TrainSpec = Field(default_factory=_default_training, description="training protocol (from scratch)")
    seed: int = Field(0, ge=0, description="seed of the initialisation")

    @model_validator(mode="after")
    def _shapes(self) -> ViTTinyParams:
        if self.image_size % self.patch_size or self.hidden_dim % self.heads:
            raise ValueError("image_size must be a multiple of patch_size, and hidden_dim of heads")
        return self


class ViTTiny(TrainedFromScratch):
    """A small ViT (torchvision VisionTransformer) trained from scratch on the dataset (CPU, minutes)."""

    Params = ViTTinyParams

    def load(self, ctx: ModelContext) -> LoadedModel:
        from torchvision.models import VisionTransformer  # here: importing torchvision costs seconds

        p = self.params
        data = self.training_data(ctx)
        names = data.classes

        def build() -> VisionTransformer:
            vit = VisionTransformer(p.image_size, p.patch_size, p.layers, p.heads, p.hidden_dim, p.mlp_dim,
                                    num_classes=len(names))  # fmt: skip
            torch.nn.init.normal_(vit.heads.head.weight, std=0.02)  # torchvision zero-initialises the head
            return vit

        net = self.initialised(build)
        grid = p.image_size // p.patch_size
        spec = ModelSpec(
            num_classes=len(names),
            class_names=names,
            input_size=(p.image_size, p.image_size),
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            target_layer=f"net.encoder.layers.encoder_layer_{p.layers - 1}.ln_1",
            cam_format="tokens",
            token_grid=(grid, grid),
            prefix_tokens=1,
        )
        net, info = self.trained(net, spec, data, ctx)
        return prepare(net, spec, ctx.device, {"architecture": "vit_tiny", **info})
