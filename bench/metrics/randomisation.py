"""Randomisation sanity checks: an explanation that does not change when the model or the
explained class is randomised does not explain the model.

- ``model_randomisation`` (Adebayo et al. 2018; Quantus MPRT, formerly
  ModelParameterRandomisation): re-initialise the model's layers from the output down
  (``cascading``: each layer stays random, as Quantus' ``top_down`` order) or one at a
  time (``independent``), explain the batch with every randomised copy and compare with
  the original attribution. Curve: the similarity after each layer, top layer first;
  value: its mean over the layers where it is defined. Lower is better.
- ``random_logit`` (Sixt et al. 2020; Quantus RandomLogit): explain a random other
  class (drawn per sample from its seed) and compare. Lower is better.

Which layers, and how they are randomised, follows Quantus so that the numbers agree:
every module with a ``reset_parameters()`` method (convolutions, linear layers, batch
and layer norms; a batch norm is reset to the identity with fresh running statistics),
each re-initialised by its own ``reset_parameters()`` right after
``torch.manual_seed(seed + 1)`` (the same seed for every layer). Here the draw is made
on a CPU copy of the layer, with the global CPU generator forked (the caller's random
state is untouched) and then copied to the model's device, so the randomised model is
the same on every device. The cell's model is never modified: a deep copy is randomised.

Differences from Quantus: ``normalise`` divides each map by its own max |value| where
Quantus divides by the batch maximum; SSIM compares the 2-D maps (Wang et al.), where
Quantus' RandomLogit and MPRT apply skimage's SSIM to the flattened maps (a 1-D signal
with a 7-sample window); and Quantus' ``return_average_correlation`` also averages in
its "original" entry (a similarity of the original model with itself), which is left
out here.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from bench.metrics.base import Metric, MetricInput, Scores
from bench.metrics.similarity import UNDEFINED, MapFields, SimilarityKind, against, prepare_maps
from bench.metrics.stability import NON_FINITE, explain_repeats, reexplainer
from bench.seeding import generator
from bench.types import Direction, LoadedModel, Passes


def explain_all(inp: MetricInput, model: LoadedModel, target: torch.Tensor, explain_batch: int) -> torch.Tensor:
    """The cell's explainer on the batch's images for ``model`` and ``target``, ``explain_batch`` images per
    call, each with its sample's seed: (N, 1, H, W)."""
    explainer = reexplainer(inp)
    x = inp.batch.x
    chunks = explain_repeats(
        explainer,
        model,
        target,
        len(x),
        1,
        explain_batch,
        lambda sample, _: (x[sample], [inp.seeds[i] for i in sample.tolist()]),
    )
    return torch.cat([attr for *_, attr in chunks]) if len(x) else inp.attributions.new_empty(inp.attributions.shape)


def comparison(inp: MetricInput, p: RandomisationFields) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``other -> (similarity, finite)``: the similarity (N,) float64 of the original attributions and
    ``other``, both prepared by ``p`` (NaN where undefined or where ``other`` is not finite), and (N,) True
    where ``other`` is finite. What depends on the original alone is computed once."""
    reference = against(p.similarity, prepare_maps(inp.attributions, p.abs, p.normalise))

    def compare(other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        finite = torch.isfinite(other).flatten(1).all(1)
        moved = prepare_maps(torch.where(finite[:, None, None, None], other, 0.0), p.abs, p.normalise)
        return torch.where(finite, reference(moved), torch.nan), finite

    return compare


def nan_reasons(values: torch.Tensor, finite: torch.Tensor, kind: SimilarityKind) -> list[str | None]:
    """Why each NaN value is NaN: a non-finite re-explanation, else the similarity being undefined."""
    return [
        None if v == v else (UNDEFINED[kind] if f else NON_FINITE)
        for v, f in zip(values.tolist(), finite.tolist(), strict=True)
    ]


def randomisable_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module with ``reset_parameters()``, output end first (Quantus' choice)."""
    return [(name, m) for name, m in module.named_modules() if hasattr(m, "reset_parameters")][::-1]


def reinitialise(layer: nn.Module, seed: int) -> None:
    """Re-initialise ``layer`` in place as ``reset_parameters()`` after ``torch.manual_seed(seed)`` does on the
    CPU (the layer is moved there and back: the same numbers on every device), without touching the caller's
    random state."""
    device = next(itertools.chain(layer.parameters(), layer.buffers()), torch.empty(0)).device
    layer.cpu()
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        layer.reset_parameters()
    layer.to(device)


class RandomisationFields(MapFields):
    similarity: SimilarityKind = Field("spearman", description="how maps are compared: spearman|pearson|ssim|hog")
    explain_batch: int = Field(64, ge=1, description="images per explainer call (memory bound)")


class ModelRandomisationParams(RandomisationFields):
    mode: Literal["cascading", "independent"] = Field(
        "cascading", description="cascading: randomise layers cumulatively from the top; independent: one at a time"
    )
    seed: int = Field(42, ge=0, description="layers are re-initialised under torch.manual_seed(seed + 1), as Quantus")
    max_layers: int | None = Field(None, ge=1, description="randomise only the top max_layers layers (default: all)")
    abs: bool = Field(True, description="compare absolute attributions (Quantus' and Adebayo et al.'s default)")
    normalise: bool = Field(True, description="divide each map by its maximum |value| (per sample)")


class ModelParameterRandomisation(Metric):
    """Model parameter randomisation test (Adebayo et al. 2018): similarity to explanations of randomised models."""

    family = "randomisation"
    curve_axes: ClassVar[dict[str, tuple[str, str]]] = {
        "": ("fraction of the layers randomised, from the output", "similarity to the original map")
    }

    Params = ModelRandomisationParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.LOWER}

    def passes(self) -> Passes:
        """One explanation per randomised layer and image (a gradient explainer's forward and backward pass);
        without ``max_layers`` the count of layers is known only once the model is."""
        layers = self.params.max_layers or 1
        return Passes(layers, layers)

    def score(self, inp: MetricInput) -> Scores:
        p = self.params
        reexplainer(inp)
        model = copy.deepcopy(inp.model.module)
        layers = randomisable_layers(model)[: p.max_layers]
        if not layers:
            raise ValueError("the model has no layer with reset_parameters() to randomise")
        randomised = LoadedModel(module=model, spec=inp.model.spec, info=inp.model.info)
        compare = comparison(inp, p)
        curves, finite = [], []
        for _, layer in layers:
            saved = copy.deepcopy(layer.state_dict()) if p.mode == "independent" else None
            reinitialise(layer, p.seed + 1)
            attr = explain_all(inp, randomised, inp.batch.target, p.explain_batch)
            sim, ok = compare(attr)
            curves.append(sim)
            finite.append(ok)
            if saved is not None:
                layer.load_state_dict(saved)
        curve = torch.stack(curves, dim=1)
        value = curve.nanmean(1)
        reasons = nan_reasons(value, torch.stack(finite, dim=1).all(1), p.similarity)
        return Scores(values={"": value}, curves={"": curve}, reasons=reasons)


def off_classes(seeds: list[int], target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A class other than the target for every sample, uniform over the other classes, drawn from the sample's
    seed: index r of the other classes in order (Quantus' construction), i.e. r + (r >= target)."""
    draws = [int(torch.randint(num_classes - 1, (1,), generator=generator(s, "random-logit"))) for s in seeds]
    r = torch.tensor(draws, dtype=torch.long, device=target.device)
    return r + (r >= target).long()


class RandomLogitParams(RandomisationFields):
    similarity: SimilarityKind = Field("ssim", description="how maps are compared: spearman|pearson|ssim|hog")
    normalise: bool = Field(True, description="divide each map by its maximum |value| (per sample)")


class RandomLogit(Metric):
    """Random logit test (Sixt et al. 2020): similarity to the explanation of a random other class."""

    family = "randomisation"

    Params = RandomLogitParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.LOWER}

    def passes(self) -> Passes:
        """One explanation per image (counted as a gradient explainer's forward and backward pass)."""
        return Passes(1, 1)

    def score(self, inp: MetricInput) -> Scores:
        p = self.params
        reexplainer(inp)
        n, classes = len(inp.batch.x), inp.model.spec.num_classes
        if classes < 2:
            nan = torch.full((n,), torch.nan, dtype=torch.float64)
            return Scores(values={"": nan}, reasons=["the model has a single class: no other class to explain"] * n)
        other = off_classes(list(inp.seeds), inp.batch.target, classes)
        sim, finite = comparison(inp, p)(explain_all(inp, inp.model, other, p.explain_batch))
        return Scores(values={"": sim}, reasons=nan_reasons(sim, finite, p.similarity))
