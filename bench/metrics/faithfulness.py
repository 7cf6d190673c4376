"""Faithfulness: does removing what the explainer calls relevant change the model's output?

Every metric here replaces pixels (all channels of a pixel together) by a
baseline (``bench.perturb``) and reads the model's softmax probability (or
logit) of the target. All perturbed images of a batch go through the model in
chunks of ``forward_batch`` images (``chunked_scores``), built on the model's
device from a per-row pixel mask, so the cost is that of the forward passes.

- ``deletion`` / ``insertion`` (Petsiuk et al. 2018, RISE): pixels removed
  (inserted) most relevant first in ``steps`` equal fractions or
  ``pixels_per_step`` pixels at a time; the normalised AUC over the removed
  fraction.
- ``faithfulness_correlation`` (Bhatt et al. 2020): correlation between the
  attribution summed over random pixel subsets and the drop of the output when
  those subsets are removed.
- ``pixel_flipping`` (Bach et al. 2015) and ``region_perturbation`` (Samek et
  al. 2016): the curves and AUCs as Quantus 0.6 reports them.
- ``irof`` (Rieger & Hansen 2020): area over the curve of the relative class
  score as SLIC superpixels are removed in order of mean relevance.

Ties in a ranking break by pixel (or region) position, row-major, so a
constant attribution removes pixels in reading order: a defined, deterministic
result (the same for deletion, pixel flipping, region perturbation and IROF).
Scores that are undefined (a zero-variance correlation, a zero reference score,
a model that returns NaN) are NaN with a per-sample reason, never 0.

The computations are functions of ``bench.functional`` (``faithfulness`` and ``regions``, built on the
perturbation engine ``bench.metrics.removal``); the classes here turn their params into arguments.

Pixel counts differ from Quantus in one way: Quantus counts channel values
(``features``) where xbench counts pixels, so Quantus' ``features_in_step`` and
``subset_size`` are C times xbench's ``pixels_per_step`` and ``subset_size``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from bench.explainers.base import Explainer
from bench.functional.faithfulness import (
    CORRELATION_NO_ANSWER,
    deletion,
    faithfulness_correlation,
    insertion,
    pixel_flipping,
)
from bench.functional.regions import irof, region_perturbation
from bench.metrics.base import Metric, MetricInput, Scores, naming_samples
from bench.metrics.removal import OutputFields, OutputKind, StepFields, check_attribution_shape
from bench.perturb import BaselineFields, BaselineKind, make_baseline
from bench.types import Direction, ImageShape, Passes


def _pixels(image_shape: ImageShape) -> int:
    return image_shape[1] * image_shape[2]


# ----------------------------------------------------------------------------- deletion and insertion


class PerturbationCurveParams(StepFields, BaselineFields, OutputFields):
    pass


class InsertionParams(PerturbationCurveParams):
    baseline: BaselineKind = Field("blur", description="what not-yet-inserted pixels are (RISE: a blurred image)")


class _CurveMetric(Metric):
    family = "faithfulness"
    Params = PerturbationCurveParams
    insertion: bool = False

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        """The untouched image and one image per step."""
        return Passes(self.params.steps_for(_pixels(image_shape)) + 1, 0)

    def score(self, inp: MetricInput) -> Scores:
        check_attribution_shape(inp)
        p, x = self.params, inp.batch.x
        curve = insertion if self.insertion else deletion
        return curve(
            inp.model,
            x,
            inp.attributions,
            inp.target,
            steps=p.steps,
            pixels_per_step=p.pixels_per_step,
            baseline=make_baseline(x, p, inp.seeds),
            output=p.output,
            forward_batch=p.forward_batch,
        )


class Deletion(_CurveMetric):
    """Deletion AUC: target score as the most relevant pixels are removed first (lower is better)."""

    curve_axes: ClassVar[dict[str, tuple[str, str]]] = {"": ("fraction of the pixels removed", "target score")}

    outputs: ClassVar[dict[str, Direction]] = {"": Direction.LOWER}
    insertion = False


class Insertion(_CurveMetric):
    """Insertion AUC: target score as the most relevant pixels are restored first (higher is better)."""

    curve_axes: ClassVar[dict[str, tuple[str, str]]] = {"": ("fraction of the pixels inserted", "target score")}

    Params = InsertionParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}
    insertion = True


# ----------------------------------------------------------------------------- faithfulness correlation


class FaithfulnessCorrelationParams(BaselineFields, OutputFields):
    nr_runs: int = Field(100, ge=2, le=100_000, description="random pixel subsets per image")
    subset_size: int = Field(
        224, ge=1, description="pixels (all channels) per subset; Quantus' subset_size counts C values per pixel"
    )
    similarity: Literal["pearson", "spearman"] = Field(
        "pearson", description="correlation between subset attribution sums and output drops"
    )
    output: OutputKind = Field("logit", description="softmax probability or raw logit of the target (Quantus: logit)")


class FaithfulnessCorrelation(Metric):
    """Faithfulness correlation (Bhatt et al. 2020): attribution of random subsets vs the output drop they cause.

    For each of ``nr_runs`` random subsets of ``subset_size`` pixels (drawn from
    the sample's seed), the pixels are replaced by the baseline and the drop
    f(x) - f(x_S) of the target output is correlated (Pearson or Spearman) with
    the sum of the attribution over S. Equals Quantus' FaithfulnessCorrelation
    given the same subsets (Quantus draws channel values with numpy's global RNG
    and counts C per pixel). A constant attribution (all subset sums equal) gives no
    answer: 0 (no association), status "degenerate"; a model whose output does not
    move gives NaN with the reason.
    """

    family = "faithfulness"
    degenerate: ClassVar[dict[str, float]] = {"": CORRELATION_NO_ANSWER}  # a constant map: no association
    reference = "quantus.FaithfulnessCorrelation"

    Params = FaithfulnessCorrelationParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        """The untouched image and one image per subset."""
        return Passes(self.params.nr_runs + 1, 0)

    def score(self, inp: MetricInput) -> Scores:
        check_attribution_shape(inp)
        p, x = self.params, inp.batch.x
        with naming_samples(inp.batch.ids):
            return faithfulness_correlation(
                inp.model,
                x,
                inp.attributions,
                inp.target,
                inp.seeds,
                nr_runs=p.nr_runs,
                subset_size=p.subset_size,
                similarity=p.similarity,
                baseline=make_baseline(x, p, inp.seeds),
                output=p.output,
                forward_batch=p.forward_batch,
            )


# ----------------------------------------------------------------------------- pixel flipping


class PixelFlippingParams(StepFields, BaselineFields, OutputFields):
    pass


class PixelFlipping(Metric):
    """Pixel flipping (Bach et al. 2015): AUC of the target score as the most relevant pixels are flipped first.

    Pixels are replaced by the baseline most relevant first, ``pixels_per_step``
    (or a ``steps``-th of the image) at a time; the curve holds the score after
    each step (not the untouched image) and the value is its trapezoid with unit
    spacing, as Quantus' PixelFlipping with ``return_auc_per_sample`` (lower is
    better). Quantus' ``features_in_step`` is C x ``pixels_per_step``.
    """

    family = "faithfulness"
    curve_axes: ClassVar[dict[str, tuple[str, str]]] = {"": ("fraction of the pixels flipped", "target score")}
    reference = "quantus.PixelFlipping"

    Params = PixelFlippingParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.LOWER}

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        """One image per step (the curve leaves out the untouched image)."""
        return Passes(self.params.steps_for(_pixels(image_shape)), 0)

    def score(self, inp: MetricInput) -> Scores:
        check_attribution_shape(inp)
        p, x = self.params, inp.batch.x
        with naming_samples(inp.batch.ids):
            return pixel_flipping(
                inp.model,
                x,
                inp.attributions,
                inp.target,
                steps=p.steps,
                pixels_per_step=p.pixels_per_step,
                baseline=make_baseline(x, p, inp.seeds),
                output=p.output,
                forward_batch=p.forward_batch,
            )


# ----------------------------------------------------------------------------- region perturbation


class RegionPerturbationParams(BaselineFields, OutputFields):
    patch_size: int = Field(8, ge=1, le=1024, description="side of the square regions (a non-overlapping grid)")
    regions_evaluation: int = Field(100, ge=2, le=100_000, description="regions removed, one per step")
    order: Literal["morf", "lerf", "random"] = Field(
        "morf", description="most relevant first, least relevant first, or a random order (seeded per sample)"
    )


class RegionPerturbation(Metric):
    """Region perturbation (Samek et al. 2016): the drop of the target score as square regions are removed.

    The image is cut into ``patch_size`` regions (Quantus' padded grid), ordered
    by their summed attribution (``order``), and removed one per step for
    ``regions_evaluation`` steps; the curve holds f(x) - f(x_k), as Quantus'
    RegionPerturbation returns it. Outputs: "" its trapezoid with unit spacing
    (Quantus' AUC) and ``aopc`` = the mean drop over k = 0..L (Samek's AOPC).
    For ``morf`` both are higher-is-better (a faithful map makes the score drop
    early; Quantus labels the metric lower-is-better), for ``lerf`` lower;
    ``random`` is a control ordered like ``morf``.
    """

    family = "faithfulness"
    curve_axes: ClassVar[dict[str, tuple[str, str]]] = {
        "": ("fraction of the regions removed", "drop of the target score")
    }
    unranked: ClassVar[frozenset[str]] = frozenset({"aopc"})  # alternative summaries of the main value
    reference = "quantus.RegionPerturbation"

    Params = RegionPerturbationParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER, "aopc": Direction.HIGHER}

    def directions(self) -> dict[str, Direction]:
        direction = Direction.LOWER if self.params.order == "lerf" else Direction.HIGHER
        return {"": direction, "aopc": direction}

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        """The untouched image and one image per region removed (at most the regions of the padded grid)."""
        p, (_, h, w) = self.params, image_shape
        regions = -(-h // p.patch_size) * -(-w // p.patch_size)
        return Passes(min(p.regions_evaluation, regions) + 1, 0)

    def score(self, inp: MetricInput) -> Scores:
        check_attribution_shape(inp)
        p, x = self.params, inp.batch.x
        with naming_samples(inp.batch.ids):
            return region_perturbation(
                inp.model,
                x,
                inp.attributions,
                inp.target,
                inp.seeds,
                patch_size=p.patch_size,
                regions_evaluation=p.regions_evaluation,
                order=p.order,
                baseline=make_baseline(x, p, inp.seeds),
                output=p.output,
                forward_batch=p.forward_batch,
            )


# ----------------------------------------------------------------------------- IROF


class IROFParams(BaselineFields, OutputFields):
    baseline: BaselineKind = Field(
        "mean", description="what removed superpixels become (IROF: the image's per-channel mean)"
    )
    n_segments: int = Field(100, ge=2, le=100_000, description="SLIC: approximate number of superpixels (Quantus)")
    compactness: float = Field(10.0, gt=0, le=1000, description="SLIC: colour vs space trade-off (Quantus: 10)")


class IROF(Metric):
    """IROF (Rieger & Hansen 2020): area over the relative class score as superpixels are removed by mean relevance.

    Each image is segmented with SLIC (scikit-image, Quantus' call and defaults,
    on the CPU: part of the method's cost); superpixels are removed (replaced by
    the baseline) in order of decreasing mean attribution, one per step, and
    p_k = f(x_k) / f(x) is recorded. The value is K - trapz(p_1..p_K) with unit
    spacing, Quantus' IROF "AOC" (higher is better; it grows with the number of
    superpixels K, so compare explainers at the same ``n_segments``).

    Differences from Quantus 0.6, which fails on RGB images (its mask has one
    channel) unless given a mask-broadcasting ``perturb_func``: its ``mean``
    baseline is the mean of the whole current (already perturbed) batch over
    all channels, xbench's is each image's per-channel mean; with images of
    different superpixel counts in one batch Quantus' zero padding lowers the
    shorter curves' AOC by p_K / 2, xbench scores each image on its own; SLIC
    results with a single segment are re-segmented without the connectivity
    step (``bench.explainers.superpixels``) where Quantus stops. The curve is
    stored padded with NaN to the batch's largest K. A zero reference score
    f(x) or fewer than two superpixels give NaN with the reason.
    """

    family = "faithfulness"
    curve_axes: ClassVar[dict[str, tuple[str, str]]] = {
        "": ("fraction of the superpixels removed", "target score / unperturbed")
    }
    reference = "quantus.IROF"

    Params = IROFParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        """The untouched image and one image per superpixel: SLIC finds about ``n_segments`` (the count
        depends on the image; at most one per pixel)."""
        return Passes(min(self.params.n_segments, _pixels(image_shape)) + 1, 0)

    def score(self, inp: MetricInput) -> Scores:
        check_attribution_shape(inp)
        p, x = self.params, inp.batch.x
        return irof(
            inp.model,
            x,
            inp.attributions,
            inp.target,
            n_segments=p.n_segments,
            compactness=p.compactness,
            baseline=make_baseline(x, p, inp.seeds),
            output=p.output,
            forward_batch=p.forward_batch,
        )
