"""The metric contract, run over every registered metric and a sample of Quantus pass-throughs.

Per entry of ``entries.METRICS``: one value (N,) per output the card declares; curves (N, K); every NaN has a
reason, including for a model that returns NaN (or an empty mask, or an all-zero map); a constant map that
gives no answer is flagged degenerate and scores the card's declared value; the batch, the attributions and
the model are untouched; one batch of 4 == two of 2; the same seeds give the same numbers (other seeds other
numbers for stochastic metrics); ``passes(image_shape, explainer)`` equals what ``bench.cost.PassCounter``
counts at two image sizes; ``Metric.reference`` is set exactly where a test checks the metric against that
implementation; and ``agreement`` equals a direct computation.
"""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from bench.cards import MetricCard
from bench.metrics.base import Metric, MetricInput, Scores, output_name
from bench.registry import EXPLAINERS, METRICS, load_builtin_components
from bench.types import ImageShape, LoadedModel
from tests.conformance import fixtures as fx
from tests.conformance.entries import METRICS as ENTRIES
from tests.conformance.entries import MetricEntry
from tests.conformance.test_explainers import assert_test_exists

load_builtin_components()
NAMES = sorted(ENTRIES)


@pytest.fixture(scope="module")
def cnn() -> LoadedModel:
    return fx.tiny_cnn()


def _metric(name: str) -> Metric:
    cls = METRICS.get(name)
    return cls(cls.Params(**ENTRIES[name].params))


def _explainer(entry: MetricEntry):
    cls = EXPLAINERS.get(entry.explainer)
    return cls(cls.Params(**entry.explainer_params))


def _input(
    name: str, model: LoadedModel, n: int = 4, shape: ImageShape = fx.SHAPE, attributions: torch.Tensor | None = None
) -> MetricInput:
    """The batch of a tiny cell: images, masks, the cell explainer's attributions, seeds and a measured cost."""
    entry = ENTRIES[name]
    batch, seeds = fx.batch(n, shape)
    explainer = fx.prepared(_explainer(entry), model, shape)
    if attributions is None:
        attributions = explainer.explain(model, batch.x, batch.target, seeds)
    cost = {"seconds": torch.full((n,), 0.25), "forward_images": torch.ones(n), "backward_images": torch.ones(n)}
    return MetricInput(model=model, batch=batch, attributions=attributions, seeds=seeds, explainer=explainer, cost=cost)


def _scores(name: str, inp: MetricInput) -> Scores:
    return _metric(name).score(inp)


def _assert_nan_has_reason(scores: Scores, name: str) -> None:
    n = len(next(iter(scores.values.values())))
    for i in range(n):
        if any(math.isnan(v[i].item()) for v in scores.values.values()):
            assert scores.reasons is not None and scores.reasons[i], f"{name}: sample {i} is NaN without a reason"


@pytest.mark.parametrize("name", NAMES)
def test_outputs_follow_the_card_and_nothing_is_modified(name: str, cnn: LoadedModel) -> None:
    metric = _metric(name)
    inp = _input(name, cnn)
    x, attributions, mask = inp.batch.x.clone(), inp.attributions.clone(), inp.batch.mask.clone()
    state = {k: v.clone() for k, v in cnn.module.state_dict().items()}
    hooks = fx.hooks(cnn.module)
    scores = metric.score(inp)
    card = metric.card("m")
    assert set(scores.values) == set(metric.directions())
    assert {o.column for o in card.outputs} == {output_name("m", o) for o in scores.values}
    assert MetricCard.from_json(json.loads(json.dumps(card.to_json()))) == card  # stored as plain JSON
    for value in scores.values.values():
        assert value.shape == (4,) and value.dtype.is_floating_point and value.device == x.device
    for curve in scores.curves.values():
        assert curve.dim() == 2 and curve.shape[0] == 4
    assert scores.reasons is None or len(scores.reasons) == 4
    assert scores.degenerate is None or (scores.degenerate.dtype == torch.bool and scores.degenerate.shape == (4,))
    _assert_nan_has_reason(scores, name)
    assert torch.equal(inp.batch.x, x) and torch.equal(inp.attributions, attributions)
    assert torch.equal(inp.batch.mask, mask)
    assert all(torch.equal(state[k], v) for k, v in cnn.module.state_dict().items())
    assert fx.hooks(cnn.module) == hooks and not cnn.module.training


@pytest.mark.parametrize("name", [n for n in NAMES if ENTRIES[n].nan_case != "none"])
def test_undefined_scores_are_nan_with_a_reason(name: str, cnn: LoadedModel) -> None:
    """The entry's undefined case (a model whose logits are NaN, an empty mask, an all-zero map) is NaN
    in the main value of every sample, each with a reason; it does not raise."""
    case = ENTRIES[name].nan_case
    if case == "model":
        model = fx.nan_model(cnn)
        inp = _input(name, model, attributions=fx.images(4)[0][:, :1])
    elif case == "empty_mask":
        inp = _input(name, cnn)
        inp.batch.mask = torch.zeros_like(inp.batch.mask)
    else:
        inp = _input(name, cnn, attributions=torch.zeros(4, 1, *fx.SHAPE[1:]))
    scores = _scores(name, inp)
    assert torch.isnan(scores.values[""]).all(), f"{name}: {scores.values['']}"
    _assert_nan_has_reason(scores, name)


@pytest.mark.parametrize("name", NAMES)
def test_a_constant_map_is_flagged_with_the_declared_value(name: str, cnn: LoadedModel) -> None:
    metric = _metric(name)
    scores = metric.score(_input(name, cnn, attributions=torch.full((4, 1, *fx.SHAPE[1:]), 0.5)))
    _assert_nan_has_reason(scores, name)
    flagged = scores.degenerate if scores.degenerate is not None else torch.zeros(4, dtype=torch.bool)
    if metric.degenerate:
        assert flagged.all(), f"{name} declares no-answer values, so a constant map must be flagged"
    for i in flagged.nonzero().flatten().tolist():
        assert scores.reasons is not None and scores.reasons[i], f"{name}: degenerate sample {i} needs a reason"
        for output, value in scores.values.items():
            declared = metric.degenerate.get(output, float("nan"))
            assert value[i].item() == declared or (math.isnan(declared) and math.isnan(value[i].item()))


@pytest.mark.parametrize("name", NAMES)
def test_batch_invariance_and_seeds(name: str, cnn: LoadedModel) -> None:
    entry = ENTRIES[name]
    metric = _metric(name)
    whole = _input(name, cnn)
    scores = metric.score(whole)
    halves = [metric.score(_sub(whole, slice(i, i + 2))) for i in (0, 2)]
    again = metric.score(whole)
    for output, value in scores.values.items():
        fx.same(torch.cat([h.values[output] for h in halves]), value, rtol=1e-5, atol=entry.atol)
        fx.same(again.values[output], value)
    if entry.stochastic:
        other = metric.score(MetricInput(**{**whole.__dict__, "seeds": fx.sample_seeds(whole.seeds, 7)}))
        assert not torch.allclose(other.values[""], scores.values[""], equal_nan=True)


def _sub(inp: MetricInput, part: slice) -> MetricInput:
    return MetricInput(
        model=inp.model,
        batch=inp.batch.select(part),
        attributions=inp.attributions[part],
        seeds=inp.seeds[part],
        explainer=inp.explainer,
        cost={k: v[part] for k, v in inp.cost.items()},
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [fx.SHAPE, fx.OTHER_SHAPE], ids=["16x16", "24x20"])
def test_passes_equal_the_counted_passes(name: str, shape: ImageShape, cnn: LoadedModel) -> None:
    entry, metric = ENTRIES[name], _metric(name)
    inp = _input(name, cnn, n=2, shape=shape)
    with fx.counting(cnn, copies=entry.copies_model) as counted:
        metric.score(inp)
    estimate = metric.passes(shape, inp.explainer)
    expected = entry.passes_for(metric, inp.explainer, inp.batch) if entry.passes_for else estimate
    assert fx.per_image(counted, 2) == expected


@pytest.mark.parametrize("name", NAMES)
def test_reference_is_declared_where_a_test_checks_it(name: str) -> None:
    """``Metric.reference`` names an implementation exactly when a test compares with it; that test exists and
    reads the reference's class."""
    entry, metric = ENTRIES[name], _metric(name)
    assert bool(metric.reference) == bool(entry.reference_test), f"{name}: reference {metric.reference!r}"
    assert bool(entry.reference_test) != bool(entry.no_reference), f"{name}: declare a reference test or why not"
    if entry.reference_test:
        assert_test_exists(entry.reference_test)
        module_name, function = entry.reference_test.split("::")
        module = __import__(module_name.removesuffix(".py").replace("/", "."), fromlist=[function])
        source = inspect.getsource(getattr(module, function))
        assert metric.reference.split(".")[-1] in source or name.startswith("quantus:"), entry.reference_test


def test_agreement_equals_a_direct_computation(cnn: LoadedModel) -> None:
    """agreement (Spearman by default) equals scipy's Spearman correlation of the cell's maps and the reference
    explainer's maps, sample by sample; pearson, topk and the preparation of the maps likewise."""
    inp = _input("agreement", cnn)
    inp.attributions = fx.images(4, seed=9)[0][:, :1]  # not the reference's kind of map: the values spread
    other = {"reference": "input_x_gradient"}
    reference = EXPLAINERS.get("input_x_gradient")().explain(cnn, inp.batch.x, inp.batch.target, inp.seeds)
    a, b = inp.attributions.flatten(1).numpy(), reference.flatten(1).numpy()
    cls = METRICS.get("agreement")
    spearman = cls(cls.Params(**other)).score(inp)
    np.testing.assert_allclose(
        spearman.values[""], [stats.spearmanr(x, y)[0] for x, y in zip(a, b, strict=True)], atol=1e-12
    )
    pearson = cls(cls.Params(**other, similarity="pearson", abs=True)).score(inp)
    np.testing.assert_allclose(
        pearson.values[""], [stats.pearsonr(abs(x), abs(y))[0] for x, y in zip(a, b, strict=True)], atol=1e-9
    )
    topk = cls(cls.Params(**other, similarity="topk", k_percent=25)).score(inp)
    k = math.ceil(a.shape[1] / 4)
    expected = [
        len(set(np.argsort(-x, kind="stable")[:k]) & set(np.argsort(-y, kind="stable")[:k])) / k
        for x, y in zip(a, b, strict=True)
    ]
    np.testing.assert_allclose(topk.values[""], expected)
    assert spearman.reasons == [None] * 4 and cls.ranked is False
    assert np.isfinite(spearman.values[""]).all() and spearman.values[""].abs().max() > 0.05
