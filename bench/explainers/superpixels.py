"""Superpixels: the interpretable features of LIME and KernelSHAP on images.

A segmentation maps every pixel of an image to one segment id, 0..K-1 with no
gaps, the same for all channels. ``slic`` (Achanta et al. 2012, scikit-image)
follows colour edges and is computed per image on the CPU: it is part of the
method and its cost counts in the explainer's runtime. ``grid`` cuts the image
into ``grid_size`` x ``grid_size`` near-equal cells; it ignores the image and
is computed batched on the image's device.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from bench.component import Params


class SegmentationFields(Params):
    """Parameters of the superpixel segmentation; components whose params inherit this take them flat."""

    segmentation: Literal["slic", "grid"] = Field(
        "slic", description="superpixels: slic (colour-aware, scikit-image) or grid (square cells)"
    )
    n_segments: int = Field(50, ge=2, le=10_000, description="slic: approximate number of superpixels")
    compactness: float = Field(
        10.0, gt=0, le=1000, description="slic: colour vs space trade-off (higher: squarer segments)"
    )
    grid_size: int = Field(7, ge=1, le=256, description="grid: cells per side (grid_size^2 segments)")


def grid_segments(h: int, w: int, cells: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W) int64 ids of ``cells`` x ``cells`` near-equal cells in row-major order.

    Row r belongs to cell row floor(r * cells / H), so every cell is non-empty
    when cells <= H (fewer cells are used on images smaller than the grid).
    """
    gh, gw = min(cells, h), min(cells, w)
    rows = torch.arange(h, device=device) * gh // h
    cols = torch.arange(w, device=device) * gw // w
    return rows[:, None] * gw + cols[None, :]


def slic_segments(image: torch.Tensor, n_segments: int, compactness: float) -> torch.Tensor:
    """(H, W) int64 SLIC segment ids 0..K-1 (consecutive) of one (C, H, W) image in [0, 1], on the CPU.

    SLIC's connectivity step merges fragments smaller than half a segment into
    their neighbours; on images without structure (noise) that cascades into a
    single segment, which LIME and KernelSHAP cannot use. Such images are
    segmented again without the connectivity step (segments may then be split).
    """
    from skimage.segmentation import slic  # here: scikit-image (and scipy) take ~0.3 s to import

    array = image.detach().to("cpu", torch.float64).numpy()
    kwargs = {"n_segments": n_segments, "compactness": compactness, "channel_axis": 0, "start_label": 0}
    labels = slic(array, convert2lab=array.shape[0] == 3, **kwargs)
    if labels.max() < 1:
        labels = slic(array, convert2lab=array.shape[0] == 3, enforce_connectivity=False, **kwargs)
    _, consecutive = np.unique(labels, return_inverse=True)  # no gaps, whatever SLIC's post-processing left
    return torch.from_numpy(consecutive.reshape(labels.shape).astype(np.int64))


def segment(x: torch.Tensor, p: SegmentationFields) -> torch.Tensor:
    """Superpixel ids (N, H, W) int64 on ``x``'s device for the images ``x`` (N, C, H, W) in [0, 1]."""
    n, _c, h, w = x.shape
    if p.segmentation == "grid":
        return grid_segments(h, w, p.grid_size, x.device).expand(n, h, w).contiguous()
    if p.segmentation == "slic":
        return torch.stack([slic_segments(img, p.n_segments, p.compactness) for img in x]).to(x.device)
    raise ValueError(f"unknown segmentation {p.segmentation!r}")
