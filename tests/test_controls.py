"""The model-free controls: analytic values of the centre-bias blob and the Sobel edge map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.explainers.controls import GaussianBlob, RandomAttribution, SobelEdges, gaussian_blob, greyscale
from bench.types import LoadedModel, ModelSpec, Passes
from tests.helpers import linear_model


def _any_model() -> LoadedModel:
    return linear_model(torch.ones(3, 8, 8))


def _target(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.long)


@pytest.mark.parametrize(("h", "w"), [(9, 9), (8, 8), (7, 12)])
def test_blob_peaks_at_the_centre_and_is_symmetric(h: int, w: int) -> None:
    x = torch.rand(3, 3, h, w)
    blob = GaussianBlob().explain(_any_model(), x, _target(3))
    assert blob.shape == (3, 1, h, w) and torch.equal(blob[0], blob[2])  # the same for every image
    b = blob[0, 0]
    torch.testing.assert_close(b, b.flip(0))
    torch.testing.assert_close(b, b.flip(1))
    peak = torch.nonzero(b == b.max()).float().mean(0)
    torch.testing.assert_close(peak, torch.tensor([(h - 1) / 2, (w - 1) / 2]))
    if h == w:
        torch.testing.assert_close(b, b.T)
    if h % 2 and w % 2:
        assert b[h // 2, w // 2] == 1.0


def test_blob_values() -> None:
    """exp(-r^2 / (2 s^2)) with s = sigma x the shorter side: e^-1/2 at one s from the centre."""
    b = gaussian_blob(21, 41, sigma=0.2)  # s = 4.2 pixels
    s = 0.2 * 21
    assert b[10, 20] == 1.0
    assert b[10, 20 + 4].item() == pytest.approx(math.exp(-16 / (2 * s * s)), rel=1e-6)
    assert b[10 - 3, 20 + 4].item() == pytest.approx(math.exp(-25 / (2 * s * s)), rel=1e-6)
    wide = GaussianBlob(GaussianBlob.Params(sigma=0.5)).explain(_any_model(), torch.rand(1, 3, 21, 41), _target(1))
    assert (wide[0, 0] >= b).all()


def _vertical_step(n: int = 2, size: int = 12, col: int = 6) -> torch.Tensor:
    x = torch.zeros(n, 3, size, size)
    x[..., col:] = 1.0
    return x


def test_sobel_of_a_vertical_step_edge() -> None:
    """A unit step between columns 5 and 6: |gx| = 1 + 2 + 1 = 4 on both, 0 everywhere else."""
    edges = SobelEdges().explain(_any_model(), _vertical_step(), _target(2))
    expected = torch.zeros(12, 12)
    expected[:, 5:7] = 4.0
    torch.testing.assert_close(edges[0, 0], expected)
    torch.testing.assert_close(edges[1], edges[0])
    horizontal = SobelEdges().explain(_any_model(), _vertical_step().transpose(-1, -2), _target(2))
    torch.testing.assert_close(horizontal[0, 0], expected.T)


def test_sobel_is_zero_on_flat_images_and_border() -> None:
    flat = torch.full((1, 3, 10, 10), 0.7)
    assert SobelEdges().explain(_any_model(), flat, _target(1)).abs().max() < 1e-6  # float rounding only


def test_sobel_blur_spreads_and_lowers_the_edge() -> None:
    x = _vertical_step(1, size=24, col=12)
    sharp = SobelEdges().explain(_any_model(), x, _target(1))[0, 0, 12]
    blurred = SobelEdges(SobelEdges.Params(blur_sigma=2.0)).explain(_any_model(), x, _target(1))[0, 0, 12]
    assert blurred.argmax() in (11, 12) and blurred.max() < sharp.max()
    assert (blurred > 0.01).sum() > (sharp > 0.01).sum()  # wider
    assert blurred[0] == pytest.approx(0, abs=1e-6) and blurred[-1] == pytest.approx(0, abs=1e-6)


def test_sobel_equals_scikit_image() -> None:
    """skimage.filters.sobel is sqrt((gx^2 + gy^2) / 2) with kernels divided by 4 and mirrored borders."""
    from skimage.filters import sobel

    x = torch.rand(1, 3, 17, 13, generator=torch.Generator().manual_seed(0))
    ours = SobelEdges().explain(_any_model(), x, _target(1))[0, 0].numpy()
    reference = sobel(greyscale(x)[0, 0].double().numpy()) * 4 * math.sqrt(2)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


def test_greyscale_is_luma() -> None:
    x = torch.zeros(1, 3, 1, 1)
    x[0, 1] = 1.0
    assert greyscale(x).item() == pytest.approx(0.587)
    assert greyscale(torch.full((1, 2, 1, 1), 0.3)).item() == pytest.approx(0.3)


@pytest.mark.parametrize("cls", [GaussianBlob, SobelEdges, RandomAttribution])
def test_controls_ignore_the_model(cls: type) -> None:
    x = torch.rand(4, 3, 8, 8)
    other = LoadedModel(module=linear_model(-torch.ones(3, 8, 8)).module, spec=ModelSpec(num_classes=2))
    explainer = cls()
    first = explainer.explain(_any_model(), x, _target(4), [1, 2, 3, 4])
    torch.testing.assert_close(explainer.explain(other, x, torch.ones(4, dtype=torch.long), [1, 2, 3, 4]), first)
    assert explainer.passes((3, 32, 32)) == Passes(0, 0)
    halves = torch.cat([explainer.explain(other, x[i : i + 2], _target(2), [1, 2, 3, 4][i : i + 2]) for i in (0, 2)])
    torch.testing.assert_close(halves, first)
    assert explainer.deterministic == (cls is not RandomAttribution)
