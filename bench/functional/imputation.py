"""ROAD (Rong et al. 2022) as a function: remove pixels and impute them so that the removal leaks no shape.

Every removed pixel is filled with the weighted mean of its eight neighbours (noisy linear imputation: one
sparse linear system per image and removal, solved for all channels at once on the CPU with
``scipy.sparse``, plus Gaussian noise drawn per sample from its seed), most relevant first (MoRF) and least
relevant first (LeRF), at each of the ``percentages``. The definitions and the relation to
pytorch-grad-cam and Quantus are in ``bench.metrics.road.ROAD``'s docstring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import spsolve

from bench.functional.faithfulness import Model
from bench.metrics.base import Scores, nan_reasons
from bench.metrics.removal import OutputKind, capped_batch, check_maps, chunked_scores
from bench.perturb import pixel_ranks
from bench.seeding import generator

PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)

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


def road(
    model: Model,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    seeds: Sequence[int],
    *,
    percentages: Sequence[float] = PERCENTAGES,
    noise_std: float = 0.01,
    output: OutputKind = "probability",
    forward_batch: int = 64,
) -> Scores:
    """ROAD: per percentage q, the change f(x_q) - f(x) of the target output when the top (MoRF) or bottom
    (LeRF) ``removal_count`` pixels are imputed (curves ``morf`` and ``lerf``); values ``morf`` and ``lerf``
    are their means over the percentages, the main value (LeRF - MoRF) / 2 (higher is better). MoRF and LeRF
    share the noise of a percentage, so a constant map scores exactly 0.

    >>> import torch
    >>> from bench import functional as F
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(9, 2, bias=False))
    >>> _ = model[1].weight.data.copy_(torch.stack([torch.ones(9), torch.zeros(9)]))  # logit 0: the pixel sum
    >>> x = torch.zeros(1, 1, 3, 3)
    >>> x[0, 0, 1, 1] = 9.0  # one bright pixel, the only one the attribution marks
    >>> scores = F.road(model, x, x, torch.tensor([0]), [0], percentages=(50,), noise_std=0.0, output="logit")
    >>> scores.values["morf"], scores.values["lerf"]  # MoRF imputes it from the dark ones, LeRF dark ones from it
    (tensor([-9.]), tensor([28.3636]))
    >>> scores.value
    tensor([18.6818])
    """
    check_maps(x, attributions)
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    if h * w < 2:
        raise ValueError("ROAD needs images of at least two pixels")
    k = len(percentages)
    build = _imputed_rows(x, attributions, target, seeds, percentages, noise_std)
    batch = capped_batch(forward_batch, x)
    scores = chunked_scores(model, 2 * n * k, build, output=output, forward_batch=batch, device=x.device)
    original = chunked_scores(
        model, n, lambda rows: (x[rows], target[rows]), output=output, forward_batch=batch, device=x.device
    )
    changes = scores.view(2, n, k) - original[None, :, None]
    morf, lerf = changes[0].mean(1), changes[1].mean(1)
    combined = (lerf - morf) / 2
    return Scores(
        values={"": combined, "morf": morf, "lerf": lerf},
        curves={"morf": changes[0], "lerf": changes[1]},
        reasons=nan_reasons(combined),
    )


def _imputed_rows(
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    seeds: Sequence[int],
    percentages: Sequence[float],
    noise_std: float,
) -> Callable[[slice], tuple[torch.Tensor, torch.Tensor]]:
    """``build(rows) -> (images, targets)`` for ``chunked_scores``: the 2 N K rows (order, image, percentage),
    MoRF then LeRF, each an image with the ranked pixels of that percentage imputed."""
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    k = len(percentages)
    ranks = torch.stack([pixel_ranks(attributions), pixel_ranks(-attributions)])  # (2, N, P): MoRF, LeRF
    counts = torch.tensor([removal_count(h * w, q) for q in percentages], device=x.device)
    order_of = torch.arange(2 * n * k, device=x.device) // (n * k)
    image_of = torch.arange(2 * n * k, device=x.device) // k % n
    step_of = torch.arange(2 * n * k, device=x.device) % k

    def build(rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        o, i, s = order_of[rows], image_of[rows], step_of[rows]
        removed = (ranks[o, i] < counts[s, None]).view(-1, h, w)
        # MoRF and LeRF share the noise; the salt spells the percentage as given ("road/10" for the default,
        # "road/10.0" for a float): kept so that stored results stay reproducible
        salts = [f"road/{percentages[b]}" for b in s.tolist()]
        row_seeds = [seeds[j] for j in i.tolist()]
        return imputed_images(x[i], removed, noise_std, row_seeds, salts), target[i]

    return build
