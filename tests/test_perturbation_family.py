"""Occlusion, LIME, KernelSHAP and their superpixels: analytic cases, captum cross-checks, seeds, batches."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr import KernelShap as CaptumKernelShap
from captum.attr import Lime as CaptumLime
from captum.attr import Occlusion as CaptumOcclusion
from torch.utils.data import DataLoader, TensorDataset

from bench.cost import PassCounter
from bench.explainers.base import Explainer
from bench.explainers.perturbation import (
    KernelShap,
    Lime,
    Occlusion,
    WeightedLeastSquares,
    lime_similarity,
    windows_per_side,
)
from bench.explainers.superpixels import SegmentationFields, grid_segments, segment, slic_segments
from bench.models.base import prepare
from bench.models.small_cnn import build_small_cnn
from bench.perturb import BaselineFields, make_baseline
from bench.seeding import stable_hash
from bench.types import LoadedModel, ModelSpec
from tests.helpers import linear_model

SIZE = 16


@pytest.fixture(scope="module")
def cnn() -> LoadedModel:
    torch.manual_seed(0)
    spec = ModelSpec(num_classes=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return prepare(build_small_cnn((6, 8), num_classes=4), spec, torch.device("cpu"))


def _inputs(n: int = 8, size: int = SIZE, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.arange(n) % 4, [700 + i for i in range(n)]


def _smooth_image(size: int = 64) -> torch.Tensor:
    """A natural photograph (scikit-image's astronaut, bundled), resized to size x size, (3, H, W) in [0, 1]."""
    from skimage import data, transform

    image = transform.resize(data.astronaut(), (size, size), anti_aliasing=True)
    return torch.from_numpy(image).permute(2, 0, 1).float()


def _linear_setup(size: int = 12) -> tuple[LoadedModel, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, size, size, generator=g)
    x = torch.rand(2, 3, size, size, generator=g)
    return linear_model(w), w, x, torch.zeros(2, dtype=torch.long)


# --- superpixels ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w", "cells"), [(16, 16, 4), (10, 13, 3), (5, 5, 7), (24, 24, 7)])
def test_grid_segments(h: int, w: int, cells: int) -> None:
    seg = grid_segments(h, w, cells)
    k = min(cells, h) * min(cells, w)
    assert seg.shape == (h, w) and seg.dtype == torch.int64
    sizes = torch.bincount(seg.flatten(), minlength=k)
    assert len(sizes) == k and sizes.min() > 0  # ids 0..K-1, every one used, every pixel in exactly one
    rows, cols = math.ceil(h / min(cells, h)), math.ceil(w / min(cells, w))
    assert sizes.max() <= rows * cols and sizes.min() >= (h // min(cells, h)) * (w // min(cells, w))
    assert torch.equal(seg[0], seg[0].sort().values)  # row-major order


def test_slic_segments_on_a_photograph() -> None:
    from skimage.segmentation import slic

    image = _smooth_image(64)
    for n_segments in (20, 50):
        seg = slic_segments(image, n_segments, 10.0)
        k = int(seg.max()) + 1
        assert seg.shape == (64, 64) and seg.min() == 0
        assert torch.bincount(seg.flatten()).min() > 0  # consecutive ids, all used
        assert n_segments / 3 <= k <= 2 * n_segments
        channels_last = image.permute(1, 2, 0).double().numpy()
        reference = slic(channels_last, n_segments=n_segments, compactness=10.0, start_label=0)
        same = {(a, b) for a, b in zip(seg.flatten().tolist(), reference.flatten().tolist(), strict=True)}
        assert len(same) == k == len(np.unique(reference))  # the same partition, relabelled


def test_slic_splits_images_without_structure() -> None:
    """Noise makes SLIC's connectivity step merge everything; the fallback still yields several segments."""
    noise = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(0))
    assert int(slic_segments(noise, 50, 10.0).max()) + 1 >= 2
    assert int(slic_segments(torch.full((3, 24, 24), 0.5), 50, 10.0).max()) + 1 >= 2


def test_segment_batches() -> None:
    x = torch.stack([_smooth_image(32), _smooth_image(32).flip(-1)])
    grid = segment(x, SegmentationFields(segmentation="grid", grid_size=4))
    assert grid.shape == (2, 32, 32) and torch.equal(grid[0], grid[1]) and int(grid.max()) == 15
    slic = segment(x, SegmentationFields(segmentation="slic", n_segments=30))
    assert slic.shape == (2, 32, 32) and torch.equal(slic[0], slic_segments(x[0], 30, 10.0))


# --- Occlusion --------------------------------------------------------------------------------------------


def test_occlusion_of_single_pixels_on_a_linear_model_is_the_contribution() -> None:
    model, w, x, target = _linear_setup()
    params = Occlusion.Params(window=1, stride=1, reduce="mean", forward_batch=50)
    attr = Occlusion(params).explain(model, x, target, [0, 1])
    torch.testing.assert_close(attr, (x * w).sum(1, keepdim=True), rtol=1e-5, atol=1e-5)


def test_occlusion_equals_captum_and_ignores_forward_batch(cnn: LoadedModel) -> None:
    x, target, seeds = _inputs(4)
    params = {"window": 5, "stride": 3, "baseline": "blur", "reduce": "sum"}
    small = Occlusion(Occlusion.Params(forward_batch=8, **params)).explain(cnn, x, target, seeds)  # 2 windows a pass
    large = Occlusion(Occlusion.Params(forward_batch=1000, **params)).explain(cnn, x, target, seeds)
    baseline = make_baseline(x, BaselineFields(baseline="blur"))
    with torch.no_grad():
        reference = CaptumOcclusion(cnn.module).attribute(
            x, sliding_window_shapes=(3, 5, 5), strides=(3, 3, 3), baselines=baseline, target=target
        )
    torch.testing.assert_close(large, reference.sum(1, keepdim=True), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(small, large, rtol=1e-5, atol=1e-6)


def test_occlusion_window_must_fit() -> None:
    model, _w, x, target = _linear_setup(size=6)
    with pytest.raises(ValueError, match="larger than"):
        Occlusion(Occlusion.Params(window=7)).explain(model, x, target, [0, 1])


def test_occlusion_passes(cnn: LoadedModel) -> None:
    x, target, seeds = _inputs(2)
    with PassCounter(cnn.module) as counted:
        Occlusion(Occlusion.Params(window=6, stride=4)).explain(cnn, x, target, seeds)
    assert counted.forward_images / 2 == windows_per_side(SIZE, 6, 4) ** 2 + 1 == 17
    assert Occlusion(Occlusion.Params(window=6, stride=4)).passes((3, SIZE, SIZE)).forward == 17
    assert Occlusion().passes((3, 224, 224)).forward == windows_per_side(224, 8, 4) ** 2 + 1 == 55**2 + 1
    assert Occlusion().passes((3, 32, 24)).forward == 7 * 5 + 1  # no 224x224 assumption


# --- LIME and KernelSHAP ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "explainer",
    [
        KernelShap(KernelShap.Params(segmentation="grid", grid_size=4, n_samples=200)),
        Lime(Lime.Params(segmentation="grid", grid_size=4, n_samples=200, ridge_alpha=0.0)),
    ],
    ids=["kernel_shap", "lime_unregularised"],
)
def test_surrogates_are_exact_on_a_linear_model(explainer: Explainer) -> None:
    """f linear in the superpixel switches: both regressions recover each superpixel's contribution
    sum over its pixels of w * (x - baseline) exactly; ``divide`` spreads it evenly over the pixels."""
    model, w, x, target = _linear_setup()
    attr = explainer.explain(model, x, target, [3, 4])
    seg = segment(x, explainer.params)
    contribution = (x * w).sum(1)  # zero baseline
    for i in range(2):
        per_segment = torch.zeros(16).index_add_(0, seg[i].flatten(), contribution[i].flatten())
        expected = (per_segment / torch.bincount(seg[i].flatten()))[seg[i]]
        torch.testing.assert_close(attr[i, 0], expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(attr.flatten(1).sum(1), contribution.flatten(1).sum(1), rtol=1e-4, atol=1e-4)


def test_kernel_shap_approaches_exact_shapley_values(cnn: LoadedModel) -> None:
    """On 4 superpixels the Shapley values can be enumerated (Shapley 1953): KernelSHAP's estimate is close."""
    x, target, seeds = _inputs(1, seed=5)
    params = KernelShap.Params(segmentation="grid", grid_size=2, n_samples=3000, spread="copy")
    estimate = KernelShap(params).explain(cnn, x, target, seeds)[0, 0]
    seg = segment(x, params)[0]
    coalitions = torch.tensor(list(itertools.product([0, 1], repeat=4)), dtype=torch.float32)  # (16, 4)
    with torch.no_grad():
        keep = coalitions[:, seg][:, None]  # (16, 1, H, W)
        value = cnn(keep * x).gather(1, target.expand(16)[:, None]).squeeze(1)  # zero baseline
    exact = torch.zeros(4)
    index = {tuple(c.int().tolist()): v for c, v in zip(coalitions, value, strict=True)}
    for j in range(4):
        for c, v in index.items():
            if c[j] == 0:
                k = sum(c)
                weight = math.factorial(k) * math.factorial(4 - k - 1) / math.factorial(4)
                exact[j] += weight * (index[(*c[:j], 1, *c[j + 1 :])] - v)
    torch.testing.assert_close(estimate, exact[seg], rtol=0, atol=0.05 * exact.abs().max().item())
    assert exact.sum().item() == pytest.approx(value[-1].item() - value[0].item(), abs=1e-5)  # efficiency


def _captum_per_image(
    make: Callable[[], CaptumLime], explainer: Explainer, x: torch.Tensor, target: torch.Tensor, seeds: list[int]
) -> torch.Tensor:
    """Captum with its own image transform, one image at a time from the same seeds: the per-channel
    maps of captum's input-shaped output."""
    p = explainer.params
    seg, baseline = segment(x, p), make_baseline(x, p, seeds)
    out = []
    for i in range(len(x)):
        kwargs = {"baselines": baseline[i : i + 1], "target": target[i : i + 1], "feature_mask": seg[i][None, None]}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stable_hash(seeds[i], explainer.salt))
            attr = make().attribute(
                x[i : i + 1], n_samples=p.n_samples, perturbations_per_eval=p.forward_batch, **kwargs
            )
        out.append(attr)
    return torch.cat(out).expand_as(x)


def test_kernel_shap_equals_captum_with_the_same_seed(cnn: LoadedModel) -> None:
    x, target, seeds = _inputs(2)
    explainer = KernelShap(KernelShap.Params(n_samples=80, spread="copy", baseline="mean", forward_batch=32))
    ours = explainer.explain(cnn, x, target, seeds)

    def float64_surrogate() -> CaptumKernelShap:
        kernel_shap = CaptumKernelShap(cnn.module)
        kernel_shap.interpretable_model = WeightedLeastSquares(0.0)
        return kernel_shap

    same_solver = _captum_per_image(float64_surrogate, explainer, x, target, seeds)
    torch.testing.assert_close(ours, same_solver.mean(1, keepdim=True), rtol=1e-5, atol=1e-7)
    stock = _captum_per_image(lambda: CaptumKernelShap(cnn.module), explainer, x, target, seeds)  # sklearn, float32
    torch.testing.assert_close(ours, stock.mean(1, keepdim=True), rtol=0, atol=5e-3 * stock.abs().max().item())


def test_lime_equals_captum_with_the_same_seed(cnn: LoadedModel) -> None:
    x, target, seeds = _inputs(2)
    explainer = Lime(Lime.Params(n_samples=80, spread="copy", reduce="sum", forward_batch=32, kernel_width=0.5))
    ours = explainer.explain(cnn, x, target, seeds)
    similarity = lime_similarity(0.5)
    stock = _captum_per_image(
        lambda: CaptumLime(cnn.module, interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=similarity),
        explainer,
        x,
        target,
        seeds,
    )
    torch.testing.assert_close(ours, stock.sum(1, keepdim=True), rtol=1e-4, atol=1e-4 * stock.abs().max().item())


@pytest.mark.parametrize("alpha", [0.0, 1.0, 7.5])
def test_weighted_least_squares_equals_sklearn(alpha: float) -> None:
    from sklearn.linear_model import LinearRegression, Ridge

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(300, 12, generator=g) < 0.5).double()
    x[:, 3] = 1.0  # a column without variance: the minimum-norm solution gives it 0, as sklearn does
    y, w = torch.randn(300, generator=g, dtype=torch.float64), torch.rand(300, generator=g, dtype=torch.float64)
    w[:2] = 1e6  # KernelSHAP's weight of the empty and the full coalition
    surrogate = WeightedLeastSquares(alpha)
    surrogate.fit(DataLoader(TensorDataset(x, y, w), batch_size=300))
    reference = (Ridge(alpha=alpha) if alpha else LinearRegression()).fit(x.numpy(), y.numpy(), sample_weight=w.numpy())
    np.testing.assert_allclose(surrogate.representation()[0].numpy(), reference.coef_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(surrogate(x[:5]).numpy(), reference.predict(x[:5].numpy()), rtol=1e-5, atol=1e-5)
    chunked = WeightedLeastSquares(alpha)
    chunked.fit(DataLoader(TensorDataset(x, y, w), batch_size=64))  # any loader: the same fit
    torch.testing.assert_close(chunked.representation(), surrogate.representation())


def test_lime_kernel_is_the_lime_packages() -> None:
    """lime_image weighs a sample by sqrt(exp(-d^2 / w^2)), d the cosine distance of its on/off
    pattern to the all-on pattern (sklearn's pairwise_distances)."""
    from sklearn.metrics import pairwise_distances

    patterns = (torch.rand(200, 37, generator=torch.Generator().manual_seed(0)) < torch.rand(200, 1)).long()
    patterns[0], patterns[1] = 0, 1
    distance = pairwise_distances(patterns.numpy(), np.ones((1, 37)), metric="cosine")[:, 0]
    for width in (0.25, 1.0):
        expected = np.sqrt(np.exp(-(distance**2) / width**2))
        ours = [lime_similarity(width)(None, None, p[None]) for p in patterns]
        np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-9)


def test_surrogates_keep_the_callers_random_state(cnn: LoadedModel) -> None:
    x, target, seeds = _inputs(2)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    Lime(Lime.Params(n_samples=20)).explain(cnn, x, target, seeds)
    assert torch.equal(torch.get_rng_state(), state)


def test_kernel_shap_needs_two_superpixels() -> None:
    model, _w, x, target = _linear_setup(size=2)
    with pytest.raises(RuntimeError, match="superpixel"):
        KernelShap(KernelShap.Params(segmentation="grid", grid_size=1)).explain(model, x, target, [0, 1])


# --- every method: batches, seeds, passes -----------------------------------------------------------------

FAMILY = {
    "occlusion": Occlusion(Occlusion.Params(window=4, stride=4, baseline="noise")),
    "lime": Lime(Lime.Params(n_samples=40, n_segments=12, forward_batch=16)),
    "lime_grid": Lime(Lime.Params(n_samples=40, segmentation="grid", grid_size=3, spread="copy")),
    "kernel_shap": KernelShap(KernelShap.Params(n_samples=40, n_segments=12)),
}


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_batches_seeds_and_passes(cnn: LoadedModel, name: str) -> None:
    explainer = FAMILY[name]
    x, target, seeds = _inputs(8)
    with PassCounter(cnn.module) as counted:
        whole = explainer.explain(cnn, x, target, seeds)
    assert whole.shape == (8, 1, SIZE, SIZE) and torch.isfinite(whole).all() and whole.abs().sum() > 0
    halves = torch.cat([explainer.explain(cnn, x[i : i + 4], target[i : i + 4], seeds[i : i + 4]) for i in (0, 4)])
    torch.testing.assert_close(whole, halves, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(explainer.explain(cnn, x, target, seeds), whole, rtol=0, atol=0)
    other = explainer.explain(cnn, x, target, [s + 1000 for s in seeds])
    assert not torch.allclose(other, whole)  # LIME, KernelSHAP: other draws; occlusion: another noise baseline
    if name != "occlusion":
        assert counted.forward_images / 8 == explainer.passes(tuple(x.shape[1:])).forward


def test_auto_forward_batch_is_bounded_by_image_size() -> None:
    """``forward_batch: auto`` keeps about 256k input values per forward on a CPU, at least 16 images (fewer
    for large images: at most 4M values) and at most 256."""
    from bench.explainers.base import forward_batch_size

    assert forward_batch_size("auto", torch.zeros(2, 3, 224, 224)) == 16
    assert forward_batch_size("auto", torch.zeros(2, 3, 64, 64)) == 2**18 // (3 * 64 * 64) == 21
    assert forward_batch_size("auto", torch.zeros(2, 3, 32, 32)) == 85
    assert forward_batch_size("auto", torch.zeros(2, 1, 8, 8)) == 256
    assert forward_batch_size("auto", torch.zeros(2, 3, 512, 512)) == 5
    assert forward_batch_size("auto", torch.zeros(1, 3, 1024, 1024)) == 1
    assert forward_batch_size(5, torch.zeros(2, 3, 224, 224)) == 5
    assert Occlusion.Params().forward_batch == "auto"
    with pytest.raises(ValueError):
        Occlusion.Params(forward_batch=0)


def test_occlusion_auto_forward_batch_equals_explicit(cnn: LoadedModel) -> None:
    x, target, seeds = _inputs(4)
    params = {"window": 5, "stride": 3, "baseline": "blur", "reduce": "sum"}
    auto = Occlusion(Occlusion.Params(**params)).explain(cnn, x, target, seeds)
    explicit = Occlusion(Occlusion.Params(forward_batch=3, **params)).explain(cnn, x, target, seeds)
    torch.testing.assert_close(auto, explicit, rtol=1e-5, atol=1e-6)
