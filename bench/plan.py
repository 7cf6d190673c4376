"""Suite -> grid of cells (dataset x model x explainer), with stable ids and cost estimates."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from bench.config import Suite
from bench.datasets.base import Dataset
from bench.seeding import short_digest
from bench.types import ImageShape, Passes


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


# Images whose size is not known before the model is (variable-size datasets without an ``image_size``
# param): estimated at the ImageNet input size, and the estimate says so.
DEFAULT_IMAGE_SHAPE: ImageShape = (3, 224, 224)


@dataclass
class CellEstimate:
    """What a cell will cost: images, model passes (explainer + metrics, not the prediction pass), and the
    image shape (C, H, W) the passes were estimated for, with ``shape_note`` saying where it came from when
    it is an assumption ("" when it is the dataset's own)."""

    cell: Cell
    images: int
    passes: Passes
    image_shape: ImageShape = DEFAULT_IMAGE_SHAPE
    shape_note: str = ""


def estimate_shape(dataset: Dataset) -> tuple[ImageShape, str]:
    """The image shape for a dataset's pass estimates and, when it is assumed, why.

    Variable-size datasets resize to the model's input size, which is known only once the model is
    loaded; the estimate then uses the dataset's ``image_size`` param (what images are resized to when
    the model takes any size), else ``DEFAULT_IMAGE_SHAPE``."""
    try:
        shape = dataset.image_shape()
    except Exception:  # noqa: BLE001 - an estimate must not fail on unreadable data
        shape = None
    if shape is not None:
        return (shape[0], shape[1], shape[2]), ""
    size = getattr(dataset.params, "image_size", None)
    if size is not None:
        shape, source = (3, *size), "the dataset's image_size"
    else:
        shape, source = DEFAULT_IMAGE_SHAPE, "a default"
    h, w = shape[1:]
    return shape, f"estimated at {h}x{w} ({source}): images are resized to the model's input size once it is loaded"


def estimate(suite: Suite, cells: list[Cell]) -> list[CellEstimate]:
    """Images and model passes each cell will need (explainer + metrics; not the prediction pass), for the
    dataset's image shape (``estimate_shape``); the metrics that explain again count the cell's explainer."""
    sizes: dict[str, int] = {}
    shapes: dict[str, tuple[ImageShape, str]] = {}
    out = []
    for cell in cells:
        if cell.dataset not in sizes:
            dataset = suite.datasets[cell.dataset]
            sizes[cell.dataset] = _sample_count(dataset, suite.config.samples_for(cell.dataset))
            shapes[cell.dataset] = estimate_shape(dataset)
        shape, note = shapes[cell.dataset]
        explainer = suite.explainers[cell.explainer]
        per_image = explainer.passes(shape)
        for qk in cell.metrics:
            per_image = per_image + suite.metrics[qk].passes(shape, explainer)
        out.append(CellEstimate(cell, sizes[cell.dataset], per_image * sizes[cell.dataset], shape, note))
    return out


def _sample_count(dataset: Dataset, wanted: int | None) -> int:
    """Images a cell explains: the samples asked for, at most the split's size (what is asked for when the
    split cannot be read)."""
    try:
        available = len(dataset.index(dataset.eval_split))
    except Exception:  # noqa: BLE001 - an estimate must not fail on unreadable data
        available = wanted or 0
    return min(wanted, available) if wanted else available
