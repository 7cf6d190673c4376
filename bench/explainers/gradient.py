"""Gradient-based explainers backed by captum."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import Saliency as CaptumSaliency
from pydantic import Field

from bench.explainers.base import Explainer, ReduceFields, Reduction, reduce_channels
from bench.perturb import BaselineFields, make_baseline
from bench.types import LoadedModel, Passes


class SaliencyParams(ReduceFields):
    reduce: Reduction = Field("max_abs", description="channel reduction (the paper takes the max of |gradient|)")


class Saliency(Explainer):
    """Vanilla gradient of the target logit w.r.t. the pixels (Simonyan et al. 2014)."""

    Params = SaliencyParams
    requires = frozenset({"gradients"})

    def attribute(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        grads = CaptumSaliency(model.module).attribute(x.detach().requires_grad_(True), target=target, abs=False)
        return reduce_channels(grads, self.params.reduce)


class IntegratedGradientsParams(ReduceFields, BaselineFields):
    n_steps: int = Field(32, ge=2, le=1024, description="points on the path from baseline to image")
    method: Literal["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"] = Field(
        "gausslegendre", description="captum's approximation of the path integral"
    )
    internal_batch_size: int | None = Field(
        None, ge=1, description="images x steps per forward/backward pass (default: batch x n_steps at once)"
    )


class IntegratedGradients(Explainer):
    """Integrated Gradients (Sundararajan et al. 2017): path integral of gradients from a baseline."""

    Params = IntegratedGradientsParams
    requires = frozenset({"gradients"})

    def passes(self) -> Passes:
        return Passes(self.params.n_steps, self.params.n_steps)

    def attribute(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        p = self.params
        baseline = make_baseline(x, p, seeds)
        attr = CaptumIG(model.module).attribute(
            x,
            baselines=baseline,
            target=target,
            n_steps=p.n_steps,
            method=p.method,
            internal_batch_size=p.internal_batch_size,
        )
        return reduce_channels(attr, p.reduce)
