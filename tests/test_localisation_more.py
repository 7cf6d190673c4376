"""IoU sweep, pointing game, energy pointing game, relevance rank accuracy and pixel AUROC:
hand-made masks, oracle and chance maps, edge cases, batch invariance, and cross-checks
against Quantus 0.6, scikit-learn and TorchRay's pointing rule on identical inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import quantus
import torch
from sklearn.metrics import roc_auc_score

from bench.metrics.base import Metric, MetricInput, Scores
from bench.metrics.localisation import (
    EnergyPointingGame,
    IoU,
    IoUSweep,
    PixelAUROC,
    PointingGame,
    RelevanceRankAccuracy,
)
from bench.metrics.masks import CONSTANT_MAP, binarise, near_object, sort_rows, split_mask
from bench.models.base import prepare
from bench.models.small_cnn import build_small_cnn
from bench.registry import METRICS, load_builtin_components
from bench.types import VOID, LoadedModel, ModelSpec
from tests.helpers import batch_of, linear_model

if not hasattr(np, "trapz"):  # Quantus 0.6 still calls np.trapz, which numpy 2.4 removed
    np.trapz = np.trapezoid

ALL = [IoUSweep, PointingGame, EnergyPointingGame, RelevanceRankAccuracy, PixelAUROC]


def _inp(attr: torch.Tensor, mask: torch.Tensor, model: LoadedModel | None = None) -> MetricInput:
    n, size = attr.shape[0], attr.shape[-2:]
    model = model or linear_model(torch.zeros(3, *size))
    return MetricInput(
        model=model, batch=batch_of(torch.zeros(n, 3, *size), mask=mask), attributions=attr, seeds=[0] * n
    )


def _score(cls: type[Metric], attr: torch.Tensor, mask: torch.Tensor, **params) -> Scores:
    return cls(cls.Params(**params)).score(_inp(attr, mask))


def _main(cls: type[Metric], attr: torch.Tensor, mask: torch.Tensor, **params) -> list[float]:
    return _score(cls, attr, mask, **params).values[""].tolist()


def _square(size: int, top: int, left: int, side: int, value: float = 1.0) -> torch.Tensor:
    t = torch.zeros(1, 1, size, size)
    t[..., top : top + side, left : left + side] = value
    return t


def _blobs(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous signed attributions (no ties) and rectangular object masks, both random."""
    g = torch.Generator().manual_seed(seed)
    attr = torch.randn(n, 1, size, size, generator=g)
    attr = attr + 2 * torch.nn.functional.avg_pool2d(attr, 5, 1, 2)  # some spatial structure
    mask = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    for i in range(n):
        top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
        h, w = torch.randint(2, size // 2, (2,), generator=g).tolist()
        mask[i, :, top : top + h, left : left + w] = 1
    return attr, mask


# ---------------------------------------------------------------- hand-made masks


def test_iou_sweep_hand_made() -> None:
    mask = _square(10, 0, 0, 5).to(torch.uint8)  # 25 pixels
    attr = torch.arange(100, dtype=torch.float32).flip(0).view(1, 1, 10, 10)  # 99 .. 0, row-major
    scores = _score(IoUSweep, attr, mask, thresholds=[0.25, 0.5, 0.75])
    # a >= t*99 selects the first 75, 50, 25 pixels: rows 0-6 and half of row 7 (the whole mask), rows 0-4
    # (the whole mask), rows 0-1 and half of row 2 (15 mask pixels)
    expected = [25 / 75, 25 / 50, 15 / 35]
    assert scores.curves[""].tolist()[0] == pytest.approx(expected)
    assert scores.values[""].tolist() == pytest.approx([0.5]) and scores.curves["threshold"].tolist() == [[0.5]]
    topk = _score(IoUSweep, attr, mask, rule="topk", thresholds=[10, 50, 25])  # sorted: 10, 25, 50
    assert topk.curves[""].tolist()[0] == pytest.approx([5 / 30, 15 / 35, 25 / 50])


def test_iou_sweep_equals_iou_at_every_threshold() -> None:
    attr, mask = _blobs(6, 16, seed=1)
    mask[0, :, :3] = VOID
    for rule, values in (("fraction_of_max", [0.0, 0.1, 0.35, 0.5, 0.9, 1.0]), ("topk", [0.5, 7.3, 25, 100])):
        curve = _score(IoUSweep, attr, mask, rule=rule, thresholds=values).curves[""]
        for j, v in enumerate(values):
            assert curve[:, j].tolist() == _main(IoU, attr, mask, threshold=rule, value=v), (rule, v)


def test_iou_sweep_best_threshold_is_the_strictest_tie() -> None:
    mask = _square(8, 0, 0, 4).to(torch.uint8)
    oracle = mask.float()  # every fraction in (0, 1] selects exactly the mask
    scores = _score(IoUSweep, oracle, mask)
    assert scores.values[""].item() == 1.0 and scores.curves["threshold"].item() == pytest.approx(0.95)
    # 10 % asks for 7 pixels, but ties with the 7th are selected: 10 % and 25 % both select the mask
    topk = _score(IoUSweep, oracle, mask, rule="topk", thresholds=[60, 25, 10])
    assert topk.values[""].item() == 1.0 and topk.curves["threshold"].item() == 10
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        IoUSweep.Params(thresholds=[0.5, 1.5])
    with pytest.raises(ValueError, match="percentage"):
        IoUSweep.Params(rule="topk", thresholds=[0])
    assert IoUSweep.Params(thresholds=[0.9, 0.1, 0.9]).thresholds == (0.1, 0.9)


def test_pointing_game_hand_made() -> None:
    mask = _square(10, 2, 2, 3).to(torch.uint8)  # rows/cols 2..4
    inside, outside = torch.zeros(1, 1, 10, 10), torch.zeros(1, 1, 10, 10)
    inside[..., 3, 3] = 1.0
    outside[..., 8, 8] = 1.0
    assert _main(PointingGame, inside, mask) == [1.0]
    assert _main(PointingGame, outside, mask) == [0.0]
    tied = outside.clone()
    tied[..., 4, 4] = 1.0  # two maxima, one on the object: a hit
    assert _main(PointingGame, tied, mask) == [1.0]
    # tolerance: the maximum at (8, 4) is 4 px below the object's last row (4)
    below = torch.zeros(1, 1, 10, 10)
    below[..., 8, 4] = 1.0
    assert _main(PointingGame, below, mask, tolerance=4) == [0.0]  # open disk: distance 4 is not < 4
    assert _main(PointingGame, below, mask, tolerance=5) == [1.0]
    assert _main(PointingGame, below, mask, tolerance=1) == _main(PointingGame, below, mask, tolerance=0) == [0.0]


def _torchray_hit(mask: np.ndarray, point: tuple[int, int], tolerance: int) -> bool:
    """TorchRay's PointingGame.evaluate, transcribed: point = (u, v) = (column, row)."""
    v = (np.arange(mask.shape[0], dtype=np.float32) - point[1]) ** 2
    u = (np.arange(mask.shape[1], dtype=np.float32) - point[0]) ** 2
    accept = (v[:, None] + u[None, :]) < tolerance**2
    return bool((mask & accept).any())


@pytest.mark.parametrize("tolerance", [2, 5, 15])
def test_pointing_game_tolerance_matches_torchray(tolerance: int) -> None:
    attr, mask = _blobs(24, 40, seed=tolerance)
    ours = _main(PointingGame, attr, mask, tolerance=tolerance)
    for i in range(24):
        row, col = divmod(int(attr[i].flatten().argmax()), 40)  # a unique maximum (continuous values)
        assert ours[i] == float(_torchray_hit(mask[i, 0].numpy().astype(bool), (col, row), tolerance)), i
    assert 0 < sum(ours) < 24  # both outcomes occur


def test_near_object_matches_torchray_for_every_maximum() -> None:
    """Plateaus of tied maxima (a coarsely quantised map) and chunked gathers: a hit when any maximum
    passes TorchRay's test."""
    attr, mask = _blobs(10, 24, seed=11)
    attr = attr.round()
    maxima = attr == attr.flatten(1).amax(1).view(-1, 1, 1, 1)
    assert maxima.flatten(1).sum(1).max() > 1
    for tolerance in (2, 3, 9):
        got = near_object(maxima, mask == 1, tolerance, chunk=7).tolist()
        for i in range(10):
            rows, cols = maxima[i, 0].nonzero().unbind(1)
            expected = any(
                _torchray_hit(mask[i, 0].numpy().astype(bool), (c, r), tolerance)
                for r, c in zip(rows.tolist(), cols.tolist(), strict=True)
            )
            assert got[i] == expected, (tolerance, i)


def test_energy_pointing_game_hand_made() -> None:
    mask = _square(4, 0, 0, 2).to(torch.uint8)  # 4 object pixels
    attr = torch.full((1, 1, 4, 4), -1.0)  # negative mass is ignored
    attr[..., 0, 0], attr[..., 1, 1], attr[..., 3, 3], attr[..., 2, 3] = 3.0, 1.0, 2.0, 2.0
    assert _main(EnergyPointingGame, attr, mask) == pytest.approx([4 / 8])


def test_relevance_rank_accuracy_hand_made() -> None:
    mask = _square(4, 0, 0, 2).to(torch.uint8)  # K = 4
    attr = torch.zeros(1, 1, 4, 4)
    attr[..., 0, 0], attr[..., 0, 1], attr[..., 3, 3], attr[..., 2, 2] = 4.0, 3.0, 2.0, 1.0
    assert _main(RelevanceRankAccuracy, attr, mask) == pytest.approx([2 / 4])
    # a tie across the K-th place: 1 place left for 13 zero-valued pixels of which 2 are object
    attr[..., 2, 2] = 0.0
    assert _main(RelevanceRankAccuracy, attr, mask) == pytest.approx([(2 + 1 * 2 / 13) / 4])


def test_pixel_auroc_hand_made() -> None:
    mask = torch.tensor([[[[1, 1, 0, 0]]]], dtype=torch.uint8)
    # object scores 3 and 1, background 2 and 1: pairs (3>2, 3>1, 1<2, 1=1) -> (1 + 1 + 0 + 0.5) / 4
    attr = torch.tensor([[[[3.0, 1.0, 2.0, 1.0]]]])
    assert _main(PixelAUROC, attr, mask) == pytest.approx([2.5 / 4])
    assert _main(PixelAUROC, -attr, mask) == pytest.approx([1.5 / 4])
    signed_zeros = torch.tensor([[[[0.0, -1.0, -0.0, -2.0]]]])  # -0.0 ties with 0.0
    assert _main(PixelAUROC, signed_zeros, mask) == pytest.approx([(0.5 + 1 + 0 + 1) / 4])


# ---------------------------------------------------------------- oracle, chance and edge cases


def _voc_like() -> torch.Tensor:
    mask = _square(12, 3, 3, 5).to(torch.uint8)
    mask[..., 2, 2:9] = VOID  # a void border above the object
    mask[..., 8, 2:9] = VOID
    return mask


@pytest.mark.parametrize("cls", ALL)
def test_oracle_scores_one(cls: type[Metric]) -> None:
    mask = _voc_like()
    assert _main(cls, (mask == 1).float(), mask) == [1.0]
    assert _main(cls, (mask == 1).float() * 5 - 1, mask) == [1.0]  # any affine copy with a positive scale


@pytest.mark.parametrize("cls", ALL)
def test_constant_map_gives_no_answer_in_every_localisation_metric(cls: type[Metric]) -> None:
    """One degenerate-map rule for all: a constant map scores the declared value (0; the AUROC 0.5,
    chance), flagged degenerate with the reason, however the map's value or the void pixels lie."""
    mask = _voc_like()
    declared = {PixelAUROC: 0.5}.get(cls, 0.0)
    assert cls.degenerate == {"": declared}
    for value in (0.0, 0.7, -2.0):
        const = torch.full((1, 1, 12, 12), value)
        const[mask == VOID] = 9.0  # void pixels do not count: the map is constant where it is scored
        scores = _score(cls, const, mask)
        assert scores.values[""].tolist() == [declared]
        assert scores.degenerate is not None and scores.degenerate.tolist() == [True]
        assert scores.reasons == [CONSTANT_MAP]
        for curve in scores.curves.values():
            assert torch.isnan(curve).all()


def test_pointing_game_counts_a_constant_map_as_a_miss() -> None:
    """TorchRay's protocol: a map with no maximum to point at is a miss, not left out of the mean."""
    mask = _voc_like()
    attr = torch.stack([(mask == 1).float()[0], torch.zeros(1, 12, 12)])
    scores = PointingGame().score(_inp(attr, torch.cat([mask, mask])))
    assert scores.values[""].tolist() == [1.0, 0.0]
    assert scores.degenerate.tolist() == [False, True]


def test_energy_pointing_game_without_positive_attribution_gives_no_answer() -> None:
    mask = _voc_like()
    signless = -torch.rand(1, 1, 12, 12)
    scores = _score(EnergyPointingGame, signless, mask)
    assert scores.values[""].tolist() == [0.0] and scores.degenerate.tolist() == [True]
    assert scores.reasons == ["no positive attribution (scored as no answer)"]


def test_binarise_selects_nothing_on_a_constant_map() -> None:
    mask = _voc_like()
    obj, valid = split_mask(mask, ignore_void=True)
    for rule, value in (("fraction_of_max", 0.5), ("mean", 0.5), ("otsu", 0.5), ("topk", 20.0), ("mask_size", 0.5)):
        assert not binarise(torch.full((1, 1, 12, 12), 0.3), obj, valid, rule, value).any(), rule


@pytest.mark.parametrize("cls", ALL)
def test_empty_mask_is_nan_with_a_reason(cls: type[Metric]) -> None:
    attr, mask = _blobs(3, 10, seed=4)
    mask[1] = 0
    mask[2, :, :, :5] = VOID  # an object of void pixels only is empty too
    mask[2][mask[2] == 1] = 0
    scores = _score(cls, attr, mask)
    for values in [*scores.values.values(), *scores.curves.values()]:
        assert not torch.isnan(values[0]).any() and torch.isnan(values[1:]).all()
    assert scores.reasons == [None, "empty mask", "empty mask"]


def test_mask_without_background_is_nan_for_auroc() -> None:
    mask = torch.ones(1, 1, 6, 6, dtype=torch.uint8)
    mask[..., 0, :] = VOID  # object everywhere except void pixels
    scores = _score(PixelAUROC, torch.rand(1, 1, 6, 6), mask)
    assert math.isnan(scores.values[""].item()) and scores.reasons == ["no background pixels"]


def test_void_pixels_are_ignored() -> None:
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    mask[..., :4, :4] = 1
    mask[..., 4:, 4:] = VOID
    attr = (mask == 1).float()
    attr[..., 4:, 4:] = 9.0  # the strongest attributions lie in the void region
    assert _main(PointingGame, attr, mask) == [1.0]
    assert _main(PointingGame, attr, mask, ignore_void=False) == [0.0]  # void then counts as background
    assert _main(EnergyPointingGame, attr, mask) == [1.0]
    assert _main(EnergyPointingGame, attr, mask, ignore_void=False) == pytest.approx([16 / (16 + 16 * 9)])
    assert _main(RelevanceRankAccuracy, attr, mask) == [1.0]
    assert _main(PixelAUROC, attr, mask) == [1.0]
    assert _main(IoUSweep, attr, mask) == [1.0]


@pytest.mark.parametrize("cls", [IoU, *ALL])
def test_mask_of_another_size_names_the_samples(cls: type[Metric]) -> None:
    attr = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="s0, s1"):
        _score(cls, attr, torch.ones(2, 1, 6, 8, dtype=torch.uint8))


class _NaNModel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 2), float("nan"))


@pytest.mark.parametrize("cls", ALL)
def test_scores_do_not_depend_on_the_model(cls: type[Metric]) -> None:
    """Localisation is bookkeeping on the map and the mask: a model that outputs NaN changes nothing."""
    attr, mask = _blobs(4, 12, seed=5)
    nan_model = LoadedModel(module=_NaNModel(), spec=ModelSpec(num_classes=2))
    with_nan = cls().score(_inp(attr, mask, nan_model))
    assert with_nan.values[""].tolist() == _main(cls, attr, mask) and not torch.isnan(with_nan.values[""]).any()


@pytest.mark.parametrize("cls", ALL)
def test_batch_invariance(cls: type[Metric]) -> None:
    """A batch of 8 equals two batches of 4 (the metrics are per-sample computations)."""
    attr, mask = _blobs(8, 16, seed=6)
    attr[3] = 0.0  # a constant map and an empty mask in the batch, too
    mask[5] = 0
    whole = _score(cls, attr, mask)
    halves = [_score(cls, attr[i : i + 4], mask[i : i + 4]) for i in (0, 4)]
    for k, v in whole.values.items():
        torch.testing.assert_close(v, torch.cat([h.values[k] for h in halves]), rtol=0, atol=0, equal_nan=True)
    assert whole.reasons == halves[0].reasons + halves[1].reasons


@pytest.mark.parametrize("cls", ALL)
def test_original_resolution(cls: type[Metric]) -> None:
    """A 4x downsampled oracle, upsampled to each image's full-size mask, still localises well."""
    full = torch.zeros(1, 32, 32, dtype=torch.uint8)
    full[:, 8:24, 4:20] = 1
    small = full[:, ::4, ::4][None]
    inp = _inp(small.float(), small)
    inp.batch.original_masks = [full]
    at_original = cls(cls.Params(resolution="original")).score(inp).values[""].item()
    assert 0.8 < at_original <= 1.0


def test_sort_rows_matches_torch_sort() -> None:
    t = torch.randn(5, 300, generator=torch.Generator().manual_seed(12)).round(decimals=1)  # with ties
    t[0, :7], t[1, -3:] = float("inf"), float("-inf")
    assert torch.equal(sort_rows(t), t.sort(dim=1).values)
    keys = torch.randint(-(2**40), 2**40, (3, 100), generator=torch.Generator().manual_seed(13))
    assert torch.equal(sort_rows(keys), keys.sort(dim=1).values)


def test_registered_names() -> None:
    load_builtin_components()
    for name, cls in {
        "iou_sweep": IoUSweep,
        "pointing_game": PointingGame,
        "energy_pointing_game": EnergyPointingGame,
        "relevance_rank_accuracy": RelevanceRankAccuracy,
        "pixel_auroc": PixelAUROC,
    }.items():
        assert METRICS.get(name) is cls and cls.needs == {"mask"} and cls.describe()


# ---------------------------------------------------------------- cross-checks on identical inputs


@pytest.fixture(scope="module")
def real_inputs() -> tuple[LoadedModel, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A small CNN, images, targets, saliency-like and signed attributions, object masks (no void: Quantus
    counts a 255 as object)."""
    torch.manual_seed(0)
    model = prepare(build_small_cnn((8, 16), 4), ModelSpec(num_classes=4), torch.device("cpu"))
    g = torch.Generator().manual_seed(7)
    x = torch.rand(16, 3, 32, 32, generator=g)
    target = torch.arange(16) % 4
    xg = x.clone().requires_grad_(True)
    model(xg).gather(1, target[:, None]).sum().backward()
    saliency = xg.grad.abs().amax(1, keepdim=True)
    signed, mask = _blobs(16, 32, seed=8)
    attr = torch.cat([saliency[:8], signed[8:]])
    peak = attr.flatten(1).amax(1).view(-1, 1, 1, 1)
    attr = attr + (torch.arange(16) % 2 == 0).view(-1, 1, 1, 1) * mask * peak  # every other map favours the object
    return model, x, target, attr, mask


def _quantus(metric, inputs, attr: torch.Tensor | None = None) -> np.ndarray:
    model, x, target, a, mask = inputs
    a = a if attr is None else attr
    out = metric(
        model=model.module,
        x_batch=x.numpy(),
        y_batch=target.numpy(),
        a_batch=a.numpy(),
        s_batch=mask.numpy(),
        device="cpu",
        channel_first=True,
    )
    return np.asarray(out, dtype=np.float64)


def _ours(cls: type[Metric], inputs, attr: torch.Tensor | None = None) -> np.ndarray:
    model, x, target, a, mask = inputs
    batch = batch_of(x, mask=mask)
    batch.target = target
    inp = MetricInput(model=model, batch=batch, attributions=a if attr is None else attr, seeds=list(range(len(x))))
    return cls().score(inp).values[""].double().numpy()


QUIET = {"disable_warnings": True, "display_progressbar": False}
RAW = {"abs": False, "normalise": False, **QUIET}


def test_pointing_game_matches_quantus(real_inputs) -> None:
    ours = _ours(PointingGame, real_inputs)
    np.testing.assert_array_equal(ours, _quantus(quantus.PointingGame(**RAW), real_inputs))
    assert 0 < ours.sum() < len(ours)


def test_energy_pointing_game_matches_quantus(real_inputs) -> None:
    a = real_inputs[3]
    ours = _ours(EnergyPointingGame, real_inputs)
    mass = _quantus(quantus.RelevanceMassAccuracy(**RAW), real_inputs, attr=a.clamp(min=0))
    np.testing.assert_allclose(ours, mass, rtol=0, atol=1e-6)
    loc = _quantus(quantus.AttributionLocalisation(positive_attributions=True, **RAW), real_inputs)
    np.testing.assert_allclose(ours, loc, rtol=0, atol=1e-4)


def test_relevance_rank_accuracy_matches_quantus(real_inputs) -> None:
    ours = _ours(RelevanceRankAccuracy, real_inputs)
    np.testing.assert_allclose(ours, _quantus(quantus.RelevanceRankAccuracy(**RAW), real_inputs), rtol=0, atol=1e-12)


def test_pixel_auroc_matches_quantus_and_sklearn(real_inputs) -> None:
    ours = _ours(PixelAUROC, real_inputs)
    np.testing.assert_allclose(ours, _quantus(quantus.AUC(**RAW), real_inputs), rtol=0, atol=1e-6)
    # many ties (a coarsely quantised map) and void pixels, against sklearn's average-rank AUC
    attr, mask = _blobs(6, 20, seed=9)
    attr = (attr * 2).round()
    mask[:, :, 0] = VOID
    mask[:, :, :, -3:] = VOID
    expected = [roc_auc_score(m[m != VOID].numpy() == 1, a[m != VOID].numpy()) for a, m in zip(attr, mask, strict=True)]
    np.testing.assert_allclose(_main(PixelAUROC, attr, mask), expected, rtol=0, atol=1e-6)
