"""RISE: the batched implementation against a slow loop written from the paper, on the same masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from bench.explainers.rise import RISE, MaskGeometry, draw_masks, render_masks
from bench.models.base import prepare
from bench.models.small_cnn import build_small_cnn
from bench.types import LoadedModel, ModelSpec
from tests.helpers import linear_model

SEEDS = [11, 22, 33, 44]


@pytest.fixture(scope="module")
def cnn() -> LoadedModel:
    torch.manual_seed(0)
    net = build_small_cnn((8, 16), num_classes=4)
    return prepare(net, ModelSpec(num_classes=4, mean=(0.5,) * 3, std=(0.25,) * 3), torch.device("cpu"))


def _images(n: int = 4, size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.rand(n, 3, size, size, generator=g), torch.arange(n) % 4


def _paper_mask(grid: torch.Tensor, shift: torch.Tensor, geom: MaskGeometry) -> torch.Tensor:
    """One mask as the paper builds it: upsample the whole grid, then slice the shifted crop."""
    up = F.interpolate(grid[None, None], size=geom.upsampled, mode="bilinear", align_corners=False)[0, 0]
    dy, dx = int(shift[0]), int(shift[1])
    return up[dy : dy + geom.size[0], dx : dx + geom.size[1]]


def _paper_rise(model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: list[int], params) -> torch.Tensor:
    """S = sum_i P(target | x * M_i) M_i / (N p), one image and one mask at a time."""
    geom = MaskGeometry.of(tuple(x.shape[-2:]), params.grid, params.cell_size)
    grids, shifts = draw_masks(seeds, params.n_masks, geom, params.p)
    out = torch.zeros(len(x), 1, *geom.size, dtype=torch.float64)
    for i in range(len(x)):
        for j in range(params.n_masks):
            mask = _paper_mask(grids[i, j], shifts[i, j], geom)
            with torch.no_grad():
                prob = model(x[i : i + 1] * mask).softmax(1)[0, target[i]]
            out[i, 0] += prob.double() * mask.double()
    return (out / (params.n_masks * params.p)).float()


@pytest.mark.parametrize("shape", [dict(grid=7), dict(cell_size=5), dict(grid=4, p=0.3)])
def test_matches_the_paper_loop_on_the_same_masks(cnn: LoadedModel, shape: dict) -> None:
    params = RISE.Params(n_masks=40, forward_batch=23, **shape)
    x, target = _images(3)
    expected = _paper_rise(cnn, x, target, SEEDS[:3], params)
    got = RISE(params).explain(cnn, x, target, SEEDS[:3])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_rendered_masks_are_the_papers_crops() -> None:
    geom = MaskGeometry.of((20, 30), 6, None)
    assert geom.cell == (4, 5) and geom.upsampled == (28, 35)
    grids, shifts = draw_masks([3, 4], 25, geom, 0.5)
    masks = render_masks(grids.flatten(0, 1), shifts.flatten(0, 1), geom)
    assert masks.shape == (50, 1, 20, 30) and masks.min() >= 0 and masks.max() <= 1
    pairs = zip(grids.flatten(0, 1), shifts.flatten(0, 1), strict=True)
    expected = torch.stack([_paper_mask(g, s, geom) for g, s in pairs])
    torch.testing.assert_close(masks[:, 0], expected, rtol=0, atol=0)
    assert (shifts >= 0).all() and (shifts[..., 0] < 4).all() and (shifts[..., 1] < 5).all()
    assert len(set(shifts.flatten(0, 1)[:, 1].tolist())) == 5  # every offset below a cell occurs


def test_mask_statistics_follow_p() -> None:
    geom = MaskGeometry.of((32, 32), 7, None)
    grids, _ = draw_masks([1], 4000, geom, 0.3)
    assert set(grids.unique().tolist()) == {0.0, 1.0}
    assert abs(grids.mean().item() - 0.3) < 0.01


def test_batch_invariant_and_seeded(cnn: LoadedModel) -> None:
    rise = RISE(RISE.Params(n_masks=100, forward_batch=64))
    x, target = _images(4)
    whole = rise.explain(cnn, x, target, SEEDS)
    halves = torch.cat([rise.explain(cnn, x[i : i + 2], target[i : i + 2], SEEDS[i : i + 2]) for i in (0, 2)])
    torch.testing.assert_close(whole, halves, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rise.explain(cnn, x, target, SEEDS), whole, rtol=0, atol=0)
    other = rise.explain(cnn, x, target, [s + 1 for s in SEEDS])
    assert not torch.allclose(other, whole)


@pytest.mark.parametrize("forward_batch", [1, 17, 10_000])
def test_forward_batch_does_not_change_the_map(cnn: LoadedModel, forward_batch: int) -> None:
    x, target = _images(3)
    reference = RISE(RISE.Params(n_masks=48, forward_batch=48)).explain(cnn, x, target, SEEDS[:3])
    got = RISE(RISE.Params(n_masks=48, forward_batch=forward_batch)).explain(cnn, x, target, SEEDS[:3])
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-6)


def test_map_is_higher_on_the_region_the_logit_reads() -> None:
    """Target logit = sum of w * x over a 8x8 corner: RISE puts the mass there."""
    size = 24
    w = torch.zeros(3, size, size)
    w[:, :8, :8] = 1.0
    x, _ = _images(2, size)
    rise = RISE(RISE.Params(n_masks=2000, output="logit", forward_batch=1000))
    sal = rise.explain(linear_model(w), x, torch.zeros(2, dtype=torch.long), SEEDS[:2])[:, 0]
    inside, far = sal[:, 1:7, 1:7], sal[:, 18:, 18:]  # far: no grid cell in common with the region
    assert (inside.flatten(1).amin(1) > far.flatten(1).amax(1)).all()
    # E[f(x*M) M(u)] / p = E[f] + Cov(f, M(u)) / p: outside the mask's correlation range it is E[f(x*M)] = p * f(x)
    expected_far = 0.5 * (x * w).flatten(1).sum(1)
    torch.testing.assert_close(far.mean((1, 2)), expected_far, rtol=0.05, atol=0)


def test_params() -> None:
    assert RISE.Params().grid == 7 and RISE.Params().n_masks == 2000
    by_cell = RISE.Params(cell_size=8)
    assert by_cell.grid is None and MaskGeometry.of((30, 17), by_cell.grid, by_cell.cell_size).grid == (4, 3)
    with pytest.raises(ValidationError, match="not both"):
        RISE.Params(grid=5, cell_size=8)
    with pytest.raises(ValidationError):
        RISE.Params(grid=None)
    with pytest.raises(ValidationError):
        RISE.Params(p=0)
    assert RISE(RISE.Params(n_masks=300)).passes((3, 32, 32)).forward == 300
    assert RISE.deterministic is False
