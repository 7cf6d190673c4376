"""IoU against hand-made masks, for every threshold rule, with void pixels and edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from bench.metrics.base import MetricInput
from bench.metrics.localisation import IoU
from bench.metrics.masks import binarise, split_mask
from bench.types import VOID
from tests.helpers import batch_of, linear_model


def _iou(attr: torch.Tensor, mask: torch.Tensor, **params) -> list[float]:
    n = attr.shape[0]
    batch = batch_of(torch.zeros(n, 3, *attr.shape[-2:]), mask=mask)
    inp = MetricInput(
        model=linear_model(torch.zeros(3, *attr.shape[-2:])), batch=batch, attributions=attr, seeds=[0] * n
    )
    return IoU(IoU.Params(**params)).score(inp).values[""].tolist()


def _square(size: int, top: int, left: int, side: int, value: float = 1.0) -> torch.Tensor:
    t = torch.zeros(1, 1, size, size)
    t[..., top : top + side, left : left + side] = value
    return t


def test_hand_made_squares() -> None:
    mask = _square(10, 2, 2, 4).to(torch.uint8)  # 16 pixels
    attr = _square(10, 4, 4, 4)  # 16 pixels, overlap 2x2 = 4
    assert _iou(attr, mask) == pytest.approx([4 / 28])
    assert _iou(mask.float(), mask) == pytest.approx([1.0])  # the oracle
    assert _iou(_square(10, 6, 6, 4), mask) == pytest.approx([0.0])


def test_threshold_rules() -> None:
    mask = _square(10, 0, 0, 5).to(torch.uint8)  # 25 pixels
    attr = torch.arange(100, dtype=torch.float32).flip(0).view(1, 1, 10, 10)  # row-major decreasing
    # fraction_of_max 0.5: values >= 49.5 -> the first 50 pixels (rows 0-4), mask inside them
    assert _iou(attr, mask, threshold="fraction_of_max", value=0.5) == pytest.approx([25 / 50])
    assert _iou(attr, mask, threshold="mean") == pytest.approx([25 / 50])  # mean 49.5
    assert _iou(attr, mask, threshold="topk", value=10) == pytest.approx([5 / 30])  # row 0: 5 of 10 in mask
    assert _iou(attr, mask, threshold="mask_size") == pytest.approx([15 / 35])  # rows 0-2 (25 px) vs mask
    bimodal = torch.where(_square(10, 0, 0, 5) > 0, 5.0, 1.0) + 0.01 * torch.rand(1, 1, 10, 10)
    assert _iou(bimodal, mask, threshold="otsu") == pytest.approx([1.0])


def test_void_pixels_are_ignored() -> None:
    mask = _square(6, 0, 0, 3).to(torch.uint8)
    mask[..., 3:, :] = VOID  # bottom half void
    attr = _square(6, 0, 0, 3) + _square(6, 3, 3, 3, 2.0)  # strongest values in the void region
    assert _iou(attr, mask, threshold="fraction_of_max", value=0.6) == pytest.approx([1.0])
    # counting void pixels, the peak (2.0) lies in the void square and 0.6 * 2 drops the object
    assert _iou(attr, mask, threshold="fraction_of_max", value=0.6, ignore_void=False) == pytest.approx([0.0])
    obj, valid = split_mask(mask, ignore_void=True)
    assert valid.sum() == 18 and obj.sum() == 9


def test_constant_attribution_gives_no_answer_and_empty_mask_is_nan() -> None:
    mask = _square(8, 0, 0, 4).to(torch.uint8)  # 16 of 64
    for rule in ("fraction_of_max", "mean", "otsu", "topk", "mask_size"):
        for value in (0.3, 0.0):
            assert _iou(torch.full((1, 1, 8, 8), value), mask, threshold=rule, value=20 if rule == "topk" else 0.5) == [
                0.0
            ], rule  # not the mask's area fraction, as if every pixel had been chosen
    empty = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    batch = batch_of(torch.zeros(1, 3, 8, 8), mask=empty)
    inp = MetricInput(
        model=linear_model(torch.zeros(3, 8, 8)), batch=batch, attributions=torch.rand(1, 1, 8, 8), seeds=[0]
    )
    scores = IoU().score(inp)
    assert math.isnan(scores.values[""].item()) and scores.reasons == ["empty mask"]


def test_batched_equals_one_by_one() -> None:
    g = torch.Generator().manual_seed(0)
    attr = torch.rand(6, 1, 12, 12, generator=g)
    mask = (torch.rand(6, 1, 12, 12, generator=g) > 0.7).to(torch.uint8)
    for rule in ("fraction_of_max", "mean", "otsu", "topk", "mask_size"):
        together = _iou(attr, mask, threshold=rule, value=30 if rule == "topk" else 0.5)
        alone = [
            _iou(attr[i : i + 1], mask[i : i + 1], threshold=rule, value=30 if rule == "topk" else 0.5)[0]
            for i in range(6)
        ]
        assert together == pytest.approx(alone), rule


def test_binarise_selects_ties_with_the_threshold() -> None:
    attr = torch.tensor([[[[3.0, 2.0], [2.0, 1.0]]]])
    mask = torch.tensor([[[[1, 0], [0, 0]]]], dtype=torch.uint8)
    obj, valid = split_mask(mask, True)
    chosen = binarise(attr, obj, valid, "topk", 50)  # 2 pixels asked, the 2nd ties with the 3rd
    assert chosen.sum() == 3


def test_original_resolution_uses_the_full_size_masks() -> None:
    """A 4x downsampled oracle scores 1 at input resolution and close to 1 at the original size."""
    full = torch.zeros(1, 32, 32, dtype=torch.uint8)
    full[:, 8:24, 4:20] = 1
    small = full[:, ::4, ::4][None]  # (1, 1, 8, 8): what the model saw
    attr = small.float()
    batch = batch_of(torch.zeros(1, 3, 8, 8), mask=small)
    batch.original_masks = [full]
    model = linear_model(torch.zeros(3, 8, 8))
    inp = MetricInput(model=model, batch=batch, attributions=attr, seeds=[0])
    at_input = IoU(IoU.Params(threshold="mask_size")).score(inp).values[""].item()
    at_original = IoU(IoU.Params(threshold="mask_size", resolution="original")).score(inp).values[""].item()
    assert at_input == pytest.approx(1.0)
    assert 0.8 < at_original <= 1.0  # the top |mask| pixels of the upsampled map still cover the object
