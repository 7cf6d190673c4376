"""Small analytic models and inputs shared by the unit tests."""

from __future__ import annotations

import torch
from torch import nn

from bench.types import Batch, LoadedModel, ModelSpec


class LinearScore(nn.Module):
    """Two logits: [sum(w * x), 0]. The exact deletion/insertion curve of (w * x) is known."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x * self.weight).flatten(1).sum(1)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def linear_model(weight: torch.Tensor) -> LoadedModel:
    return LoadedModel(module=LinearScore(weight).eval(), spec=ModelSpec(num_classes=2))


def batch_of(x: torch.Tensor, mask: torch.Tensor | None = None, target: int = 0) -> Batch:
    n = x.shape[0]
    return Batch(
        x=x,
        label=torch.zeros(n, dtype=torch.long),
        ids=[f"s{i}" for i in range(n)],
        mask=mask,
        target=torch.full((n,), target, dtype=torch.long),
    )
