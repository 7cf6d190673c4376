"""Randomisation sanity checks as functions: does the explanation change when the model or the explained
class is randomised?

Both explain again through ``explain(model, x, target, seeds)`` (``bench.functional.robustness``) and
compare with the original ``attributions`` by a similarity of ``bench.metrics.similarity``, after the
optional absolute value and per-sample max-|a| normalisation. Which layers are randomised and how, and the
differences from Quantus, are in ``bench.metrics.randomisation``.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

import torch
from torch import nn

from bench.functional.robustness import NON_FINITE, Explain, explain_repeats
from bench.metrics.base import Scores, nan_reasons
from bench.metrics.similarity import UNDEFINED, SimilarityKind, against, prepare_maps
from bench.seeding import generator
from bench.types import LoadedModel

Comparison = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def explain_all(
    explain: Explain, model: Any, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int], explain_batch: int
) -> torch.Tensor:
    """``explain`` on the images ``x`` for ``model`` and ``target``, ``explain_batch`` images per call, each
    with its sample's seed: (N, 1, H, W)."""
    chunks = explain_repeats(
        explain,
        model,
        target,
        len(x),
        1,
        explain_batch,
        lambda sample, _: (x[sample], [seeds[i] for i in sample.tolist()]),
    )
    return torch.cat([attr for *_, attr in chunks]) if len(x) else x.new_empty((0, 1, *x.shape[-2:]))


def comparison(attributions: torch.Tensor, similarity: SimilarityKind, abs: bool, normalise: bool) -> Comparison:
    """``other -> (similarity, finite)``: the similarity (N,) float64 of the prepared ``attributions`` and
    ``other`` (NaN where undefined or where ``other`` is not finite), and (N,) True where ``other`` is finite.
    What depends on the original alone is computed once."""
    reference = against(similarity, prepare_maps(attributions, abs, normalise))

    def compare(other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        finite = torch.isfinite(other).flatten(1).all(1)
        moved = prepare_maps(torch.where(finite[:, None, None, None], other, 0.0), abs, normalise)
        return torch.where(finite, reference(moved), torch.nan), finite

    return compare


def similarity_reasons(values: torch.Tensor, finite: torch.Tensor, kind: SimilarityKind) -> list[str | None]:
    """Why each NaN value is NaN: a non-finite re-explanation, else the similarity being undefined."""
    return nan_reasons(values, [(~finite, NON_FINITE)], otherwise=UNDEFINED[kind])


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
        torch.default_generator.manual_seed(seed)
        cast(Any, layer).reset_parameters()  # any module that has it (nn.Module types attributes Tensor | Module)
    layer.to(device)


def _copy(model: LoadedModel | nn.Module) -> tuple[LoadedModel | nn.Module, nn.Module]:
    """A deep copy of the model (the caller's is never modified) and its module."""
    if isinstance(model, LoadedModel):
        module = copy.deepcopy(model.module)
        return LoadedModel(module=module, spec=model.spec, info=model.info), module
    module = copy.deepcopy(model)
    return module, module


def model_randomisation(
    explain: Explain,
    model: LoadedModel | nn.Module,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    seeds: Sequence[int],
    *,
    similarity: SimilarityKind = "spearman",
    mode: Literal["cascading", "independent"] = "cascading",
    seed: int = 42,
    max_layers: int | None = None,
    abs: bool = True,
    normalise: bool = True,
    explain_batch: int = 64,
) -> Scores:
    """Model parameter randomisation test (Adebayo et al. 2018): the layers of a copy of ``model`` with
    ``reset_parameters()`` are re-initialised (seed ``seed + 1``) from the output down, cumulatively
    (``cascading``) or one at a time (``independent``), the images explained again after each, and the
    result compared with ``attributions``. Curve: the similarity after each layer; value: its mean over the
    layers where it is defined (lower is better).

    >>> import torch
    >>> from bench import functional as F
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> explain = lambda model, x, target, seeds: model[1].weight[target].detach().view(-1, 1, 2, 2)
    >>> x, target = torch.rand(1, 1, 2, 2), torch.tensor([0])
    >>> with torch.no_grad():
    ...     _ = model[1].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]]))
    ...     attributions = explain(model, x, target, [0])
    >>> F.model_randomisation(explain, model, x, attributions, target, [0], similarity="pearson").curves[""]
    tensor([[0.3452]], dtype=torch.float64)
    """
    randomised, module = _copy(model)
    layers = randomisable_layers(module)[:max_layers]
    if not layers:
        raise ValueError("the model has no layer with reset_parameters() to randomise")
    compare = comparison(attributions, similarity, abs, normalise)
    curves, finite = [], []
    for _, layer in layers:
        saved = copy.deepcopy(layer.state_dict()) if mode == "independent" else None
        reinitialise(layer, seed + 1)
        sim, ok = compare(explain_all(explain, randomised, x, target, seeds, explain_batch))
        curves.append(sim)
        finite.append(ok)
        if saved is not None:
            layer.load_state_dict(saved)
    curve = torch.stack(curves, dim=1)
    value = curve.nanmean(1)
    reasons = similarity_reasons(value, torch.stack(finite, dim=1).all(1), similarity)
    return Scores(values={"": value}, curves={"": curve}, reasons=reasons)


def off_classes(seeds: Sequence[int], target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A class other than the target for every sample, uniform over the other classes, drawn from the sample's
    seed: index r of the other classes in order (Quantus' construction), i.e. r + (r >= target)."""
    draws = [int(torch.randint(num_classes - 1, (1,), generator=generator(s, "random-logit"))) for s in seeds]
    r = torch.tensor(draws, dtype=torch.long, device=target.device)
    return r + (r >= target).long()


def random_logit(
    explain: Explain,
    model: Any,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    seeds: Sequence[int],
    *,
    num_classes: int,
    similarity: SimilarityKind = "ssim",
    abs: bool = False,
    normalise: bool = True,
    explain_batch: int = 64,
) -> Scores:
    """Random logit test (Sixt et al. 2020): the similarity of ``attributions`` to the explanation of a
    random other class of ``num_classes`` (drawn per sample from its seed; lower is better).

    >>> import torch
    >>> from bench import functional as F
    >>> weights = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    >>> explain = lambda model, x, target, seeds: weights[target].view(-1, 1, 2, 2)  # a class's weights
    >>> x, target = torch.rand(2, 1, 2, 2), torch.tensor([0, 0])
    >>> scores = F.random_logit(explain, None, x, explain(None, x, target, None), target, [1, 0], num_classes=3,
    ...                         similarity="pearson")
    >>> from bench.functional.randomisation import off_classes
    >>> off_classes([1, 0], target, 3), scores.value  # class 1's weights run the other way, class 2's alike
    (tensor([1, 2]), tensor([-1.0000,  1.0000], dtype=torch.float64))
    """
    if num_classes < 2:
        nan = torch.full((len(x),), torch.nan, dtype=torch.float64)
        return Scores(values={"": nan}, reasons=["the model has a single class: no other class to explain"] * len(x))
    other = off_classes(seeds, target, num_classes)
    sim, finite = comparison(attributions, similarity, abs, normalise)(
        explain_all(explain, model, x, other, seeds, explain_batch)
    )
    return Scores(values={"": sim}, reasons=similarity_reasons(sim, finite, similarity))
