"""`small_cnn`: a compact CNN trained on the cell's dataset on first use, then cached.

It is the model of the embedded benchmark: on the synthetic shapes it trains on
two CPU cores in well under a minute to >= 95 % test accuracy. The trained
weights are cached under ``<cache>/models/small_cnn-<key>/`` keyed by the model
params and the dataset's content identity, so a suite that names the same model
and data reuses them.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from bench.component import Params
from bench.datasets.base import Dataset
from bench.errors import ConfigError
from bench.models.base import ModelContext, ModelSource, prepare
from bench.models.finetune import TrainSpec, finetune_cached
from bench.types import LoadedModel, ModelSpec


class SmallCNNParams(Params):
    widths: tuple[int, ...] = Field((16, 32, 64, 64), min_length=2, max_length=6, description="channels per conv block")
    epochs: int = Field(8, ge=1, le=200, description="training epochs")
    lr: float = Field(5e-3, gt=0, le=1, description="peak learning rate (Adam, one-cycle schedule)")
    batch_size: int = Field(128, ge=1, le=4096, description="training batch size")
    train_samples: int | None = Field(
        None, ge=10, description="cap on training images (default: the whole train split)"
    )
    seed: int = Field(0, ge=0, description="seed of initialisation and data order")


def build_small_cnn(widths: tuple[int, ...], num_classes: int) -> nn.Module:
    """Conv-BN-ReLU blocks, 2x max-pool between them, global average pool, linear head.

    ``features`` ends with the last block's ReLU, the default Grad-CAM layer.
    """
    layers: list[nn.Module] = []
    in_ch = 3
    for i, width in enumerate(widths):
        if i > 0:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        in_ch = width
    return nn.Sequential(
        nn.Sequential(*layers),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes)),
    )


class SmallCNN(ModelSource):
    """Small CNN trained on the dataset's train split on first use (CPU, < 1 min on shapes)."""

    Params = SmallCNNParams
    version = 1

    def trains(self) -> bool:
        return True

    def check(self, dataset: Dataset) -> None:
        if "train" not in dataset.splits():
            raise ConfigError(
                f"small_cnn is trained on the dataset's train split, and dataset {dataset.name!r} has none",
                field="models",
                fix="pair small_cnn with a dataset that has a train split (e.g. synthetic)",
            )

    def load(self, ctx: ModelContext) -> LoadedModel:
        p = self.params
        num_classes = len(ctx.dataset.classes)
        spec = ModelSpec(num_classes=num_classes, class_names=ctx.dataset.classes, target_layer="net.0")
        recipe = TrainSpec(
            optimizer="adam",
            lr=p.lr,
            epochs=p.epochs,
            batch_size=p.batch_size,
            scheduler="onecycle",
            augment=["flip"],
            head="keep",
            train_samples=p.train_samples,
            eval_samples=None,
            seed=p.seed,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            net = build_small_cnn(p.widths, num_classes)
        net, info = finetune_cached(
            net=net,
            spec=spec,
            dataset=ctx.dataset,
            spec_train=recipe,
            ctx=ctx,
            key={"model": self.identity()},
            name="small_cnn",
        )
        return prepare(net, spec, ctx.device, info)
