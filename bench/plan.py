"""Suite -> grid of cells (dataset x model x explainer), with stable ids and cost estimates."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from bench.config import Suite
from bench.seeding import short_digest
from bench.types import Passes


@dataclass(frozen=True)
class Cell:
    """One (dataset, model, explainer) point of the grid and the metrics scored in it.

    ``cell_id`` is readable and stable: the keys plus a digest of everything that
    changes the attributions (data, sampling, seed, target rule, model,
    explainer and their versions). Metrics are not part of it: they are checked
    one by one against what a stored cell holds, so adding a metric recomputes
    the cell rather than duplicating it.
    """

    dataset: str
    model: str
    explainer: str
    metrics: tuple[str, ...]
    identity: dict[str, Any] = field(compare=False, hash=False)
    metric_identities: dict[str, Any] = field(compare=False, hash=False)
    dropped_metrics: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def cell_id(self) -> str:
        return f"{self.dataset}__{self.model}__{self.explainer}__{short_digest(self.identity)}"

    @property
    def parts_stamp(self) -> str:
        """What the finished batches of this cell were computed with (its metrics): parts of another stamp
        are not reused."""
        return short_digest(self.metric_identities, 16)

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.model}/{self.explainer}"

    def variant(self, suffix: str) -> Cell:
        """The cell of one variant of a sweep (e.g. one layer of ``layer: all_conv``)."""
        return replace(self, explainer=f"{self.explainer}@{suffix}", identity={**self.identity, "variant": suffix})

    @property
    def sweep_prefix(self) -> str:
        """What the ids of this cell's sweep variants start with."""
        return f"{self.dataset}__{self.model}__{self.explainer}@"


def build_plan(suite: Suite) -> list[Cell]:
    """Every cell of the suite in (dataset, model, explainer) order, exclusions applied."""
    cfg = suite.config
    cells = []
    for dk, dataset in suite.datasets.items():
        data_identity = {
            **dataset.content_identity(),
            "split": dataset.eval_split,
            "samples": cfg.samples_for(dk),
            "seed": cfg.seed,
            "target": cfg.target,
            "precision": cfg.precision,
        }
        for mk, model in suite.models.items():
            for ek, explainer in suite.explainers.items():
                if any(rule.matches(dk, mk, ek) for rule in cfg.exclude):
                    continue
                metrics, dropped = [], {}
                for qk, metric in suite.metrics.items():
                    if any(rule.matches(dk, mk, ek, qk) for rule in cfg.exclude):
                        continue
                    if "mask" in metric.needs and not dataset.has_masks:
                        dropped[qk] = f"dataset {dk!r} has no ground-truth masks"
                        continue
                    metrics.append(qk)
                identity = {
                    "data": data_identity,
                    "model": model.identity(),
                    "explainer": explainer.identity(),
                    "keys": [dk, mk, ek],
                }
                cells.append(
                    Cell(
                        dataset=dk,
                        model=mk,
                        explainer=ek,
                        metrics=tuple(metrics),
                        identity=identity,
                        metric_identities={qk: suite.metrics[qk].identity() for qk in metrics},
                        dropped_metrics=dropped,
                    )
                )
    return cells


@dataclass
class CellEstimate:
    cell: Cell
    images: int
    passes: Passes


def estimate(suite: Suite, cells: list[Cell]) -> list[CellEstimate]:
    """Images and model passes each cell will need (explainer + metrics; not the prediction pass)."""
    sizes: dict[str, int] = {}
    out = []
    for cell in cells:
        if cell.dataset not in sizes:
            dataset = suite.datasets[cell.dataset]
            wanted = suite.config.samples_for(cell.dataset)
            try:
                available = len(dataset.index(dataset.eval_split))
            except Exception:  # noqa: BLE001 - an estimate must not fail on unreadable data
                available = wanted or 0
            sizes[cell.dataset] = min(wanted, available) if wanted else available
        per_image = suite.explainers[cell.explainer].passes()
        for qk in cell.metrics:
            per_image = per_image + suite.metrics[qk].passes()
        out.append(CellEstimate(cell, sizes[cell.dataset], per_image * sizes[cell.dataset]))
    return out
