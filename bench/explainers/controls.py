"""Control explainers that do not look at the model: the floor any real explainer must beat."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bench.explainers.base import Explainer
from bench.seeding import per_sample_rand
from bench.types import LoadedModel, Passes


class RandomAttribution(Explainer):
    """Uniform random attributions, drawn per sample from its seed (the chance-level control)."""

    deterministic = False

    def passes(self) -> Passes:
        return Passes(0, 0)

    def attribute(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        return per_sample_rand(seeds, (1, *x.shape[-2:]), "random-attribution", device=x.device)
