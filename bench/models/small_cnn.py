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


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)``, faster where no gradient flows through it: the maximum of its four strided
    sub-grids, the same values bit for bit. torch's NCHW max-pooling kernel is slow on a CPU: 17.6 ms for
    a (21, 32, 64, 64) input on one thread, against 1.1 ms in channels_last layout; it took 28.5 s of the
    quickstart's 47 s of forwards, and the sub-grids halve the small CNN's time per image (1.64 -> 0.72 ms).
    When the input needs a gradient (training, gradient explainers) this is ``nn.MaxPool2d``, whose
    backward routes each gradient to the window's first maximum."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() and x.requires_grad) or x.shape[-1] % 2 or x.shape[-2] % 2:
            pooled: torch.Tensor = super().forward(x)
            return pooled
        top = torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2])
        return torch.maximum(top, torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


def build_small_cnn(widths: tuple[int, ...], num_classes: int) -> nn.Module:
    """Conv-BN-ReLU blocks, 2x max-pool between them, global average pool, linear head.

    ``features`` ends with the last block's ReLU, the default Grad-CAM layer.
    """
    layers: list[nn.Module] = []
    in_ch = 3
    for i, width in enumerate(widths):
        if i > 0:
            layers.append(MaxPool2x2())
        layers += [nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        in_ch = width
    return nn.Sequential(
        nn.Sequential(*layers),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes)),
    )


class SmallCNN(ModelSource):
    """Small CNN trained on the dataset's train split on first use (CPU, < 1 min on shapes)."""

    Params = SmallCNNParams
    # 2: trained in channels_last layout (1.6x faster epochs on a CPU: torch's NCHW max pooling is slow),
    # on one thread under `threads: auto`; other rounding than version 1, so another model
    version = 2

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
            channels_last=True,
        )
        return prepare(net, spec, ctx.device, info)
