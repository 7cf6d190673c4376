"""`quantus:<Metric>`: Quantus metrics run as is on numpy 2.4, equal to the native metrics where
those exist, seeded per sample (batch invariant), with clear errors for what cannot work."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from bench.errors import ConfigError
from bench.metrics.base import MetricInput
from bench.metrics.faithfulness import IROF, PixelFlipping
from bench.metrics.quantus_ import per_sample_result, quantus_metric
from bench.models.base import prepare
from bench.models.small_cnn import build_small_cnn
from bench.registry import EXPLAINERS, METRICS, load_builtin_components
from bench.types import VOID, Direction, LoadedModel, ModelSpec
from tests.helpers import batch_of
from tests.test_faithfulness_more import NaNForBrightImages, one_thread  # noqa: F401 - autouse fixture

load_builtin_components()
SIZE = 24


@pytest.fixture(scope="module")
def cnn() -> LoadedModel:
    torch.manual_seed(0)
    net = build_small_cnn((8, 16), num_classes=4)
    spec = ModelSpec(num_classes=4, target_layer="net.0", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return prepare(net, spec, torch.device("cpu"))


def _input(model: LoadedModel, n: int = 3, mask: torch.Tensor | None = None, seeds=None, explainer=None) -> MetricInput:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, SIZE, SIZE, generator=g)
    attr = torch.randn(n, 1, SIZE, SIZE, generator=g)
    batch = batch_of(x, mask=mask)
    batch.target = torch.arange(n) % 4
    seeds = list(range(50, 50 + n)) if seeds is None else seeds
    return MetricInput(model=model, batch=batch, attributions=attr, seeds=seeds, explainer=explainer)


def _run(name: str, inp: MetricInput, **params):
    cls = METRICS.get(name)
    return cls(cls.Params(**params)).score(inp)


def test_numpy_trapz_shim_is_installed() -> None:
    assert np.trapz(np.array([1.0, 3.0]), dx=1) == 2.0  # Quantus calls it; numpy 2.4 has no trapz of its own


def test_irof_runs_on_rgb_and_matches_native(cnn: LoadedModel) -> None:
    """Quantus 0.6's own IROF fails on RGB (one-channel mask); the pass-through broadcasts the mask. A
    constant baseline: Quantus' "mean" is the mean of the current perturbed image over all channels."""
    inp = _input(cnn, n=2)
    theirs = _run("quantus:IROF", inp, init={"perturb_baseline": 0.5})
    ours = IROF(IROF.Params(baseline="constant", baseline_value=0.5)).score(inp)
    np.testing.assert_allclose(theirs.values[""].numpy(), ours.values[""].numpy(), atol=1e-4)


def test_pixel_flipping_returns_curves_reduced_to_their_auc(cnn: LoadedModel) -> None:
    inp = _input(cnn)
    theirs = _run("quantus:PixelFlipping", inp, init={"features_in_step": 3 * 48, "perturb_baseline": 0.0})
    ours = PixelFlipping(PixelFlipping.Params(pixels_per_step=48)).score(inp)
    np.testing.assert_allclose(theirs.curves[""].numpy(), ours.curves[""].numpy(), atol=1e-4)
    np.testing.assert_allclose(theirs.values[""].numpy(), ours.values[""].numpy(), atol=1e-4)
    assert METRICS.get("quantus:PixelFlipping")().directions() == {"": Direction.LOWER}


def test_pointing_game_matches_native_and_handles_void_and_empty_masks(cnn: LoadedModel) -> None:
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand(4, 1, SIZE, SIZE, generator=g) > 0.6).to(torch.uint8)
    inp = _input(cnn, n=4, mask=mask)
    theirs = _run("quantus:PointingGame", inp)
    native = METRICS.get("pointing_game")().score(inp)
    np.testing.assert_allclose(theirs.values[""].numpy(), native.values[""].numpy())
    assert METRICS.get("quantus:PointingGame").needs == frozenset({"mask"})

    peak = inp.attributions.flatten(1).argmax(1)
    hand = torch.zeros(4, SIZE * SIZE, dtype=torch.uint8)
    hand[0, peak[0]] = 1  # a hit
    hand[1, (peak[1] + 1) % (SIZE * SIZE)] = 1  # a miss
    hand[2, peak[2]] = VOID  # void at the peak counts as background
    hand[2, (peak[2] + 1) % (SIZE * SIZE)] = 1
    inp.batch.mask = hand.view(4, 1, SIZE, SIZE)  # sample 3: empty
    scores = _run("quantus:PointingGame", inp)
    assert scores.values[""][:3].tolist() == [1.0, 0.0, 0.0] and math.isnan(scores.values[""][3].item())
    assert scores.reasons == [None, None, None, "empty mask"]
    inp.batch.mask = torch.ones(4, 1, 12, 12, dtype=torch.uint8)
    with pytest.raises(ValueError, match="s0, s1, s2, s3"):
        _run("quantus:PointingGame", inp)


def test_nan_model_output_gives_nan_with_reason() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, SIZE, SIZE, generator=g) * 0.5 + 0.25
    x[1] = 1.0
    model = LoadedModel(NaNForBrightImages(torch.randn(3, SIZE, SIZE, generator=g)).eval(), ModelSpec(num_classes=2))
    batch = batch_of(x)
    inp = MetricInput(model, batch, torch.rand(2, 1, SIZE, SIZE, generator=g), [0, 1])
    scores = _run("quantus:PixelFlipping", inp, init={"features_in_step": 3 * 96, "perturb_baseline": 0.0})
    assert math.isfinite(scores.values[""][0].item()) and math.isnan(scores.values[""][1].item())
    assert scores.reasons == [None, "Quantus returned NaN"]


def test_stochastic_metric_is_seeded_per_sample_and_batch_invariant(cnn: LoadedModel) -> None:
    params = {"init": {"nr_runs": 4, "subset_size": 60}}
    seeds = [3, 4]
    state = np.random.get_state()
    inp = _input(cnn, n=2, seeds=seeds)
    whole = _run("quantus:FaithfulnessCorrelation", inp, **params).values[""]
    assert np.array_equal(np.random.get_state()[1], state[1])  # the global RNG is left as it was
    halves = []
    for i in (0, 1):
        part = MetricInput(cnn, inp.batch.select(slice(i, i + 1)), inp.attributions[i : i + 1], seeds[i : i + 1])
        halves.append(_run("quantus:FaithfulnessCorrelation", part, **params).values[""])
    torch.testing.assert_close(whole, torch.cat(halves), rtol=0, atol=1e-12)
    other = _run("quantus:FaithfulnessCorrelation", _input(cnn, n=2, seeds=[7, 8]), **params).values[""]
    assert not torch.allclose(whole, other)


def test_explain_func_calls_the_cells_explainer(cnn: LoadedModel) -> None:
    """Robustness metrics explain perturbed inputs again: through the cell's explainer, with the sample seed."""
    explainer = EXPLAINERS.get("saliency")()
    params = {"init": {"nr_samples": 3, "lower_bound": 0.05, "normalise": False}}
    first = _run("quantus:MaxSensitivity", _input(cnn, n=2, explainer=explainer), **params)
    again = _run("quantus:MaxSensitivity", _input(cnn, n=2, explainer=explainer), **params)
    assert torch.isfinite(first.values[""]).all() and (first.values[""] > 0).all()
    torch.testing.assert_close(first.values[""], again.values[""], rtol=0, atol=0)


def test_names_params_and_results_are_checked() -> None:
    assert METRICS.get("quantus:IROF").name == "quantus:IROF"
    assert quantus_metric("IROF") is quantus_metric("IROF")
    with pytest.raises(ConfigError, match="quantus:IROF"):
        METRICS.get("quantus:irof")
    with pytest.raises(ConfigError, match="quantus:PixelFlipping"):
        METRICS.get("quantus:PixelFlip")
    continuity = METRICS.get("quantus:Continuity")
    with pytest.raises(ValidationError, match="set higher_is_better"):
        continuity.Params()
    assert continuity(continuity.Params(higher_is_better=True)).directions() == {"": Direction.HIGHER}
    region = METRICS.get("quantus:RegionPerturbation")
    assert region(region.Params(init={"order": "lerf"})).directions() == {"": Direction.LOWER}
    with pytest.raises(ValidationError, match=r"unknown keyword.*nr_run.*accepted: .*nr_runs"):
        METRICS.get("quantus:FaithfulnessCorrelation").Params(init={"nr_run": 3})
    with pytest.raises(ValidationError, match="xbench sets x_batch"):
        METRICS.get("quantus:IROF").Params(call={"x_batch": 1})
    with pytest.raises(ValueError, match="per-sample metrics only"):
        per_sample_result({10: 0.5, 20: 0.4}, "ROAD", "s0")  # what Quantus' ROAD returns
    value, curve, reason = per_sample_result([None], "X", "s0")
    assert math.isnan(value) and curve is None and reason == "Quantus returned None"
    assert per_sample_result([[1.0, 3.0, 2.0]], "X", "s0")[0] == 4.5
