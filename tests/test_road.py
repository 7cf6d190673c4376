"""ROAD: the imputation and the scores against pytorch-grad-cam on identical inputs, an analytic
imputation, seeded noise, edge cases and batch invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from pytorch_grad_cam.metrics import road as gradcam_road
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

from bench.functional.imputation import imputed_images, linear_imputation, removal_count
from bench.metrics.base import MetricInput
from bench.metrics.road import ROAD
from bench.models.base import prepare
from bench.models.small_cnn import build_small_cnn
from bench.types import LoadedModel, ModelSpec
from tests.helpers import batch_of, linear_model
from tests.test_faithfulness_more import NaNForBrightImages, one_thread  # noqa: F401 - autouse fixture

SIZE = 20
# pytorch-grad-cam's ROAD calls numpy on torch tensors, which numpy 2 deprecates (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")


@pytest.fixture(scope="module")
def cnn() -> LoadedModel:
    torch.manual_seed(0)
    net = build_small_cnn((8, 16), num_classes=4)
    spec = ModelSpec(num_classes=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return prepare(net, spec, torch.device("cpu"))


def _input(model: LoadedModel, x: torch.Tensor, attr: torch.Tensor, target: torch.Tensor, seeds=None) -> MetricInput:
    batch = batch_of(x)
    batch.target = target
    seeds = list(range(100, 100 + len(x))) if seeds is None else seeds
    return MetricInput(model=model, batch=batch, attributions=attr, seeds=seeds)


def _images(n: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, SIZE, SIZE, generator=g)
    attr = torch.rand(n, 1, SIZE, SIZE, generator=g)  # in [0, 1] like a CAM, without ties
    return x, attr, torch.tensor([0, 1, 3, 2][:n])


def test_imputation_equals_gradcams_noisy_linear_imputer() -> None:
    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, 17, 13, generator=g)
    imputer = gradcam_road.NoisyLinearImputer(noise=0.0)
    for fraction in (0.1, 0.5, 0.95):
        removed = torch.rand(17, 13, generator=g) < fraction
        ours = linear_imputation(image.numpy(), removed.numpy())
        theirs = imputer(image, (~removed).float())  # grad-cam's mask: 1 = keep
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-6)
        assert np.array_equal(ours[:, ~removed.numpy()], image.numpy()[:, ~removed.numpy()])  # kept pixels untouched


def test_imputation_reproduces_a_linear_ramp() -> None:
    """The neighbour weights are symmetric, so a linear image solves the interior equations exactly."""
    rows, cols = np.meshgrid(np.arange(12.0), np.arange(15.0), indexing="ij")
    image = np.stack([0.3 * rows + 0.1 * cols, 1.0 - 0.05 * rows, 0.02 * cols]).astype(np.float32)
    removed = np.zeros((12, 15), dtype=bool)
    removed[2:10, 3:12] = True  # an interior hole
    np.testing.assert_allclose(linear_imputation(image, removed), image, atol=1e-5)


@pytest.mark.parametrize("output", ["probability", "logit"])
def test_scores_match_gradcam_per_percentage_and_combined(cnn: LoadedModel, monkeypatch, output: str) -> None:
    """grad-cam's ROAD classes build their imputer with noise 0.01 from torch's global RNG: set it to 0."""
    monkeypatch.setattr(gradcam_road.NoisyLinearImputer.__init__, "__defaults__", (0.0, gradcam_road.neighbors_weights))
    x, attr, target = _images(2)
    percentages = (10, 50, 90)  # symmetric: grad-cam's percentile p removes 100 - p percent
    scores = ROAD(ROAD.Params(noise_std=0.0, output=output, percentages=percentages)).score(
        _input(cnn, x, attr, target)
    )
    cams = attr[:, 0].numpy()
    kind = ClassifierOutputSoftmaxTarget if output == "probability" else ClassifierOutputTarget
    targets = [kind(int(t)) for t in target]
    for j, q in enumerate(percentages):
        morf = gradcam_road.ROADMostRelevantFirst(percentile=100 - q)(x, cams, targets, cnn.module)
        lerf = gradcam_road.ROADLeastRelevantFirst(percentile=100 - q)(x, cams, targets, cnn.module)
        np.testing.assert_allclose(scores.curves["morf"][:, j].numpy(), morf, atol=1e-4)
        np.testing.assert_allclose(scores.curves["lerf"][:, j].numpy(), lerf, atol=1e-4)
    combined = gradcam_road.ROADCombined(percentiles=list(percentages))(x, cams, targets, cnn.module)
    np.testing.assert_allclose(scores.values[""].numpy(), combined, atol=1e-4)
    morf_avg = gradcam_road.ROADMostRelevantFirstAverage(list(percentages))(x, cams, targets, cnn.module)
    np.testing.assert_allclose(scores.values["morf"].numpy(), morf_avg, atol=1e-4)


def test_removal_count_is_gradcams_percentile_count() -> None:
    g = np.random.default_rng(0)
    for pixels in (2, 7, 100, 400, 1024):
        values = g.random(pixels)
        for q in (1, 10, 33.3, 50, 90, 99):
            assert removal_count(pixels, q) == int((values >= np.percentile(values, 100 - q)).sum())
            assert 1 <= removal_count(pixels, q) <= pixels - 1


def test_noise_is_seeded_per_sample_and_only_on_imputed_pixels() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 16, 16, generator=g)
    removed = torch.rand(2, 16, 16, generator=g) < 0.4
    clean = imputed_images(x, removed, 0.0, [5, 6], ["a", "a"])
    noisy = imputed_images(x, removed, 0.05, [5, 6], ["a", "a"])
    again = imputed_images(x[1:], removed[1:], 0.05, [6], ["a"])
    torch.testing.assert_close(noisy[1:], again, rtol=0, atol=0)
    noise = (noisy - clean).permute(1, 0, 2, 3)  # (C, N, H, W)
    assert torch.all(noise[:, removed] != 0) and torch.all(noise[:, ~removed] == 0)
    assert noise[:, removed].std().item() == pytest.approx(0.05, rel=0.1)
    assert not torch.equal(noisy, imputed_images(x, removed, 0.05, [7, 8], ["a", "a"]))


def test_constant_attribution_scores_zero_gap(cnn: LoadedModel) -> None:
    """Ties break by position for both orders: MoRF and LeRF remove the same pixels, the gap is 0."""
    x, _attr, target = _images(2)
    scores = ROAD(ROAD.Params(percentages=(20, 60))).score(_input(cnn, x, torch.zeros(2, 1, SIZE, SIZE), target))
    torch.testing.assert_close(scores.values["morf"], scores.values["lerf"], rtol=0, atol=0)
    assert scores.values[""].tolist() == [0.0, 0.0] and scores.reasons == [None, None]


def test_edge_cases(cnn: LoadedModel) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 12, 12, generator=g) * 0.5 + 0.25
    x[1] = 1.0
    model = LoadedModel(NaNForBrightImages(torch.randn(3, 12, 12, generator=g)).eval(), ModelSpec(num_classes=2))
    params = ROAD.Params(percentages=(10, 50), noise_std=0.0)
    scores = ROAD(params).score(_input(model, x, torch.rand(3, 1, 12, 12, generator=g), torch.zeros(3).long()))
    assert math.isnan(scores.values[""][1].item()) and torch.isfinite(scores.values[""][[0, 2]]).all()
    assert scores.reasons == [None, "the model returned a non-finite score", None]
    with pytest.raises(ValueError, match="s0, s1"):
        ROAD(params).score(_input(cnn, x[:2], torch.rand(2, 1, 8, 8), torch.zeros(2).long()))
    with pytest.raises(ValidationError, match="between 0 and 100"):
        ROAD.Params(percentages=(0, 50))


def test_linear_model_morf_drops_more_than_lerf() -> None:
    """With the exact contributions as attribution, removing the most relevant pixels lowers the logit
    more than removing the least relevant ones."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 12, 12, generator=g)
    w = torch.randn(3, 12, 12, generator=g)
    scores = ROAD(ROAD.Params(output="logit", noise_std=0.0)).score(
        _input(linear_model(w), x, (x * w).sum(1, keepdim=True), torch.zeros(2).long())
    )
    assert (scores.values["morf"] < scores.values["lerf"]).all() and (scores.values[""] > 0).all()


def test_batch_invariance_and_determinism(cnn: LoadedModel) -> None:
    x, attr, target = _images(4)
    metric = ROAD(ROAD.Params(percentages=(25, 75), forward_batch=3))
    whole = metric.score(_input(cnn, x, attr, target, [1, 2, 3, 4]))
    halves = [
        metric.score(_input(cnn, x[i : i + 2], attr[i : i + 2], target[i : i + 2], [i + 1, i + 2])) for i in (0, 2)
    ]
    for name, values in whole.values.items():
        torch.testing.assert_close(values, torch.cat([h.values[name] for h in halves]), rtol=1e-5, atol=1e-6)
    again = metric.score(_input(cnn, x, attr, target, [1, 2, 3, 4]))
    torch.testing.assert_close(whole.curves["morf"], again.curves["morf"], rtol=0, atol=0)
