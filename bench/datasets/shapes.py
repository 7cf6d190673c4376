"""Deterministic renderer of the embedded synthetic benchmark ("shapes").

Each image shows exactly one object, a filled shape whose *class is its outline*
(disk, square, triangle, cross, star), at a random position, size, rotation and
colour, on a cluttered background of smooth colour noise, thin line segments and
dots. Because only the outline carries the class, a model that classifies well must
look at the object, and the object's pixel mask (rendered analytically, no
anti-aliasing) is an exact ground truth for localisation metrics.

Every image is a pure function of ``(seed, split, index)`` through NumPy's
``SeedSequence``/``PCG64`` (stream-stable across NumPy releases and machines), so
any subset can be rendered without rendering the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES: tuple[str, ...] = ("disk", "square", "triangle", "cross", "star")
SPLIT_CODES: dict[str, int] = {"train": 1, "test": 2}


@dataclass(frozen=True)
class ShapeStyle:
    """Ranges that control how hard the images are; part of the dataset identity."""

    size: int = 64
    min_radius: float = 0.16  # shape circumradius as a fraction of the image side
    max_radius: float = 0.26
    lines: int = 6  # clutter line segments per image
    dots: int = 12  # clutter dots per image
    noise: float = 0.04  # per-pixel Gaussian noise std


def _polygon_mask(px: np.ndarray, py: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test of pixel centres against vertices (vx, vy)."""
    inside = np.zeros(px.shape, dtype=bool)
    n = len(vx)
    for i in range(n):
        x0, y0, x1, y1 = vx[i], vy[i], vx[(i + 1) % n], vy[(i + 1) % n]
        if y0 == y1:
            continue
        crosses = (y0 > py) != (y1 > py)
        x_at = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (px < x_at)
    return inside


def _outline(cls: str, radius: float) -> np.ndarray:
    """Unrotated polygon vertices (2, K) of a class centred on the origin."""
    if cls == "square":
        a = np.deg2rad(np.array([45, 135, 225, 315]))
        return radius * np.stack([np.cos(a), np.sin(a)])
    if cls == "triangle":
        a = np.deg2rad(np.array([90, 210, 330]))
        return radius * np.stack([np.cos(a), np.sin(a)])
    if cls == "star":
        a = np.deg2rad(90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
        return np.stack([radii * np.cos(a), radii * np.sin(a)])
    if cls == "cross":
        r, w = radius, radius * 0.34
        xs = [w, w, r, r, w, w, -w, -w, -r, -r, -w, -w]
        ys = [r, w, w, -w, -w, -r, -r, -w, -w, w, w, r]
        return np.array([xs, ys], dtype=float)
    raise ValueError(f"no polygon outline for class {cls!r}")


def shape_mask(cls: str, cx: float, cy: float, radius: float, angle: float, size: int) -> np.ndarray:
    """Exact binary mask (size, size) of one shape; pixel (i, j) has centre (j+.5, i+.5)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(float) + 0.5
    if cls == "disk":
        disk: np.ndarray = (xs - cx) ** 2 + (ys - cy) ** 2 <= (radius * 0.85) ** 2
        return disk
    verts = _outline(cls, radius)
    c, s = np.cos(angle), np.sin(angle)
    vx = cx + c * verts[0] - s * verts[1]
    vy = cy + s * verts[0] + c * verts[1]
    return _polygon_mask(xs, ys, vx, vy)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth colour field: a 4x4 random grid bilinearly upsampled, (3, size, size)."""
    coarse = rng.uniform(0.1, 0.9, size=(3, 4, 4))
    t = (np.arange(size) + 0.5) / size * 3.0  # positions on the 4-point grid
    i0 = np.clip(np.floor(t).astype(int), 0, 2)
    f = t - i0
    rows = coarse[:, i0, :] * (1 - f)[None, :, None] + coarse[:, i0 + 1, :] * f[None, :, None]
    field: np.ndarray = rows[:, :, i0] * (1 - f)[None, None, :] + rows[:, :, i0 + 1] * f[None, None, :]
    return field


def _draw_clutter(rng: np.random.Generator, img: np.ndarray, style: ShapeStyle) -> None:
    """Thin random line segments and small dots: texture without class evidence."""
    size = style.size
    for _ in range(style.lines):
        x0, y0 = rng.uniform(0, size, 2)
        length = rng.uniform(0.15, 0.45) * size
        theta = rng.uniform(0, np.pi)
        t = np.linspace(0, 1, int(length * 2))
        xs = np.clip((x0 + t * length * np.cos(theta)).astype(int), 0, size - 1)
        ys = np.clip((y0 + t * length * np.sin(theta)).astype(int), 0, size - 1)
        img[:, ys, xs] = rng.uniform(0, 1, (3, 1))
    for _ in range(style.dots):
        x, y = rng.integers(0, size - 1, 2)
        img[:, y : y + 2, x : x + 2] = rng.uniform(0, 1, (3, 1, 1))


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour at least 0.45 (Euclidean, RGB in [0,1]) from the local background."""
    colour = rng.uniform(0, 1, 3)
    for _ in range(32):
        if np.linalg.norm(colour - under) >= 0.45:
            break
        colour = rng.uniform(0, 1, 3)
    else:  # fall back to the complementary colour, always far enough from mid-grey
        colour = np.where(under > 0.5, 0.0, 1.0)
    return colour


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_CODES[split], index])


def label_of(seed: int, split: str, index: int) -> int:
    """The class of image ``index`` without rendering it (the image's first random draw)."""
    return int(_rng(seed, split, index).integers(len(CLASSES)))


def render(seed: int, split: str, index: int, style: ShapeStyle = ShapeStyle()) -> tuple[np.ndarray, np.ndarray, int]:
    """Render image ``index`` of ``split``: (image (3,S,S) float32 in [0,1], mask (S,S) uint8, label)."""
    rng = _rng(seed, split, index)
    size = style.size
    label = int(rng.integers(len(CLASSES)))
    img = _background(rng, size)
    _draw_clutter(rng, img, style)
    radius = rng.uniform(style.min_radius, style.max_radius) * size
    margin = radius + 1
    cx, cy = rng.uniform(margin, size - margin, 2)
    angle = rng.uniform(-np.pi / 9, np.pi / 9)
    mask = shape_mask(CLASSES[label], cx, cy, radius, angle, size)
    under = img[:, mask].mean(axis=1)
    colour = _contrasting_colour(rng, under)
    shade = colour[:, None] + rng.normal(0, 0.03, (3, int(mask.sum())))
    img[:, mask] = shade
    img += rng.normal(0, style.noise, img.shape)
    return np.clip(img, 0, 1).astype(np.float32), mask.astype(np.uint8), label


def render_many(
    seed: int, split: str, indices: list[int] | np.ndarray, style: ShapeStyle = ShapeStyle()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render several images: (N,3,S,S) float32, (N,S,S) uint8 masks, (N,) int64 labels.

    Written into preallocated arrays: a list of the images and its stacked copy held them twice."""
    n, size = len(indices), style.size
    images = np.empty((n, 3, size, size), np.float32)
    masks = np.empty((n, size, size), np.uint8)
    labels = np.empty(n, np.int64)
    for row, i in enumerate(indices):
        images[row], masks[row], labels[row] = render(seed, split, int(i), style)
    return images, masks, labels
