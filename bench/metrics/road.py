"""ROAD (Rong et al. 2022): remove pixels and impute them so that the removal itself leaks no shape.

Removing pixels by replacing them with a constant draws the removed shape into
the image, and the model may react to that shape rather than to the missing
information. ROAD fills every removed pixel with the weighted mean of its eight
neighbours (noisy linear imputation: one sparse linear system per image and
removal, solved jointly for all channels, plus Gaussian noise), then reads the
target score. It does so most relevant first (MoRF: a faithful map makes the
score fall) and least relevant first (LeRF: the score should stay) at each of
``percentages`` of the pixels.

The imputation is solved per image on the CPU with ``scipy.sparse`` (it is the
method's own cost); the imputed images go through the model in batches of
``forward_batch`` on its device. Noise is drawn per sample from its seed, so the
numbers do not depend on the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field, field_validator
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import spsolve

from bench.metrics.base import Metric, MetricInput, Scores
from bench.metrics.faithfulness import (
    OutputFields,
    check_attribution_shape,
    chunked_scores,
    nan_reasons,
    output_scores,
)
from bench.perturb import pixel_ranks
from bench.seeding import generator
from bench.types import Direction, Passes

# (row offset, column offset, weight) of the eight neighbours: the weights of Rong et al.'s imputer
NEIGHBOURS = (
    (1, 1, 1 / 12),
    (0, 1, 1 / 6),
    (-1, 1, 1 / 12),
    (1, -1, 1 / 12),
    (0, -1, 1 / 6),
    (-1, -1, 1 / 12),
    (1, 0, 1 / 6),
    (-1, 0, 1 / 6),
)


class ROADParams(OutputFields):
    percentages: tuple[float, ...] = Field(
        (10, 20, 30, 40, 50, 60, 70, 80, 90),
        min_length=1,
        max_length=99,
        description="percentages of the pixels removed, each in (0, 100)",
    )
    noise_std: float = Field(0.01, ge=0, le=1, description="std of the Gaussian noise added to imputed pixels")
    forward_batch: int = Field(64, ge=1, le=65536, description="imputed images per forward pass (memory bound)")

    @field_validator("percentages")
    @classmethod
    def _open_interval(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < q < 100 for q in value):
            raise ValueError("every percentage must lie strictly between 0 and 100")
        return value


def removal_count(num_pixels: int, percentage: float) -> int:
    """Pixels removed at ``percentage``: those at or above the (100 - q)-th percentile (linear
    interpolation, numpy's default) of a map without ties, i.e. P - ceil((P - 1)(1 - q/100)).

    This is pytorch-grad-cam's count; it lies within one pixel of q% of P and keeps
    at least one pixel and removes at least one for 0 < q < 100.
    """
    position = (num_pixels - 1) * (100 - percentage) / 100
    return num_pixels - math.ceil(position - 1e-9)


def linear_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Fill the ``removed`` pixels (H, W) bool of ``image`` (C, H, W) with the solution of
    v_p = sum_q w_pq v_q / sum_q w_pq over p's in-image neighbours q (known or imputed): (C, H, W).

    The system is built vectorised as a sparse matrix (the same one pytorch-grad-cam's
    NoisyLinearImputer builds with a loop over a LIL matrix) and solved with SuperLU
    for all channels at once; float64 inside, the image's dtype out.
    """
    c, h, w = image.shape
    flat = image.reshape(c, -1)
    unknown = np.flatnonzero(removed)
    n = len(unknown)
    variable = np.full(h * w, -1, dtype=np.int64)
    variable[unknown] = np.arange(n)
    rows, cols = unknown // w, unknown % w
    rhs = np.zeros((n, c))
    diagonal = np.zeros(n)
    a_rows, a_cols, a_vals = [], [], []
    for dr, dc, weight in NEIGHBOURS:
        r, q = rows + dr, cols + dc
        inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)
        ids = np.flatnonzero(inside)
        neighbour = r[inside] * w + q[inside]
        diagonal[ids] -= weight
        known = ~removed.reshape(-1)[neighbour]
        rhs[ids[known]] -= weight * flat[:, neighbour[known]].T
        a_rows.append(ids[~known])
        a_cols.append(variable[neighbour[~known]])
        a_vals.append(np.full(int((~known).sum()), weight))
    a_rows.append(np.arange(n))
    a_cols.append(np.arange(n))
    a_vals.append(diagonal)
    system = csc_matrix((np.concatenate(a_vals), (np.concatenate(a_rows), np.concatenate(a_cols))), shape=(n, n))
    solution = spsolve(system, rhs).reshape(n, c)
    out = flat.copy()
    out[:, unknown] = solution.T.astype(image.dtype)
    return out.reshape(c, h, w)


def imputed_images(
    x: torch.Tensor,
    removed: torch.Tensor,
    noise_std: float,
    seeds: Sequence[int],
    salts: Sequence[str],
) -> torch.Tensor:
    """Noisy linear imputation of ``removed`` (B, H, W) bool in the images ``x`` (B, C, H, W), one
    image at a time on the CPU; noise N(0, noise_std^2) on imputed pixels, drawn from (seeds[b], salts[b])."""
    images = x.detach().to("cpu", torch.float32).numpy()
    masks = removed.cpu().numpy()
    out = []
    for image, mask, seed, salt in zip(images, masks, seeds, salts, strict=True):
        filled = torch.from_numpy(linear_imputation(image, mask))
        if noise_std > 0:
            noise = torch.randn(filled.shape, generator=generator(seed, salt))
            filled = torch.where(torch.from_numpy(mask), filled + noise_std * noise, filled)
        out.append(filled)
    return torch.stack(out).to(x.device)


class ROAD(Metric):
    """ROAD (Rong et al. 2022): score change as pixels are imputed, MoRF vs LeRF; main value (LeRF - MoRF) / 2.

    At each removal percentage q the pixels are ranked by attribution (ties by
    position) and the top (MoRF) or bottom (LeRF) ``removal_count`` pixels are
    imputed; MoRF and LeRF share the noise draw of a percentage, so a constant
    map (the same pixels in both orders) scores exactly 0. Per
    percentage the change f(x_q) - f(x) of the target's probability (or logit) is
    recorded (the curves ``morf`` and ``lerf``). Outputs: ``morf`` and ``lerf``
    are the mean changes over the percentages (pytorch-grad-cam's
    ROADMostRelevantFirstAverage / ROADLeastRelevantFirstAverage: lower is
    better for MoRF, higher for LeRF), "" is their difference halved, exactly
    pytorch-grad-cam's ROADCombined (higher is better).

    pytorch-grad-cam thresholds at a percentile, so on a map with ties it removes
    every tied pixel together (all of a constant map, which leaves nothing to
    impute from); xbench removes exactly the count that threshold gives on a map
    without ties. Quantus 0.6's ROAD reports MoRF accuracy per percentage over
    the whole batch instead of per-sample scores (and fails on RGB images with
    one-channel attributions).
    """

    Params = ROADParams
    outputs: ClassVar[dict[str, Direction]] = {
        "": Direction.HIGHER,
        "morf": Direction.LOWER,
        "lerf": Direction.HIGHER,
    }

    def passes(self) -> Passes:
        return Passes(2 * len(self.params.percentages) + 1, 0)

    def score(self, inp: MetricInput) -> Scores:
        check_attribution_shape(inp)
        p = self.params
        x, target, attr = inp.batch.x, inp.batch.target, inp.attributions
        n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        if h * w < 2:
            raise ValueError(f"ROAD needs images of at least two pixels (samples {', '.join(inp.batch.ids)})")
        k = len(p.percentages)
        ranks = torch.stack([pixel_ranks(attr), pixel_ranks(-attr)])  # (2, N, P): MoRF, LeRF
        counts = torch.tensor([removal_count(h * w, q) for q in p.percentages], device=x.device)
        # rows in (order, image, percentage) order
        order_of = torch.arange(2 * n * k, device=x.device) // (n * k)
        image_of = torch.arange(2 * n * k, device=x.device) // k % n
        step_of = torch.arange(2 * n * k, device=x.device) % k

        def build(rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
            o, i, s = order_of[rows], image_of[rows], step_of[rows]
            removed = (ranks[o, i] < counts[s, None]).view(-1, h, w)
            salts = [f"road/{p.percentages[b]}" for b in s.tolist()]  # MoRF and LeRF share the noise
            seeds = [inp.seeds[j] for j in i.tolist()]
            return imputed_images(x[i], removed, p.noise_std, seeds, salts), target[i]

        scores = chunked_scores(
            inp.model, 2 * n * k, build, output=p.output, forward_batch=p.forward_batch_on(x), device=x.device
        ).view(2, n, k)
        changes = scores - output_scores(inp.model, x, target, p)[None, :, None]
        morf, lerf = changes[0].mean(1), changes[1].mean(1)
        combined = (lerf - morf) / 2
        return Scores(
            values={"": combined, "morf": morf, "lerf": lerf},
            curves={"morf": changes[0], "lerf": changes[1]},
            reasons=nan_reasons(combined),
        )
