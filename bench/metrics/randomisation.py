"""Randomisation sanity checks: an explanation that does not change when the model or the
explained class is randomised does not explain the model.

- ``model_randomisation`` (Adebayo et al. 2018; Quantus MPRT, formerly
  ModelParameterRandomisation): re-initialise the model's layers from the output down
  (``cascading``: each layer stays random, as Quantus' ``top_down`` order) or one at a
  time (``independent``), explain the batch with every randomised copy and compare with
  the original attribution. Curve: the similarity after each layer, top layer first;
  value: its mean over the layers where it is defined. Lower is better.
- ``random_logit`` (Sixt et al. 2020; Quantus RandomLogit): explain a random other
  class (drawn per sample from its seed) and compare. Lower is better.

Which layers, and how they are randomised, follows Quantus so that the numbers agree:
every module with a ``reset_parameters()`` method (convolutions, linear layers, batch
and layer norms; a batch norm is reset to the identity with fresh running statistics),
each re-initialised by its own ``reset_parameters()`` right after
``torch.manual_seed(seed + 1)`` (the same seed for every layer). Here the draw is made
on a CPU copy of the layer, with the global CPU generator forked (the caller's random
state is untouched) and then copied to the model's device, so the randomised model is
the same on every device. The cell's model is never modified: a deep copy is randomised.

Differences from Quantus: ``normalise`` divides each map by its own max |value| where
Quantus divides by the batch maximum; SSIM compares the 2-D maps (Wang et al.), where
Quantus' RandomLogit and MPRT apply skimage's SSIM to the flattened maps (a 1-D signal
with a 7-sample window); and Quantus' ``return_average_correlation`` also averages in
its "original" entry (a similarity of the original model with itself), which is left
out here.

The computations are ``bench.functional.randomisation``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from bench.explainers.base import Explainer
from bench.functional.randomisation import model_randomisation, random_logit
from bench.metrics.base import Metric, MetricInput, Scores, explanation_passes
from bench.metrics.similarity import MapFields, SimilarityKind
from bench.metrics.stability import reexplainer
from bench.types import Direction, ImageShape, Passes


class RandomisationFields(MapFields):
    similarity: SimilarityKind = Field("spearman", description="how maps are compared: spearman|pearson|ssim|hog")
    explain_batch: int = Field(64, ge=1, description="images per explainer call (memory bound)")


class ModelRandomisationParams(RandomisationFields):
    mode: Literal["cascading", "independent"] = Field(
        "cascading", description="cascading: randomise layers cumulatively from the top; independent: one at a time"
    )
    seed: int = Field(42, ge=0, description="layers are re-initialised under torch.manual_seed(seed + 1), as Quantus")
    max_layers: int | None = Field(None, ge=1, description="randomise only the top max_layers layers (default: all)")
    abs: bool = Field(True, description="compare absolute attributions (Quantus' and Adebayo et al.'s default)")
    normalise: bool = Field(True, description="divide each map by its maximum |value| (per sample)")


class ModelParameterRandomisation(Metric):
    """Model parameter randomisation test (Adebayo et al. 2018): similarity to explanations of randomised models."""

    family = "randomisation"
    curve_axes: ClassVar[dict[str, tuple[str, str]]] = {
        "": ("fraction of the layers randomised, from the output", "similarity to the original map")
    }
    reference = "quantus.MPRT"

    Params = ModelRandomisationParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.LOWER}

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        """One explanation per randomised layer and image (``explanation_passes``); without ``max_layers``
        the count of layers is known only once the model is (one is assumed)."""
        return explanation_passes(explainer, image_shape) * (self.params.max_layers or 1)

    def score(self, inp: MetricInput) -> Scores:
        p = self.params
        return model_randomisation(
            reexplainer(inp).explain,
            inp.model,
            inp.batch.x,
            inp.attributions,
            inp.target,
            inp.seeds,
            similarity=p.similarity,
            mode=p.mode,
            seed=p.seed,
            max_layers=p.max_layers,
            abs=p.abs,
            normalise=p.normalise,
            explain_batch=p.explain_batch,
        )


class RandomLogitParams(RandomisationFields):
    similarity: SimilarityKind = Field("ssim", description="how maps are compared: spearman|pearson|ssim|hog")
    normalise: bool = Field(True, description="divide each map by its maximum |value| (per sample)")


class RandomLogit(Metric):
    """Random logit test (Sixt et al. 2020): similarity to the explanation of a random other class."""

    family = "randomisation"
    reference = "quantus.RandomLogit"

    Params = RandomLogitParams
    outputs: ClassVar[dict[str, Direction]] = {"": Direction.LOWER}

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        """One explanation per image, of the other class (``explanation_passes``)."""
        return explanation_passes(explainer, image_shape)

    def score(self, inp: MetricInput) -> Scores:
        p = self.params
        return random_logit(
            reexplainer(inp).explain,
            inp.model,
            inp.batch.x,
            inp.attributions,
            inp.target,
            inp.seeds,
            num_classes=inp.model.spec.num_classes,
            similarity=p.similarity,
            abs=p.abs,
            normalise=p.normalise,
            explain_batch=p.explain_batch,
        )
