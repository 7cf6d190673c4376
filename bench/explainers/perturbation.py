"""Perturbation explainers backed by captum: Occlusion, LIME and KernelSHAP.

They only run the model forward. Occlusion slides a square patch of the
baseline over the image; all images of the batch and as many patch positions
as fit in ``forward_batch`` go through the model together. LIME and KernelSHAP
fit a weighted linear surrogate on random on/off patterns of superpixels
(``bench.explainers.superpixels``); captum does that one image at a time,
drawing with torch's global random generator, so each image runs inside
``torch.random.fork_rng`` seeded from that image's seed: the maps are
reproducible, batch invariant, and leave the caller's random state untouched.

captum draws and weighs the patterns; two of its parts are replaced by faster
equivalents that give the same numbers (checked against stock captum in the
tests): the perturbed images of a forward batch are rendered in one operation
(``PatternForward``) instead of one by one, and the surrogate is solved in
closed form in torch (``WeightedLeastSquares``) instead of through sklearn.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Literal, cast

import torch
from captum._utils.models.model import Model
from captum.attr import KernelShap as CaptumKernelShap
from captum.attr import Lime as CaptumLime
from captum.attr import Occlusion as CaptumOcclusion
from pydantic import Field
from torch.utils.data import DataLoader, TensorDataset

from bench.explainers.base import Explainer, ForwardBatch, ReduceFields, Reduction, forward_batch_size, reduce_channels
from bench.explainers.superpixels import SegmentationFields, segment
from bench.perturb import BaselineFields, make_baseline
from bench.seeding import stable_hash
from bench.types import ImageShape, LoadedModel, Passes


class OcclusionParams(ReduceFields, BaselineFields):
    window: int = Field(8, ge=1, le=4096, description="side of the square occluding patch, in pixels")
    stride: int = Field(4, ge=1, le=4096, description="step between patch positions, in pixels")
    forward_batch: ForwardBatch = Field(
        "auto", description="occluded images per forward pass, or auto (bounded by the image size and device)"
    )
    reduce: Reduction = Field(
        "mean", description="channel reduction (every channel holds the same score drop; mean keeps its units)"
    )


def windows_per_side(side: int, window: int, stride: int) -> int:
    """Patch positions along one side: captum adds a last position flush with the edge (at least one:
    a window larger than the image fails when explaining, not when estimating)."""
    return max(1, math.ceil((side - window) / stride) + 1)


class Occlusion(Explainer):
    """Occlusion (Zeiler & Fergus 2014, captum): score drop when a sliding patch is replaced by a baseline."""

    family = "perturbation"

    Params = OcclusionParams

    def passes(self, image_shape: ImageShape) -> Passes:
        """Every patch position, plus the image itself."""
        _, h, w = image_shape
        p = self.params
        return Passes(windows_per_side(h, p.window, p.stride) * windows_per_side(w, p.window, p.stride) + 1, 0)

    @torch.no_grad()
    def attribute(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        p = self.params
        n, c, h, w = x.shape
        if p.window > min(h, w):
            raise ValueError(f"occlusion window {p.window} is larger than the {h}x{w} images; lower params.window")
        attr = CaptumOcclusion(model.module).attribute(
            x,
            sliding_window_shapes=(c, p.window, p.window),
            strides=(c, p.stride, p.stride),
            baselines=make_baseline(x, p, seeds),
            target=target,
            perturbations_per_eval=max(1, forward_batch_size(p.forward_batch, x) // n),
        )
        return reduce_channels(attr, p.reduce)


class SurrogateFields(ReduceFields, BaselineFields, SegmentationFields):
    """What LIME and KernelSHAP share: superpixels, samples, baseline and how weights become pixels."""

    n_samples: int = Field(500, ge=2, le=100_000, description="random superpixel on/off patterns per image")
    forward_batch: ForwardBatch = Field(
        "auto", description="perturbed images per forward pass, or auto (bounded by the image size and device)"
    )
    spread: Literal["divide", "copy"] = Field(
        "divide",
        description="divide: a superpixel's weight is split evenly over its pixels (the map sums to the weights); "
        "copy: every pixel shows the weight (captum's input-shaped output)",
    )
    reduce: Reduction = Field(
        "mean", description="channel reduction (superpixels span all channels: every channel is the same)"
    )


class WeightedLeastSquares(Model):  # type: ignore[misc]  # captum ships no type information
    """The surrogate: weighted least squares with an intercept and an L2 penalty ``alpha`` on the slopes.

    What sklearn's Ridge (alpha > 0) and LinearRegression (alpha = 0) compute with sample
    weights: centre by the weighted means, scale rows by sqrt(weight), minimum-norm least
    squares (LAPACK gelsd) on the CPU in float64. It replaces captum's sklearn models, whose
    NumPy round trip and BLAS threads cost more than the fit on small problems.
    """

    def __init__(self, alpha: float = 0.0):
        self.alpha = alpha
        self.coef: torch.Tensor | None = None
        self.intercept: torch.Tensor | None = None

    def fit(self, train_data: DataLoader[tuple[torch.Tensor, ...]], **kwargs: Any) -> dict[str, float]:
        if isinstance(train_data.dataset, TensorDataset):  # captum's case: skip collating sample by sample
            columns = train_data.dataset.tensors
        else:
            columns = tuple(torch.cat(parts) for parts in zip(*train_data, strict=True))
        x, y, w = (column.to("cpu", torch.float64) for column in columns)
        x, y = x.flatten(1), y.flatten()
        w_sum = w.sum()
        x_mean, y_mean = (w[:, None] * x).sum(0) / w_sum, (w * y).sum() / w_sum
        root = w.sqrt()
        a, b = root[:, None] * (x - x_mean), root * (y - y_mean)
        if self.alpha > 0:  # ridge as least squares on rows appended for the penalty
            a = torch.cat([a, math.sqrt(self.alpha) * torch.eye(x.shape[1], dtype=a.dtype)])
            b = torch.cat([b, b.new_zeros(x.shape[1])])
        coef = torch.linalg.lstsq(a, b[:, None], driver="gelsd").solution[:, 0]
        self.coef, self.intercept = coef.float(), (y_mean - x_mean @ coef).float()
        return {}

    def representation(self) -> torch.Tensor:
        """The slopes (1, K): one weight per superpixel."""
        if self.coef is None:
            raise RuntimeError("the surrogate has not been fitted")
        return self.coef[None]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The surrogate's prediction for patterns (B, K)."""
        slopes = self.representation()  # RuntimeError before fit
        coef, intercept = cast(torch.Tensor, self.coef), cast(torch.Tensor, self.intercept)  # fit sets both
        return x.to(slopes) @ coef + intercept


class PatternForward:
    """captum's forward function on superpixel on/off patterns (B, K) of one image.

    captum samples patterns one at a time; building each perturbed image there would cost a
    few small tensor operations per sample. Here the images of a whole forward batch are made
    in one ``torch.where`` (pixels of switched-off superpixels take the baseline), exactly
    the images captum's default transform makes.
    """

    def __init__(self, module: torch.nn.Module, image: torch.Tensor, baseline: torch.Tensor, segments: torch.Tensor):
        self.module, self.image, self.baseline, self.segments = module, image, baseline, segments

    def __call__(self, patterns: torch.Tensor) -> torch.Tensor:
        keep = patterns.to(self.segments.device).bool()[:, self.segments][:, None]  # (B, 1, H, W)
        logits: torch.Tensor = self.module(torch.where(keep, self.image, self.baseline))
        return logits


def keep_pattern(pattern: torch.Tensor, _original: torch.Tensor, **_kwargs: Any) -> torch.Tensor:
    """The 'model input' captum collects per sample: the pattern itself (``PatternForward`` renders it)."""
    return pattern


@contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run with torch's global generators (CPU, and ``device`` if CUDA) seeded, restoring them afterwards."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def paint(weights: torch.Tensor, segments: torch.Tensor, spread: str) -> torch.Tensor:
    """Superpixel weights (K,) -> (H, W) map over the segment ids ``segments`` (H, W)."""
    weights = weights.to(device=segments.device, dtype=torch.float32)
    if spread == "divide":
        weights = weights / torch.bincount(segments.flatten(), minlength=len(weights)).clamp_(min=1)
    return weights[segments]


class SurrogateExplainer(Explainer):
    """An explainer that fits a captum surrogate (LIME-style) on superpixels, one seeded image at a time."""

    family = "perturbation"

    Params = SurrogateFields
    deterministic = False
    salt: ClassVar[str] = ""
    min_segments: ClassVar[int] = 1

    def passes(self, image_shape: ImageShape) -> Passes:
        return Passes(self.params.n_samples, 0)

    @abstractmethod
    def surrogate(self, forward: PatternForward) -> CaptumLime:
        """The captum attribution object (Lime, or its subclass KernelShap) on ``forward``."""

    @torch.no_grad()
    def attribute(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        p = self.params
        segments = segment(x, p)
        baseline = make_baseline(x, p, seeds)
        maps = []
        for i in range(len(x)):
            count = int(segments[i].max()) + 1
            if count < self.min_segments:
                raise RuntimeError(f"{self.name}: image {i} has {count} superpixel(s), {self.min_segments} needed")
            surrogate = self.surrogate(PatternForward(model.module, x[i : i + 1], baseline[i : i + 1], segments[i]))
            surrogate.from_interp_rep_transform = keep_pattern
            with seeded_global_rng(stable_hash(seeds[i], self.salt), x.device):
                weights = surrogate.attribute(
                    x[i : i + 1],
                    baselines=baseline[i : i + 1],
                    target=target[i : i + 1],
                    feature_mask=segments[i][None, None],
                    n_samples=p.n_samples,
                    perturbations_per_eval=min(forward_batch_size(p.forward_batch, x), p.n_samples),
                    return_input_shape=False,
                )
            maps.append(paint(weights.flatten(), segments[i], p.spread))
        per_channel = torch.stack(maps)[:, None].expand(-1, x.shape[1], -1, -1)
        return reduce_channels(per_channel, p.reduce)


class LimeParams(SurrogateFields):
    kernel_width: float = Field(
        0.25, gt=0, le=100, description="width of LIME's exponential kernel on cosine distance (the paper: 0.25)"
    )
    ridge_alpha: float = Field(
        1.0, ge=0, le=1e6, description="L2 penalty of the weighted ridge surrogate (the lime package: 1)"
    )


def lime_similarity(kernel_width: float) -> Callable[..., float]:
    """LIME's sample weight for captum: exp(-d^2 / (2 w^2)), d the cosine distance of the on/off
    pattern to the all-on pattern (as lime_image computes it: 1 - sqrt(on / features))."""

    def similarity(_original: Any, _perturbed: Any, pattern: torch.Tensor, **_kwargs: Any) -> float:
        distance = 1.0 - math.sqrt(float(pattern.sum()) / pattern.numel())
        return math.exp(-(distance**2) / (2 * kernel_width**2))

    return similarity


class Lime(SurrogateExplainer):
    """LIME (Ribeiro et al. 2016, captum): a kernel-weighted ridge surrogate on superpixels."""

    Params = LimeParams
    salt = "lime"

    def surrogate(self, forward: PatternForward) -> CaptumLime:
        return CaptumLime(
            forward,
            interpretable_model=WeightedLeastSquares(self.params.ridge_alpha),
            similarity_func=lime_similarity(self.params.kernel_width),
        )


class KernelShap(SurrogateExplainer):
    """KernelSHAP (Lundberg & Lee 2017, captum): Shapley values of superpixels by Shapley-kernel regression."""

    salt = "kernel-shap"
    min_segments = 2  # the Shapley kernel samples coalitions of 1..K-1 players

    def surrogate(self, forward: PatternForward) -> CaptumKernelShap:
        kernel_shap = CaptumKernelShap(forward)
        kernel_shap.interpretable_model = WeightedLeastSquares(0.0)  # captum's default: sklearn's LinearRegression
        return kernel_shap
