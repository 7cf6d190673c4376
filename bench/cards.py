"""Cards: the immutable facts about a configured metric or explainer that every view needs.

A card is computed once from a component and its params (``Metric.card(key)``,
``Explainer.card(key)``), stored with the results (each cell file's Parquet
metadata, the manifest, an exported results file) and read back by the
leaderboard, ``compare``, the report and ``history``. Views never look up a
metric by its id or import the registry: renaming a metric's ``id`` in a suite,
or reading a run made by a plugin that is not installed, leaves every view intact.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# Metric families: which question a metric answers. Views group and select by family.
FAMILIES = ("faithfulness", "localisation", "robustness", "randomisation", "complexity", "agreement", "cost", "other")
# Units of an output: a score ranks entries; counts and costs are shown as plain numbers.
UNITS = ("score", "seconds", "images", "megabytes")


@dataclass(frozen=True)
class OutputCard:
    """One output column of a metric (``deletion``, ``region_perturbation.aopc``, ``runtime.forward_images``).

    higher_is_better: the direction in which it improves.
    ranked: whether it takes part in ranks and the mean rank (descriptive and cost outputs do not).
    degenerate_value: what an attribution that gives no answer (a constant map, no positive
        evidence) scores; None: such a sample is NaN (undefined) instead.
    unit: "score" for quality measures; "seconds", "images", "megabytes" for costs.
    """

    column: str
    higher_is_better: bool
    ranked: bool = True
    degenerate_value: float | None = None
    unit: str = "score"

    @property
    def is_score(self) -> bool:
        return self.unit == "score"


@dataclass(frozen=True)
class CurveCard:
    """A curve a metric stores per sample, and how to draw it: axis labels, and the x position of each
    point (empty: evenly spaced from 0 to 1)."""

    column: str  # "deletion", "road.morf"
    x_label: str
    y_label: str
    x: tuple[float, ...] = ()


@dataclass(frozen=True)
class MetricCard:
    """A configured metric: identity, family, needs, outputs and the reference it is checked against."""

    key: str  # the suite id; output columns are "<key>" and "<key>.<output>"
    name: str  # the registered name
    version: int
    params: str  # the resolved params as sorted JSON
    family: str = "other"
    needs: tuple[str, ...] = ()
    outputs: tuple[OutputCard, ...] = ()
    reference: str = ""  # e.g. "quantus.PixelFlipping": the implementation tests compare with
    curves: tuple[CurveCard, ...] = ()

    def output(self, column: str) -> OutputCard:
        for out in self.outputs:
            if out.column == column:
                return out
        raise KeyError(f"metric {self.key!r} has no output {column!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MetricCard:
        outputs = tuple(OutputCard(**o) for o in data.get("outputs", ()))
        curves = tuple(CurveCard(**{**c, "x": tuple(c.get("x", ()))}) for c in data.get("curves", ()))
        return cls(**{**data, "needs": tuple(data.get("needs", ())), "outputs": outputs, "curves": curves})


@dataclass(frozen=True)
class ExplainerCard:
    """A configured explainer: identity, family, and whether it is a control (a reference line)."""

    key: str
    name: str
    version: int
    params: str
    family: str = "other"
    control: bool = False
    deterministic: bool = True
    requires: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExplainerCard:
        return cls(**{**data, "requires": tuple(data.get("requires", ()))})


def params_json(params: Any) -> str:
    """Resolved params as sorted JSON (the same text the result rows carry)."""
    dump = params.model_dump(mode="json") if hasattr(params, "model_dump") else params
    return json.dumps(dump, sort_keys=True)


@dataclass
class Cards:
    """Every card of a run (or of several runs read together), by key."""

    metrics: dict[str, MetricCard] = field(default_factory=dict)
    explainers: dict[str, ExplainerCard] = field(default_factory=dict)

    def merge(self, other: Cards) -> Cards:
        """Cards of both; where a key is in both, ``other``'s (the later) card wins."""
        return Cards({**self.metrics, **other.metrics}, {**self.explainers, **other.explainers})

    def outputs(self) -> dict[str, OutputCard]:
        """Output column -> its card, over all metrics."""
        return {o.column: o for card in self.metrics.values() for o in card.outputs}

    def output(self, column: str) -> OutputCard | None:
        return self.outputs().get(column)

    def metric_of(self, column: str) -> MetricCard | None:
        """The metric card that has output ``column``."""
        for card in self.metrics.values():
            if any(o.column == column for o in card.outputs):
                return card
        return None

    def family_of(self, column: str) -> str:
        """The family of the metric that has output ``column`` ("" when no card has it)."""
        card = self.metric_of(column)
        return card.family if card is not None else ""

    def curve(self, column: str) -> CurveCard | None:
        """How to draw the curve stored as ``column`` (None: not a curve to draw)."""
        for card in self.metrics.values():
            for curve in card.curves:
                if curve.column == column:
                    return curve
        return None

    def is_control(self, explainer: str) -> bool:
        """True for a control explainer; a sweep variant (``gradcam@layer``) inherits its entry's card."""
        card = self.explainers.get(explainer) or self.explainers.get(explainer.split("@", 1)[0])
        return bool(card and card.control)

    def to_json(self) -> dict[str, Any]:
        return {
            "metrics": {k: c.to_json() for k, c in sorted(self.metrics.items())},
            "explainers": {k: c.to_json() for k, c in sorted(self.explainers.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Cards:
        data = data or {}
        return cls(
            {k: MetricCard.from_json(v) for k, v in data.get("metrics", {}).items()},
            {k: ExplainerCard.from_json(v) for k, v in data.get("explainers", {}).items()},
        )
