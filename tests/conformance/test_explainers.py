"""The explainer contract, run over every registered explainer (``entries.EXPLAINERS``) on tiny models.

Output (N, 1, H, W) float32 on the input's device, finite, detached; the input, the targets and the model
(weights, mode, frozen parameters, hooks) untouched; one batch of 4 == two batches of 2; the same seeds give
the same maps and, for stochastic methods, other seeds other maps; ``passes((C, H, W))`` equals what
``bench.cost.PassCounter`` counts, at two image sizes; ``supports`` names the reason for models the method
cannot explain; and the maps equal the declared external reference.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from bench.explainers.base import Explainer
from bench.registry import EXPLAINERS, load_builtin_components
from bench.types import LoadedModel
from tests.conformance import fixtures as fx
from tests.conformance.entries import EXPLAINERS as ENTRIES
from tests.conformance.entries import ExplainerEntry

load_builtin_components()
NAMES = sorted(ENTRIES)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models() -> dict[str, LoadedModel]:
    return {"cnn": fx.tiny_cnn(), "vit": fx.tiny_vit(), "no_layer": fx.tiny_cnn(target_layer=None)}


def _explainer(name: str) -> Explainer:
    cls = EXPLAINERS.get(name)
    return cls(cls.Params(**ENTRIES[name].params))


def _ready(name: str, models: dict[str, LoadedModel]) -> tuple[Explainer, LoadedModel, ExplainerEntry]:
    entry = ENTRIES[name]
    model = models[entry.model]
    explainer = _explainer(name)
    assert explainer.supports(model) is None, f"{name} should explain its entry's model ({entry.model})"
    return fx.prepared(explainer, model), model, entry


@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str, models: dict[str, LoadedModel]) -> None:
    explainer, model, _ = _ready(name, models)
    x, target, seeds = fx.images(4)
    x_copy, target_copy = x.clone(), target.clone()
    state = {k: v.clone() for k, v in model.module.state_dict().items()}
    hooks = fx.hooks(model.module)
    out = explainer.explain(model, x, target, seeds)
    assert out.shape == (4, 1, *fx.SHAPE[1:]) and out.dtype == torch.float32 and out.device == x.device
    assert torch.isfinite(out).all() and not out.requires_grad
    assert torch.equal(x, x_copy) and torch.equal(target, target_copy), "inputs must not be modified"
    assert not model.module.training and fx.hooks(model.module) == hooks
    assert all(torch.equal(state[k], v) for k, v in model.module.state_dict().items())
    assert not any(p.requires_grad for p in model.module.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_batch_invariance_and_seeds(name: str, models: dict[str, LoadedModel]) -> None:
    """One batch of 4 equals two of 2; the same seeds the same maps; other seeds other maps when stochastic."""
    explainer, model, entry = _ready(name, models)
    x, target, seeds = fx.images(4)
    whole = explainer.explain(model, x, target, seeds)
    halves = torch.cat([explainer.explain(model, x[i : i + 2], target[i : i + 2], seeds[i : i + 2]) for i in (0, 2)])
    fx.same(halves, whole, rtol=1e-4, atol=entry.atol)
    fx.same(explainer.explain(model, x, target, seeds), whole)
    if not explainer.deterministic:
        assert not torch.allclose(explainer.explain(model, x, target, fx.sample_seeds(seeds, 1)), whole)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [fx.SHAPE, fx.OTHER_SHAPE], ids=["16x16", "24x20"])
def test_passes_equal_the_counted_passes(
    name: str, shape: tuple[int, int, int], models: dict[str, LoadedModel]
) -> None:
    explainer, model, entry = _ready(name, models)
    explainer = fx.prepared(explainer, model, shape)
    x, target, seeds = fx.images(2, shape)
    with fx.counting(model) as counted:
        explainer.explain(model, x, target, seeds)
    expected = entry.passes_for(explainer, model, shape) if entry.passes_for else explainer.passes(shape)
    assert fx.per_image(counted, 2) == expected


@pytest.mark.parametrize("name", [n for n in NAMES if ENTRIES[n].refuses])
def test_supports_gives_the_reason(name: str, models: dict[str, LoadedModel]) -> None:
    explainer = _explainer(name)
    for kind in ENTRIES[name].refuses:
        reason = explainer.supports(models[kind])
        assert isinstance(reason, str) and reason, f"{name} on {kind}"


@pytest.mark.parametrize("name", NAMES)
def test_agrees_with_its_external_reference(name: str, models: dict[str, LoadedModel]) -> None:
    entry = ENTRIES[name]
    assert (entry.reference is None) != (not entry.no_reference), "declare a reference or why there is none"
    if entry.reference is None:
        return
    if isinstance(entry.reference, str):
        assert_test_exists(entry.reference)
        return
    explainer, model, _ = _ready(name, models)
    x, target, seeds = fx.images(4)
    ours = explainer.explain(model, x, target, seeds)
    expected = entry.reference(explainer, model, x, target, seeds).detach().float()
    assert ours.abs().amax() > 0, "an all-zero map would agree with anything"
    fx.same(ours, expected, rtol=1e-5, atol=entry.reference_atol)


def assert_test_exists(test_id: str) -> None:
    """A reference named by test id ("tests/test_x.py::test_y") must be a test that exists."""
    path, function = test_id.split("::")
    assert (ROOT / path).is_file(), test_id
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert callable(getattr(module, function, None)), f"{test_id} does not exist"
