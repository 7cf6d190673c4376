"""Models that xbench trains from scratch on the dataset's train split on first use.

Shared by the study's VGG13 and the tiny ViT: they load a ``checkpoint`` when one
is given, else train with their ``train`` protocol (cached by model, data and
protocol; resumable), and refuse before any work a dataset without a train split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bench.datasets.base import Dataset
from bench.errors import ConfigError
from bench.models.base import ModelContext, ModelSource
from bench.models.checkpoints import load_into, read_state_dict
from bench.models.finetune import finetune_cached
from bench.types import ModelSpec


class TrainedFromScratch(ModelSource):
    """Base of models trained on first use; their params have ``checkpoint`` and ``train`` fields."""

    def trains(self) -> bool:
        return self.params.checkpoint is None

    def check(self, dataset: Dataset) -> None:
        if self.params.checkpoint:
            read_state_dict(self.params.checkpoint)
        elif self.params.train.dataset is None and "train" not in dataset.splits():
            raise ConfigError(
                f"{self.name} trains on a train split and dataset {dataset.name!r} has none",
                field="train.dataset",
                fix="give params.train.dataset (e.g. cifar10 with its root) or a checkpoint",
            )

    def initialised(self, build: Callable[[], nn.Module]) -> nn.Module:
        """``build()`` under the params' ``seed``, without touching the global random state."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.params.seed)
            return build()

    def training_data(self, ctx: ModelContext) -> Dataset:
        """The dataset whose classes the model predicts: the training set, or the cell's."""
        return ctx.dataset if self.params.checkpoint else self.params.train.resolve_dataset(ctx.dataset)

    def trained(
        self, net: nn.Module, spec: ModelSpec, data: Dataset, ctx: ModelContext
    ) -> tuple[nn.Module, dict[str, Any]]:
        """``net`` with the checkpoint's weights, or trained on ``data`` (cached)."""
        if self.params.checkpoint:
            load_into(net, read_state_dict(self.params.checkpoint), self.params.checkpoint)
            return net, {"checkpoint": self.params.checkpoint}
        return finetune_cached(net=net, spec=spec, dataset=data, spec_train=self.params.train, ctx=ctx,
                               key={"model": self.identity()}, name=self.name)  # fmt: skip
