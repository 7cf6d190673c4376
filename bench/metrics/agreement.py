"""`agreement`: how similar the cell's attributions are to another explainer's on the same images.

It answers "do these methods tell the same story?" (for instance, how much
Grad-CAM, Grad-CAM++ and Score-CAM maps differ from each other): add one
`agreement` entry per reference method and every cell reports its similarity
to each. The reference explains the same images for the same targets and seeds;
methods that need a background set (SHAP-style) cannot serve as references.
Agreement is descriptive: it has no better direction, so leaderboards show it
but leave it out of the mean rank. The similarity is ``bench.functional.comparison``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator

from bench.explainers.base import Explainer, ExplainerContext
from bench.functional.comparison import KINDS, agreement
from bench.metrics.base import Metric, MetricInput, Scores
from bench.metrics.similarity import MapFields, SimilarityKind
from bench.types import Direction, ImageShape, Passes


class AgreementParams(MapFields):
    reference: str = Field(description="registered name of the explainer to compare with (e.g. gradcam)")
    reference_params: dict[str, Any] = Field(default_factory=dict, description="that explainer's params")
    similarity: SimilarityKind | str = Field("spearman", description="spearman | pearson | ssim | hog | topk")
    k_percent: float = Field(10.0, gt=0, le=100, description="topk: the share of pixels compared")

    @model_validator(mode="after")
    def _known(self) -> AgreementParams:
        from bench.registry import EXPLAINERS, load_builtin_components

        if self.similarity not in KINDS:
            raise ValueError("similarity must be spearman, pearson, ssim, hog or topk")
        load_builtin_components()
        cls = EXPLAINERS.get(self.reference, field="reference")
        cls.Params.model_validate(self.reference_params)
        return self


def _no_background(n: int) -> torch.Tensor:
    raise ValueError("agreement references cannot use a background set (choose a method that needs none)")


class Agreement(Metric):
    """Similarity (Spearman by default) of the attributions to another explainer's on the same images."""

    family = "agreement"

    Params = AgreementParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.HIGHER}
    ranked: ClassVar[bool] = False

    def __init__(self, params: AgreementParams | None = None):
        super().__init__(params)
        from bench.registry import EXPLAINERS

        cls = EXPLAINERS.get(self.params.reference)
        # not ``self.reference``: that is the card's "reference implementation" (a string)
        self.other: Explainer = cls(cls.Params.model_validate(self.params.reference_params))

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        """The reference explainer's passes: it explains every image once more."""
        return self.other.passes(image_shape)

    def score(self, inp: MetricInput) -> Scores:
        p = self.params
        model, batch = inp.model, inp.batch
        reason = self.other.supports(model)
        if reason is not None:
            n = len(batch)
            return Scores(values={"": torch.full((n,), float("nan"))}, reasons=[f"reference: {reason}"] * n)
        self.other.prepare(ExplainerContext(model=model, device=batch.x.device, seed=0, background=_no_background))
        with torch.enable_grad():
            other = self.other.explain(model, batch.x, inp.target, list(inp.seeds))
        return agreement(
            inp.attributions,
            other,
            similarity=p.similarity,
            k_percent=p.k_percent,
            abs=p.abs,
            normalise=p.normalise,
        )
