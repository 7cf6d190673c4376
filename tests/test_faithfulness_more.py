"""Faithfulness correlation, pixel flipping, region perturbation, IROF and deletion's pixels_per_step:
analytic cases on a linear model, cross-checks with Quantus 0.6 on identical inputs, edge cases,
batch invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import quantus
import torch
from pydantic import ValidationError
from quantus.functions.perturb_func import baseline_replacement_by_mask
from torch import nn

from bench.explainers.superpixels import slic_segments
from bench.functional.faithfulness import random_subsets
from bench.metrics.base import Metric, MetricInput
from bench.metrics.faithfulness import (
    IROF,
    Deletion,
    FaithfulnessCorrelation,
    Insertion,
    PixelFlipping,
    RegionPerturbation,
)
from bench.models.base import prepare
from bench.models.small_cnn import build_small_cnn
from bench.types import LoadedModel, ModelSpec
from tests.helpers import LinearScore, batch_of, linear_model

if not hasattr(np, "trapz"):  # Quantus 0.6 calls np.trapz, which numpy 2.4 removed
    np.trapz = np.trapezoid

SIZE = 24  # 576 pixels: Quantus' features_in_step must divide H*W, and 3 * 48 does


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tests push many tiny batches through a tiny CNN: latency-bound, so one thread is fastest
    (on a shared, oversubscribed machine two threads wait on each other at every pass)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cnn() -> LoadedModel:
    torch.manual_seed(0)
    net = build_small_cnn((8, 16), num_classes=4)
    spec = ModelSpec(num_classes=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return prepare(net, spec, torch.device("cpu"))


def _images(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, SIZE, SIZE, generator=g)
    attr = torch.randn(n, 1, SIZE, SIZE, generator=g)  # distinct values: no ties to break
    return x, attr, torch.arange(n) % 4


def _input(model: LoadedModel, x: torch.Tensor, attr: torch.Tensor, target: torch.Tensor, seeds=None) -> MetricInput:
    batch = batch_of(x)
    batch.target = target
    seeds = list(range(100, 100 + len(x))) if seeds is None else seeds
    return MetricInput(model=model, batch=batch, attributions=attr, seeds=seeds)


def _quantus_kwargs(model: LoadedModel, x, attr, target) -> dict:
    return dict(
        model=model.module,
        x_batch=x.numpy(),
        y_batch=target.numpy(),
        a_batch=attr.numpy(),
        device="cpu",
        channel_first=True,
    )


def _linear_setup(n: int = 3, seed: int = 0):
    """A linear model (logit 0 = sum(w * x)) and the exact per-pixel contributions as attributions."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 12, 12, generator=g)
    w = torch.randn(3, 12, 12, generator=g)
    return linear_model(w), x, (x * w).sum(1, keepdim=True)


QUIET = {"disable_warnings": True, "display_progressbar": False}


# ----------------------------------------------------------------------------- steps vs pixels_per_step


def test_exactly_one_of_steps_and_pixels_per_step() -> None:
    assert Deletion.Params().steps == 32 and Deletion.Params().pixels_per_step is None
    p = Deletion.Params(pixels_per_step=10)
    assert p.steps is None and p.counts(25, torch.device("cpu")).tolist() == [0, 10, 20, 25]
    with pytest.raises(ValidationError, match="either steps or pixels_per_step"):
        Deletion.Params(steps=8, pixels_per_step=10)
    with pytest.raises(ValidationError, match="exactly one"):
        Deletion.Params(steps=None)
    assert Insertion.Params(pixels_per_step=3).baseline == "blur"


def test_deletion_pixels_per_step_is_exact_on_a_linear_model() -> None:
    model, x, attr = _linear_setup()
    scores = Deletion(Deletion.Params(pixels_per_step=50, output="logit", baseline="zero")).score(
        _input(model, x, attr, torch.zeros(3, dtype=torch.long))
    )
    expected, fractions = [], np.array([0, 50, 100, 144]) / 144
    for a in attr.flatten(1).double().numpy():
        order = np.argsort(-a, kind="stable")
        expected.append([a.sum() - a[order[:c]].sum() for c in (0, 50, 100, 144)])
    np.testing.assert_allclose(scores.curves[""].numpy(), expected, rtol=1e-4, atol=1e-4)
    auc = np.trapezoid(np.array(expected), x=fractions, axis=1)  # the last step is partial
    np.testing.assert_allclose(scores.values[""].numpy(), auc, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- faithfulness correlation


def test_faithfulness_correlation_is_one_for_exact_contributions() -> None:
    """On a linear model with a zero baseline, the logit drop of a subset IS its attribution sum."""
    model, x, attr = _linear_setup()
    params = FaithfulnessCorrelation.Params(nr_runs=20, subset_size=30, baseline="zero", output="logit")
    scores = FaithfulnessCorrelation(params).score(_input(model, x, attr, torch.zeros(3, dtype=torch.long)))
    np.testing.assert_allclose(scores.values[""].numpy(), 1.0, atol=1e-5)
    flipped = FaithfulnessCorrelation(params).score(_input(model, x, -attr, torch.zeros(3, dtype=torch.long)))
    np.testing.assert_allclose(flipped.values[""].numpy(), -1.0, atol=1e-5)


@pytest.mark.parametrize("similarity", ["pearson", "spearman"])
def test_faithfulness_correlation_matches_quantus(cnn: LoadedModel, monkeypatch, similarity: str) -> None:
    """Quantus draws channel values with np.random.choice: hand it our pixel subsets, all channels."""
    x, attr, target = _images()
    seeds = [7, 8, 9, 10]
    runs, size, pixels = 12, 40, SIZE * SIZE
    params = FaithfulnessCorrelation.Params(nr_runs=runs, subset_size=size, similarity=similarity)
    ours = FaithfulnessCorrelation(params).score(_input(cnn, x, attr, target, seeds)).values[""].numpy()

    subsets = random_subsets(seeds, runs, size, pixels, torch.device("cpu")).numpy()
    draws = iter(
        [np.concatenate([c * pixels + subsets[i, r] for c in range(3)]) for r in range(runs) for i in range(4)]
    )
    monkeypatch.setattr(np.random, "choice", lambda *args, **kwargs: next(draws))
    func = quantus.similarity_func.correlation_spearman if similarity == "spearman" else None
    theirs = quantus.FaithfulnessCorrelation(
        nr_runs=runs, subset_size=3 * size, perturb_baseline=0.0, return_aggregate=False, similarity_func=func, **QUIET
    )(**_quantus_kwargs(cnn, x, attr, target))
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_faithfulness_correlation_no_answer_and_undefined_cases() -> None:
    model, x, attr = _linear_setup()
    target = torch.zeros(3, dtype=torch.long)
    params = FaithfulnessCorrelation.Params(nr_runs=10, subset_size=20)
    constant = FaithfulnessCorrelation(params).score(_input(model, x, torch.full_like(attr, 0.3), target))
    assert constant.values[""].tolist() == [0.0] * 3 and constant.degenerate.tolist() == [True] * 3  # no answer
    assert constant.reasons == ["the attribution sums are equal on every subset (constant attribution): no answer"] * 3
    blind = FaithfulnessCorrelation(params).score(_input(linear_model(torch.zeros(3, 12, 12)), x, attr, target))
    assert torch.isnan(blind.values[""]).all() and not blind.degenerate.any()  # the model's fault, not the map's
    assert blind.reasons == ["the model output does not change when the subsets are removed"] * 3
    with pytest.raises(ValueError, match="s0, s1, s2"):
        FaithfulnessCorrelation(FaithfulnessCorrelation.Params(subset_size=144)).score(_input(model, x, attr, target))


# ----------------------------------------------------------------------------- pixel flipping


def test_pixel_flipping_is_exact_on_a_linear_model() -> None:
    model, x, attr = _linear_setup()
    scores = PixelFlipping(PixelFlipping.Params(pixels_per_step=36, output="logit")).score(
        _input(model, x, attr, torch.zeros(3, dtype=torch.long))
    )
    expected = []
    for a in attr.flatten(1).double().numpy():
        order = np.argsort(-a, kind="stable")
        expected.append([a.sum() - a[order[:c]].sum() for c in (36, 72, 108, 144)])  # no unperturbed point
    np.testing.assert_allclose(scores.curves[""].numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scores.values[""].numpy(), np.trapezoid(expected, dx=1, axis=1), rtol=1e-4, atol=1e-4)


def test_pixel_flipping_matches_quantus(cnn: LoadedModel) -> None:
    x, attr, target = _images()
    ours = PixelFlipping(PixelFlipping.Params(pixels_per_step=48)).score(_input(cnn, x, attr, target))
    kwargs = dict(features_in_step=3 * 48, perturb_baseline=0.0, **QUIET)
    curves = quantus.PixelFlipping(**kwargs)(**_quantus_kwargs(cnn, x, attr, target))
    aucs = quantus.PixelFlipping(return_auc_per_sample=True, **kwargs)(**_quantus_kwargs(cnn, x, attr, target))
    np.testing.assert_allclose(ours.curves[""].numpy(), np.array(curves), atol=1e-4)
    np.testing.assert_allclose(ours.values[""].numpy(), aucs, atol=1e-4)


# ----------------------------------------------------------------------------- region perturbation


def test_region_perturbation_drops_are_exact_on_a_linear_model() -> None:
    """Patches of 5 on 12x12: Quantus pads 3 (1 before, 2 after), so the grid starts at -1."""
    model, x, attr = _linear_setup()
    p = RegionPerturbation.Params(patch_size=5, regions_evaluation=4, output="logit")
    scores = RegionPerturbation(p).score(_input(model, x, attr, torch.zeros(3, dtype=torch.long)))
    region = ((np.arange(12)[:, None] + 1) // 5) * 3 + (np.arange(12)[None, :] + 1) // 5
    expected = []
    for a in attr[:, 0].double().numpy():
        sums = np.array([a[region == r].sum() for r in range(9)])
        order = np.argsort(-sums, kind="stable")
        expected.append(np.cumsum(sums[order[:4]]))  # the drop after removing k regions
    np.testing.assert_allclose(scores.curves[""].numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scores.values["aopc"].numpy(), np.sum(expected, axis=1) / 5, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_region_perturbation_matches_quantus(cnn: LoadedModel, order: str) -> None:
    x, attr, target = _images()
    p = RegionPerturbation.Params(patch_size=7, regions_evaluation=10, order=order)
    metric = RegionPerturbation(p)
    ours = metric.score(_input(cnn, x, attr, target))
    curves = quantus.RegionPerturbation(
        patch_size=7, regions_evaluation=10, order=order, perturb_baseline=0.0, **QUIET
    )(**_quantus_kwargs(cnn, x, attr, target))
    np.testing.assert_allclose(ours.curves[""].numpy(), np.array(curves), atol=1e-4)
    np.testing.assert_allclose(ours.values[""].numpy(), np.trapezoid(curves, dx=1, axis=1), atol=1e-4)
    assert metric.directions()[""].higher_is_better == (order == "morf")


def test_region_perturbation_random_order_is_seeded(cnn: LoadedModel) -> None:
    x, attr, target = _images()
    metric = RegionPerturbation(RegionPerturbation.Params(patch_size=6, regions_evaluation=5, order="random"))
    a = metric.score(_input(cnn, x, attr, target, [1, 2, 3, 4])).curves[""]
    b = metric.score(_input(cnn, x, attr, target, [1, 2, 3, 4])).curves[""]
    c = metric.score(_input(cnn, x, attr, target, [5, 6, 7, 8])).curves[""]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


# ----------------------------------------------------------------------------- IROF


def _broadcast_mask_replacement(arr, mask, **kwargs):
    """Quantus 0.6's IROF asserts that its (N, 1, H, W) mask has the image's shape: broadcast it."""
    return baseline_replacement_by_mask(arr=arr, mask=np.broadcast_to(mask, arr.shape), **kwargs)


def test_irof_matches_quantus(cnn: LoadedModel) -> None:
    """Per image (Quantus' zero padding of shorter curves in a batch changes their AOC), constant baseline
    (Quantus' "mean" is the mean of the whole perturbed batch)."""
    x, attr, target = _images(3)
    ours = IROF(IROF.Params(baseline="constant", baseline_value=0.5)).score(_input(cnn, x, attr, target))
    metric = quantus.IROF(
        perturb_func=_broadcast_mask_replacement, perturb_baseline=0.5, return_aggregate=False, **QUIET
    )
    for i in range(3):
        sl = slice(i, i + 1)
        theirs = metric(**_quantus_kwargs(cnn, x[sl], attr[sl], target[sl]))
        assert ours.values[""][i].item() == pytest.approx(theirs[0], abs=1e-4)
    sizes = [int(slic_segments(img, 100, 10.0).max()) + 1 for img in x]
    for i, k in enumerate(sizes):  # curves padded with NaN past each image's superpixel count
        assert torch.isfinite(ours.curves[""][i, :k]).all() and torch.isnan(ours.curves[""][i, k:]).all()


def test_irof_is_exact_on_a_linear_model() -> None:
    model, x, attr = _linear_setup(n=2)
    x = x + 0.5  # a positive reference score
    model = linear_model(torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(1)))
    attr = (x * model.module.weight).sum(1, keepdim=True)
    scores = IROF(IROF.Params(baseline="zero", output="logit", n_segments=10)).score(
        _input(model, x, attr, torch.zeros(2, dtype=torch.long))
    )
    for i in range(2):
        seg = slic_segments(x[i], 10, 10.0).numpy().ravel()
        a = attr[i].double().numpy().ravel()
        means = np.array([a[seg == s].mean() for s in range(seg.max() + 1)])
        removed = np.cumsum([a[seg == s].sum() for s in np.argsort(-means, kind="stable")])
        ratio = (a.sum() - removed) / a.sum()
        assert scores.values[""][i].item() == pytest.approx(len(ratio) - np.trapezoid(ratio, dx=1), abs=1e-4)


def test_irof_zero_reference_is_nan_with_reason() -> None:
    model = linear_model(torch.ones(3, 12, 12))
    x = torch.zeros(2, 3, 12, 12)  # logit 0 on the untouched image
    x[1] = 0.5
    scores = IROF(IROF.Params(output="logit", baseline="zero")).score(
        _input(model, x, torch.rand(2, 1, 12, 12), torch.zeros(2, dtype=torch.long))
    )
    assert math.isnan(scores.values[""][0].item()) and math.isfinite(scores.values[""][1].item())
    assert scores.reasons[0].startswith("the target score of the unperturbed image is 0") and scores.reasons[1] is None


# ----------------------------------------------------------------------------- every metric: edge cases


METRICS: list[tuple[type[Metric], dict]] = [
    (Deletion, {"steps": 8}),
    (Insertion, {"pixels_per_step": 40}),
    (FaithfulnessCorrelation, {"nr_runs": 8, "subset_size": 30}),
    (FaithfulnessCorrelation, {"nr_runs": 8, "subset_size": 30, "similarity": "spearman"}),
    (PixelFlipping, {"pixels_per_step": 96}),
    (RegionPerturbation, {"patch_size": 6, "regions_evaluation": 6}),
    (IROF, {"n_segments": 20}),
]
IDS = [cls.__name__ + ("-" + params["similarity"] if "similarity" in params else "") for cls, params in METRICS]


class NaNForBrightImages(nn.Module):
    """The linear score, but NaN logits for images brighter than 0.75 on average (a broken model)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.linear = LinearScore(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        return torch.where(x.mean(dim=(1, 2, 3))[:, None] > 0.75, torch.nan, out)


@pytest.mark.parametrize(("cls", "params"), METRICS, ids=IDS)
def test_nan_model_output_gives_nan_with_reason(cls: type[Metric], params: dict) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, SIZE, SIZE, generator=g) * 0.5 + 0.25
    x[1] = 1.0
    model = LoadedModel(NaNForBrightImages(torch.randn(3, SIZE, SIZE, generator=g)).eval(), ModelSpec(num_classes=2))
    scores = cls(cls.Params(**params)).score(
        _input(model, x, torch.rand(3, 1, SIZE, SIZE, generator=g), torch.zeros(3).long())
    )
    main = scores.values[""]
    assert math.isnan(main[1].item()) and torch.isfinite(main[[0, 2]]).all()
    assert scores.reasons == [None, "the model returned a non-finite score", None]


@pytest.mark.parametrize(("cls", "params"), METRICS, ids=IDS)
def test_attribution_of_another_size_names_the_samples(cls: type[Metric], params: dict, cnn: LoadedModel) -> None:
    x, _attr, target = _images(2)
    with pytest.raises(ValueError, match="s0, s1"):
        cls(cls.Params(**params)).score(_input(cnn, x, torch.rand(2, 1, 12, 12), target))


RANKED = [m for m in METRICS if m[0] is not FaithfulnessCorrelation]  # constant maps: see the FC test above


@pytest.mark.parametrize(("cls", "params"), RANKED, ids=[cls.__name__ for cls, _ in RANKED])
def test_constant_attribution_is_defined(cls: type[Metric], params: dict, cnn: LoadedModel) -> None:
    """Ties break by position: a constant map is scored in reading order, a finite value, the same for any
    constant (zero or not)."""
    x, _attr, target = _images(2)
    metric = cls(cls.Params(**params))
    zero = metric.score(_input(cnn, x, torch.zeros(2, 1, SIZE, SIZE), target))
    other = metric.score(_input(cnn, x, torch.full((2, 1, SIZE, SIZE), 0.7), target))
    assert torch.isfinite(zero.values[""]).all() and zero.reasons == [None, None]
    torch.testing.assert_close(zero.values[""], other.values[""], rtol=0, atol=0)


@pytest.mark.parametrize(("cls", "params"), METRICS, ids=IDS)
def test_batch_invariance(cls: type[Metric], params: dict, cnn: LoadedModel) -> None:
    """Four images at once equal two batches of two (per-sample seeds, also for the noise baseline)."""
    x, attr, target = _images(4)
    seeds = [11, 12, 13, 14]
    metric = cls(cls.Params(**params, baseline="noise", forward_batch=5))
    whole = metric.score(_input(cnn, x, attr, target, seeds))
    halves = [
        metric.score(_input(cnn, x[i : i + 2], attr[i : i + 2], target[i : i + 2], seeds[i : i + 2])) for i in (0, 2)
    ]
    for name, values in whole.values.items():
        torch.testing.assert_close(values, torch.cat([h.values[name] for h in halves]), rtol=1e-5, atol=1e-6)
