"""Batched similarity functions against scipy and skimage on random data, row by row."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from skimage.feature import hog
from skimage.metrics import structural_similarity

from bench.metrics.similarity import (
    HOG_SETTINGS,
    against,
    average_ranks,
    hog_similarity,
    pearson,
    prepare_maps,
    similarity,
    spearman,
    ssim,
    topk_count,
    topk_members,
    topk_overlap,
)
from bench.perturb import pixel_ranks


def _maps(n: int = 5, h: int = 12, w: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 1, h, w, generator=g)
    return a, a + torch.randn(n, 1, h, w, generator=g) * torch.linspace(0.1, 3, n).view(-1, 1, 1, 1)


def test_average_ranks_match_scipy_with_ties() -> None:
    values = torch.randint(0, 6, (4, 50), generator=torch.Generator().manual_seed(1)).double()
    expected = np.stack([stats.rankdata(v) for v in values.numpy()])
    np.testing.assert_array_equal(average_ranks(values).numpy(), expected)


@pytest.mark.parametrize("ties", [False, True])
def test_spearman_and_pearson_match_scipy(ties: bool) -> None:
    a, b = _maps()
    if ties:
        a, b = a.round(), (b * 2).round()
    for ours, ref in ((spearman, stats.spearmanr), (pearson, stats.pearsonr)):
        expected = [ref(x.ravel(), y.ravel())[0] for x, y in zip(a.double().numpy(), b.double().numpy(), strict=True)]
        np.testing.assert_allclose(ours(a, b).numpy(), expected, rtol=0, atol=1e-10)


def test_correlations_of_a_constant_map_are_nan() -> None:
    a, b = _maps(n=3)
    a[1] = 0.25
    b[2] = 0.0
    for func in (spearman, pearson):
        values = func(a, b)
        assert math.isfinite(values[0]) and values[1:].isnan().all()


@pytest.mark.parametrize("shape", [(12, 10), (32, 32), (7, 9)])
def test_ssim_matches_skimage(shape: tuple[int, int]) -> None:
    a, b = _maps(n=4, h=shape[0], w=shape[1], seed=2)
    expected = []
    for x, y in zip(a[:, 0].double().numpy(), b[:, 0].double().numpy(), strict=True):
        both = np.concatenate([x.ravel(), y.ravel()])
        expected.append(structural_similarity(x, y, data_range=float(both.max() - both.min())))
    np.testing.assert_allclose(ssim(a, b).numpy(), expected, rtol=0, atol=1e-10)


def test_ssim_shrinks_the_window_for_small_maps_and_is_nan_for_identical_constants() -> None:
    a, b = _maps(n=2, h=5, w=6, seed=3)
    x, y = a[0, 0].double().numpy(), b[0, 0].double().numpy()
    both = np.concatenate([x.ravel(), y.ravel()])
    expected = structural_similarity(x, y, win_size=5, data_range=float(both.max() - both.min()))
    assert ssim(a, b)[0].item() == pytest.approx(expected, abs=1e-10)
    same = torch.full((1, 1, 8, 8), 0.5)
    assert ssim(same, same).isnan().all()
    assert ssim(a, a).numpy() == pytest.approx([1.0, 1.0])


def test_hog_similarity_matches_skimage_and_scipy() -> None:
    a, b = _maps(n=3, h=32, w=40, seed=4)
    expected = [
        stats.pearsonr(hog(x, **HOG_SETTINGS), hog(y, **HOG_SETTINGS))[0]
        for x, y in zip(a[:, 0].double().numpy(), b[:, 0].double().numpy(), strict=True)
    ]
    np.testing.assert_allclose(hog_similarity(a, b).numpy(), expected, rtol=0, atol=1e-10)
    flat = torch.zeros(1, 1, 32, 32)
    assert hog_similarity(flat, a[:1, :, :, :32]).isnan().all()
    with pytest.raises(ValueError, match="at least 24x24"):
        hog_similarity(a[:, :, :16, :16], b[:, :, :16, :16])


@pytest.mark.parametrize("k_percent", [1.0, 10.0, 33.0, 100.0])
def test_topk_overlap_matches_a_set_reference(k_percent: float) -> None:
    a, b = _maps(n=4, h=10, w=10, seed=5)
    k = max(1, math.ceil(100 * k_percent / 100))
    assert topk_count(100, k_percent) == k
    expected = []
    for x, y in zip(a.flatten(1).numpy(), b.flatten(1).numpy(), strict=True):
        top_x = set(np.argsort(-x, kind="stable")[:k].tolist())
        top_y = set(np.argsort(-y, kind="stable")[:k].tolist())
        expected.append(len(top_x & top_y) / k)
    np.testing.assert_allclose(topk_overlap(a, b, k_percent).numpy(), expected)
    assert topk_overlap(a, a, k_percent).tolist() == [1.0] * 4


def test_topk_members_break_ties_like_pixel_ranks() -> None:
    values = torch.randint(0, 4, (6, 1, 9, 7), generator=torch.Generator().manual_seed(6)).float()
    for k_percent in (5.0, 30.0, 77.0):
        k = topk_count(63, k_percent)
        assert torch.equal(topk_members(values, k_percent), pixel_ranks(values) < k)
        assert (topk_members(values, k_percent).sum(1) == k).all()


def test_prepare_maps_normalises_per_sample_and_keeps_zero_maps() -> None:
    a = torch.tensor([[[[-4.0, 2.0]]], [[[0.0, 0.0]]], [[[0.5, -0.25]]]])
    out = prepare_maps(a, abs=False, normalise=True)
    assert out.flatten(1).tolist() == [[-1.0, 0.5], [0.0, 0.0], [1.0, -0.5]]
    assert prepare_maps(a, abs=True, normalise=True).flatten(1).tolist() == [[1.0, 0.5], [0.0, 0.0], [1.0, 0.5]]
    assert torch.equal(prepare_maps(a, abs=False, normalise=False), a)


def test_dispatch_and_device_and_dtype() -> None:
    a, b = _maps(n=2, h=24, w=24)
    for kind in ("spearman", "pearson", "ssim", "hog"):
        out = similarity(kind, a, b)
        assert out.shape == (2,) and out.dtype == torch.float64 and torch.isfinite(out).all()
        torch.testing.assert_close(against(kind, a)(b), out, rtol=0, atol=1e-12)  # the cached reference
    with pytest.raises(ValueError, match="unknown similarity"):
        similarity("cosine", a, b)  # type: ignore[arg-type]
