"""The embedded shapes dataset and deterministic stratified sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.datasets import shapes
from bench.datasets.base import stratified_sample
from bench.datasets.synthetic import Synthetic, SyntheticParams
from bench.types import SampleRef


def test_images_are_a_pure_function_of_seed_split_index() -> None:
    a, ma, la = shapes.render(3, "test", 17)
    b, mb, lb = shapes.render(3, "test", 17)
    c, _, _ = shapes.render(4, "test", 17)
    d, _, _ = shapes.render(3, "train", 17)
    assert np.array_equal(a, b) and np.array_equal(ma, mb) and la == lb
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1


def test_label_without_rendering_matches_rendered_label() -> None:
    for i in range(50):
        assert shapes.label_of(0, "test", i) == shapes.render(0, "test", i)[2]


def test_known_values_pin_the_random_stream() -> None:
    """The same seed must give the same images on every machine and NumPy release."""
    assert [shapes.label_of(0, "test", i) for i in range(20)] == [
        4,
        4,
        0,
        1,
        2,
        2,
        2,
        4,
        4,
        2,
        0,
        3,
        3,
        3,
        0,
        3,
        1,
        0,
        3,
        1,
    ]
    img, mask, _ = shapes.render(0, "test", 0)
    assert int(mask.sum()) == 163
    np.testing.assert_allclose(img[:, 10, 10], [0.4193, 0.3812, 0.4071], atol=1e-4)
    assert abs(float(img.sum()) - 4892.745) < 0.01


def test_masks_are_exact_shapes() -> None:
    disk = shapes.shape_mask("disk", 32, 32, 10 / 0.85, 0.0, 64)
    assert abs(disk.sum() - np.pi * 10**2) < 0.03 * np.pi * 10**2
    square = shapes.shape_mask("square", 32.0, 32.0, 10 * np.sqrt(2), 0.0, 64)
    assert square.sum() == 400  # a 20x20 axis-aligned square on pixel centres
    ys, xs = np.nonzero(square)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (22, 41, 22, 41)
    tri = shapes.shape_mask("triangle", 32, 32, 12, 0.0, 64)
    side = 12 * np.sqrt(3)
    assert abs(tri.sum() - np.sqrt(3) / 4 * side**2) < 0.06 * np.sqrt(3) / 4 * side**2


def test_object_is_where_the_mask_is() -> None:
    """The object's colour differs from the background: mask pixels carry the shape."""
    style = shapes.ShapeStyle(noise=0.0, lines=0, dots=0)
    img, mask, _ = shapes.render(0, "test", 5, style)
    inside = img[:, mask.astype(bool)]
    assert inside.std(axis=1).max() < 0.1  # solid colour with slight shading
    ring = np.zeros_like(mask, dtype=bool)
    ys, xs = np.nonzero(mask)
    ring[max(ys.min() - 2, 0) : ys.max() + 3, max(xs.min() - 2, 0) : xs.max() + 3] = True
    outside = img[:, ring & ~mask.astype(bool)].mean(axis=1)
    assert np.linalg.norm(inside.mean(axis=1) - outside) > 0.2


def test_dataset_load_shapes_and_resize() -> None:
    ds = Synthetic(SyntheticParams(size=48, train_size=20, test_size=20))
    refs = ds.index("test")[:6]
    batch = ds.load(refs, "test")
    assert batch.x.shape == (6, 3, 48, 48) and batch.mask.shape == (6, 1, 48, 48)
    assert batch.mask.dtype == torch.uint8 and set(batch.mask.unique().tolist()) <= {0, 1}
    assert batch.label.tolist() == [r.label for r in refs] and batch.ids == [r.id for r in refs]
    resized = ds.load(refs, "test", image_size=(32, 32))
    assert resized.x.shape == (6, 3, 32, 32) and resized.mask.shape == (6, 1, 32, 32)
    assert (
        ds.content_identity()
        == Synthetic(SyntheticParams(size=48, train_size=20, test_size=20, split="train")).content_identity()
    )


def test_stratified_sample_is_balanced_deterministic_and_prefix_stable() -> None:
    refs = [SampleRef(f"s{i:03d}", i % 3 if i < 90 else 0) for i in range(120)]
    a = stratified_sample(refs, 30, seed=1)
    assert a == stratified_sample(list(reversed(refs)), 30, seed=1)  # independent of input order
    counts = np.bincount([r.label for r in a])
    assert counts.tolist() == [10, 10, 10]
    assert stratified_sample(refs, 12, seed=1) == a[:12]  # growing n only adds samples
    assert stratified_sample(refs, 30, seed=2) != a
    assert len({r.id for r in a}) == 30
    assert stratified_sample(refs, None, seed=1) == sorted(refs, key=lambda r: r.id)
    # a rare class is exhausted, then the others fill up
    rare = [SampleRef(f"r{i}", 1) for i in range(2)] + [SampleRef(f"c{i}", 0) for i in range(20)]
    picked = stratified_sample(rare, 10, seed=0)
    assert sum(r.label == 1 for r in picked) == 2 and len(picked) == 10


@pytest.mark.parametrize("bad", [{"min_radius": 0.3, "max_radius": 0.2}, {"size": 8}, {"split": "val"}])
def test_params_are_validated(bad: dict) -> None:
    with pytest.raises(ValueError):
        SyntheticParams(**bad)
