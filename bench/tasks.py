"""What goes to an executor and what comes back: picklable cell tasks in, events out.

A ``CellTask`` carries everything a worker needs to run one planned cell, resolved
by the driver: the components as (registered name, validated params) specs, their
cards, the run settings, the sampled images and their seeds, and what is already
done on disk (finished batches, finished variants of a sweep). Workers never read
the suite file, the run directory or the manifest, and get no path to write results
to: they stream back events, and only the driver writes (see ``bench.recorder``).

Events, in the order a worker emits them for a task::

    GroupReady      once per (dataset, model) and worker: predictions, quality, gallery images
    SweepPlanned    a layer sweep expanded into variants (once the model is known)
    BatchDone       one finished batch of a cell (its rows), or one already on disk (rows None)
    CellDone        a cell (or variant) is finished: its batch keys in order, time, cache hits
    TaskFailed      the task could not run (the model could not be prepared, a worker died)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from bench.cards import ExplainerCard, MetricCard
from bench.plan import Cell
from bench.store.schema import CellColumns, CellRows, MetricColumns, SampleColumns
from bench.types import SampleRef


@dataclass(frozen=True)
class ComponentSpec:
    """A component as the suite resolved it: its section, suite id, registered name and params."""

    section: str  # datasets | models | explainers | metrics
    key: str
    name: str
    params: dict[str, Any] = field(hash=False)

    @property
    def digest_key(self) -> str:
        return json.dumps([self.section, self.name, self.params], sort_keys=True, default=str)

    def build(self) -> Any:
        """The component instance (params validated again: cheap, and catches a drifted registry)."""
        from bench.registry import REGISTRIES, load_builtin_components

        load_builtin_components()
        cls = REGISTRIES[self.section].get(self.name)
        return cls(cls.Params.model_validate(self.params))

    @classmethod
    def of(cls, section: str, key: str, component: Any) -> ComponentSpec:
        return cls(section, key, component.name, component.params.model_dump(mode="json"))


@dataclass(frozen=True)
class RunSettings:
    """The run-wide settings a worker needs."""

    suite_name: str
    run_id: str
    seed: int
    device: str
    precision: str = "fp32"
    warmup: bool = True
    batch_size: int = 32
    target_rule: str = "auto"
    gallery_size: int = 8
    cache_root: str | None = None  # the attribution cache (outside the run directory); None: off
    threads: int | None = None


@dataclass(frozen=True)
class CellTask:
    cell: Cell
    dataset: ComponentSpec
    model: ComponentSpec
    explainer: ComponentSpec
    metrics: tuple[ComponentSpec, ...]
    metric_cards: tuple[MetricCard, ...]
    explainer_card: ExplainerCard
    settings: RunSettings
    samples: tuple[SampleRef, ...]
    seeds: tuple[int, ...]
    sweeps: bool = False  # the explainer may expand into variants once the model is known
    finished_parts: frozenset[tuple[str, str]] = frozenset()  # (cell id, batch key) already on disk
    complete_variants: frozenset[str] = frozenset()  # variant suffixes of a sweep already finished

    @property
    def group_key(self) -> str:
        """Identifies the (dataset, model) group a worker can reuse across tasks."""
        return json.dumps([self.dataset.digest_key, self.model.digest_key, [r.id for r in self.samples]])

    def failure_rows(self, message: str, cell: Cell | None = None) -> CellRows:
        """Error rows for every sample and metric output of the task's cell: it could not run."""
        cell = cell or self.cell
        rows = CellRows(cell_columns(self.settings, cell, self.explainer_card))
        samples = [SampleColumns(r.id, r.label, seed=s) for r, s in zip(self.samples, self.seeds, strict=True)]
        add_status(
            rows,
            [c for c in self.metric_cards if c.key in cell.metrics],
            samples or [SampleColumns(None)],
            message,
            "error",
        )
        return rows


def cell_columns(settings: RunSettings, cell: Cell, card: ExplainerCard) -> CellColumns:
    return CellColumns(
        suite=settings.suite_name,
        run_id=settings.run_id,
        cell_id=cell.cell_id,
        dataset=cell.dataset,
        model=cell.model,
        explainer=cell.explainer,
        explainer_name=card.name,
        explainer_version=card.version,
        explainer_params=card.params,
    )


def metric_columns(card: MetricCard) -> list[MetricColumns]:
    """The columns of each output of a metric, in its card's order."""
    return [
        MetricColumns(
            metric=out.column,
            metric_name=card.name,
            metric_version=card.version,
            metric_params=card.params,
            higher_is_better=out.higher_is_better,
        )
        for out in card.outputs
    ]


def add_status(
    rows: CellRows, cards: list[MetricCard], samples: list[SampleColumns], message: str, status: str
) -> None:
    """NaN rows for every output of the metrics and samples, with the status and the reason."""
    for card in cards:
        for columns in metric_columns(card):
            for sample in samples:
                rows.add(columns, sample, float("nan"), status, message)


# ---------------------------------------------------------------- events


@dataclass
class GroupFacts:
    """What a run records once per (dataset, model)."""

    dataset: str
    model: str
    quality: dict[str, Any]
    predictions: pd.DataFrame
    skipped: list[tuple[str, str]]
    gallery_images: pa.Table | None


@dataclass
class GroupReady:
    facts: GroupFacts


@dataclass
class SweepPlanned:
    cell: Cell  # the planned (parent) cell
    suffixes: list[str]


@dataclass
class BatchDone:
    """A batch of ``cell`` finished: ``rows`` to keep (None when it was already on disk).
    ``persist``: the batch is final (no error rows), so the driver keeps it as a part."""

    cell: Cell
    key: str
    rows: CellRows | None
    persist: bool = True


@dataclass
class CellDone:
    cell: Cell
    keys: list[str]  # batch keys in batch order
    seconds: float
    cache_hits: int = 0
    oom_backoffs: int = 0
    reused: bool = False  # a sweep variant already finished on disk: nothing to write


@dataclass
class TaskFailed:
    task: CellTask
    message: str


Event = GroupReady | SweepPlanned | BatchDone | CellDone | TaskFailed
