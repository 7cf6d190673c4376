"""RISE (Petsiuk, Das & Saenko 2018): saliency as the mask-weighted average of the
model's score on randomly masked copies of the image.

Each mask is a coarse binary grid (cells kept with probability ``p``), upsampled
bilinearly to ``(grid + 1) * cell`` pixels and cropped at a random offset of less
than one cell, so that mask edges fall anywhere, not only on the grid lines (the
paper's construction). The saliency of pixel u is

    S(u) = sum_i score(target | x * M_i) * M_i(u) / (n_masks * p)

Every random number about an image (its grids and shifts) is drawn from that
image's seed, so the map does not depend on the batch it comes in. Masks are
rendered chunk by chunk: at most ``forward_batch`` masked images (of any images
of the batch) exist at a time, however large ``n_masks`` is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from bench.explainers.base import Explainer, ForwardBatch, forward_batch_size
from bench.models.base import target_outputs
from bench.perturb import BaselineFields, make_baseline
from bench.seeding import per_sample_rand
from bench.types import ImageShape, LoadedModel, Passes

DEFAULT_GRID = 7  # the paper's 7x7 cells


class RISEParams(BaselineFields):
    n_masks: int = Field(
        2000,
        ge=1,
        le=100_000,
        description="random masks per image (the paper uses 4000; 2000 halves the cost, the maps barely change)",
    )
    grid: int | None = Field(
        DEFAULT_GRID, ge=1, le=256, description="mask cells per side (the paper: 7); leave unset to use cell_size"
    )
    cell_size: int | None = Field(
        None, ge=1, description="mask cell side in pixels, instead of grid (cells per side = ceil(size / cell_size))"
    )
    p: float = Field(0.5, gt=0, le=1, description="probability that a cell is kept (the paper: 0.5)")
    output: Literal["probability", "logit"] = Field(
        "probability", description="score of a masked image: softmax probability (the paper) or logit of the target"
    )
    forward_batch: ForwardBatch = Field(
        "auto", description="masked images per forward pass, or auto (bounded by the image size and device)"
    )

    @model_validator(mode="before")
    @classmethod
    def _grid_or_cell_size(cls, data: Any) -> Any:
        """``cell_size`` replaces the default grid; setting both is ambiguous."""
        if isinstance(data, dict) and data.get("cell_size") is not None:
            if data.get("grid") is not None:
                raise ValueError("set either grid (cells per side) or cell_size (pixels), not both")
            data = {**data, "grid": None}
        return data

    @model_validator(mode="after")
    def _one_of(self) -> RISEParams:
        if self.grid is None and self.cell_size is None:
            raise ValueError("set grid (cells per side) or cell_size (pixels)")
        return self


@dataclass(frozen=True)
class MaskGeometry:
    """Where the mask cells lie: ``grid`` cells of ``cell`` pixels, cropped to ``size``."""

    size: tuple[int, int]  # (H, W) of the images
    grid: tuple[int, int]  # cells per side (gh, gw)
    cell: tuple[int, int]  # cell size in pixels (ch, cw); the random shift is below it

    @classmethod
    def of(cls, size: tuple[int, int], grid: int | None, cell_size: int | None) -> MaskGeometry:
        """The paper's geometry: cells of ceil(size / grid) pixels, or grid = ceil(size / cell_size)."""
        if cell_size is not None:
            cells = (math.ceil(size[0] / cell_size), math.ceil(size[1] / cell_size))
            return cls(size=size, grid=cells, cell=(cell_size, cell_size))
        assert grid is not None
        return cls(size=size, grid=(grid, grid), cell=(math.ceil(size[0] / grid), math.ceil(size[1] / grid)))

    @property
    def upsampled(self) -> tuple[int, int]:
        """(gh + 1) * ch x (gw + 1) * cw: one cell larger than the grid, room for the shift."""
        return (self.grid[0] + 1) * self.cell[0], (self.grid[1] + 1) * self.cell[1]


def draw_masks(
    seeds: Sequence[int], n_masks: int, geom: MaskGeometry, p: float, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, from its seed: binary grids (N, n_masks, gh, gw) and shifts (N, n_masks, 2) int64.

    Small (no pixels yet): ``render_masks`` turns any subset of them into masks.
    """
    grids = (per_sample_rand(seeds, (n_masks, *geom.grid), "rise-grid", device=device) < p).float()
    u = per_sample_rand(seeds, (n_masks, 2), "rise-shift", device=device)
    cell = torch.tensor(geom.cell, device=device)
    shifts = torch.minimum((u * cell).long(), cell - 1)  # uniform integer offset in [0, cell)
    return grids, shifts


def render_masks(grids: torch.Tensor, shifts: torch.Tensor, geom: MaskGeometry) -> torch.Tensor:
    """Grids (B, gh, gw) and shifts (B, 2) -> masks (B, 1, H, W) in [0, 1].

    Bilinear upsampling (half-pixel centres) to ``geom.upsampled``, then each
    mask is cropped to H x W at its own offset, all in one gather.
    """
    up = F.interpolate(grids[:, None], size=geom.upsampled, mode="bilinear", align_corners=False)[:, 0]
    h, w = geom.size
    rows = shifts[:, 0, None] + torch.arange(h, device=grids.device)  # (B, H)
    cols = shifts[:, 1, None] + torch.arange(w, device=grids.device)  # (B, W)
    batch = torch.arange(len(grids), device=grids.device)[:, None, None]
    return up[batch, rows[:, :, None], cols[:, None, :]][:, None]


class RISE(Explainer):
    """RISE (Petsiuk et al. 2018): average of random coarse masks weighted by the masked image's score."""

    family = "perturbation"

    Params = RISEParams
    deterministic = False

    def passes(self, image_shape: ImageShape) -> Passes:
        return Passes(self.params.n_masks, 0)

    @torch.no_grad()
    def attribute(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        p = self.params
        n, m = x.shape[0], p.n_masks
        geom = MaskGeometry.of((x.shape[-2], x.shape[-1]), p.grid, p.cell_size)
        grids, shifts = draw_masks(seeds, m, geom, p.p, device=x.device)
        baseline = make_baseline(x, p, seeds)
        saliency = torch.zeros(n, 1, *geom.size, device=x.device, dtype=torch.float32)
        step = forward_batch_size(p.forward_batch, x)
        for start in range(0, n * m, step):
            stop = min(start + step, n * m)
            rows = torch.arange(start, stop, device=x.device)
            image, mask = rows // m, rows % m  # every (image, mask) pair once, in row-major order
            masks = render_masks(grids[image, mask], shifts[image, mask], geom)
            scores = model(baseline[image] + masks * (x[image] - baseline[image])).float()
            weights = target_outputs(scores, target[image], p.output)
            accumulate(saliency[start // m : (stop - 1) // m + 1], image - start // m, weights, masks)
        normalised: torch.Tensor = saliency / (m * p.p)
        return normalised


def accumulate(saliency: torch.Tensor, local: torch.Tensor, weights: torch.Tensor, masks: torch.Tensor) -> None:
    """saliency[local[b]] += weights[b] * masks[b] for a chunk's masks, in place.

    ``saliency`` (K, 1, H, W) holds the images the chunk touches, ``local`` (B,) their
    positions in it. One (K x B) @ (B x pixels) product: deterministic on every device,
    unlike index_add_ (atomic adds on CUDA).
    """
    scatter = torch.zeros(len(saliency), len(local), device=masks.device, dtype=masks.dtype)
    scatter[local, torch.arange(len(local), device=masks.device)] = weights
    saliency += (scatter @ masks.flatten(1)).view_as(saliency)
