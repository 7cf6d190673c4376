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
numbers do not depend on the batch. The computation is ``bench.functional.imputation.road``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from bench.explainers.base import Explainer
from bench.functional.imputation import PERCENTAGES, road
from bench.metrics.base import Metric, MetricInput, Scores, naming_samples
from bench.metrics.removal import OutputFields, check_attribution_shape
from bench.types import Direction, ImageShape, Passes


class ROADParams(OutputFields):
    percentages: tuple[float, ...] = Field(
        PERCENTAGES,
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

    family = "faithfulness"
    curve_axes: ClassVar[dict[str, tuple[str, str]]] = {
        "morf": ("percentage of the pixels imputed (most relevant first)", "change of the target score"),
        "lerf": ("percentage of the pixels imputed (least relevant first)", "change of the target score"),
    }
    reference = "pytorch_grad_cam.ROADCombined"
    unranked: ClassVar[frozenset[str]] = frozenset({"morf", "lerf"})  # alternative summaries of the main value

    Params = ROADParams
    outputs: ClassVar[dict[str, Direction]] = {
        "": Direction.HIGHER,
        "morf": Direction.LOWER,
        "lerf": Direction.HIGHER,
    }

    def curve_x(self, curve: str) -> tuple[float, ...]:
        return tuple(self.params.percentages)

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        """The untouched image and one imputed image per percentage and order (MoRF, LeRF)."""
        return Passes(2 * len(self.params.percentages) + 1, 0)

    def score(self, inp: MetricInput) -> Scores:
        check_attribution_shape(inp)
        p = self.params
        with naming_samples(inp.batch.ids):
            return road(
                inp.model,
                inp.batch.x,
                inp.attributions,
                inp.target,
                inp.seeds,
                percentages=p.percentages,
                noise_std=p.noise_std,
                output=p.output,
                forward_batch=p.forward_batch,
            )
