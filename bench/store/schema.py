"""The typed layout of results: result rows, curves and predictions as Arrow schemas, and the
column groups that rows are built from.

Rows are built from three typed parts, never from free dicts: the cell's
``CellColumns`` (shared by every row of a cell), a ``MetricColumns`` per metric
output and a ``SampleColumns`` per sample. ``CellRows`` accumulates them column
by column; ``check_table`` rejects a table with an unknown, missing or mistyped
column. Schema history: 1 the first layout; 2 adds ``suite``; 3 stores metric and
explainer cards with every cell and adds the status "degenerate".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 3
STATUSES = ("ok", "degenerate", "nan", "error", "skipped")

RESULT_SCHEMA = pa.schema(
    [
        ("suite", pa.string()),
        ("run_id", pa.string()),
        ("cell_id", pa.string()),
        ("dataset", pa.string()),
        ("model", pa.string()),
        ("explainer", pa.string()),
        ("explainer_name", pa.string()),
        ("explainer_version", pa.int32()),
        ("explainer_params", pa.string()),
        ("metric", pa.string()),
        ("metric_name", pa.string()),
        ("metric_version", pa.int32()),
        ("metric_params", pa.string()),
        ("higher_is_better", pa.bool_()),
        ("sample_id", pa.string()),
        ("label", pa.int64()),
        ("target", pa.int64()),
        ("prediction", pa.int64()),
        ("correct", pa.bool_()),
        ("value", pa.float64()),
        ("status", pa.string()),  # ok | degenerate | nan | error | skipped
        ("message", pa.string()),
        ("seed", pa.int64()),
    ]
)

CURVE_SCHEMA = pa.schema(
    [
        ("cell_id", pa.string()),
        ("metric", pa.string()),
        ("sample_id", pa.string()),
        ("curve", pa.list_(pa.float32())),
    ]
)

PREDICTION_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("model", pa.string()),
        ("sample_id", pa.string()),
        ("label", pa.int64()),
        ("label_name", pa.string()),
        ("prediction", pa.int64()),
        ("prediction_name", pa.string()),
        ("predicted_class", pa.int64()),
        ("target", pa.int64()),
        ("target_rule", pa.string()),
        ("correct", pa.bool_()),
        ("confidence", pa.float32()),
    ]
)


class SchemaError(ValueError):
    """A table does not have exactly the columns (and types) of its schema."""


def check_table(table: pa.Table, schema: pa.Schema, what: str = "table") -> pa.Table:
    """``table`` if its columns are exactly ``schema``'s, in order and type; else SchemaError naming
    the unknown, missing and mistyped columns."""
    names, wanted = table.schema.names, schema.names
    unknown = [n for n in names if n not in wanted]
    missing = [n for n in wanted if n not in names]
    mistyped = [
        f"{f.name} ({table.schema.field(f.name).type}, expected {f.type})"
        for f in schema
        if f.name in names and table.schema.field(f.name).type != f.type
    ]
    if unknown or missing or mistyped or names != wanted:
        parts = [
            f"unknown columns {unknown}" if unknown else "",
            f"missing columns {missing}" if missing else "",
            f"mistyped columns {mistyped}" if mistyped else "",
            "columns out of order" if not (unknown or missing) and names != wanted else "",
        ]
        raise SchemaError(f"{what}: " + "; ".join(p for p in parts if p))
    return table


@dataclass(frozen=True)
class CellColumns:
    """Columns that every row of one cell shares."""

    suite: str
    run_id: str
    cell_id: str
    dataset: str
    model: str
    explainer: str
    explainer_name: str
    explainer_version: int
    explainer_params: str


@dataclass(frozen=True)
class MetricColumns:
    """Columns of one metric output."""

    metric: str
    metric_name: str
    metric_version: int
    metric_params: str
    higher_is_better: bool


@dataclass(frozen=True)
class SampleColumns:
    """Columns of one sample (and why it has no target, when it has none)."""

    sample_id: str | None
    label: int | None = None
    target: int | None = None
    prediction: int | None = None
    correct: bool | None = None
    seed: int | None = None
    no_target_reason: str | None = field(default=None, compare=False)

    def columns(self) -> dict[str, Any]:
        """The result-row columns (``no_target_reason`` becomes a row's message, not a column)."""
        out = asdict(self)
        out.pop("no_target_reason")
        return out


_ROW_PARTS = {f.name for part in (CellColumns, MetricColumns, SampleColumns) for f in fields(part)}
assert _ROW_PARTS - {"no_target_reason"} | {"value", "status", "message"} == set(RESULT_SCHEMA.names)


@dataclass
class CellRows:
    """Accumulates the rows (and curves, and gallery maps) of one cell, or of one batch of it."""

    cell: CellColumns | None = None
    columns: dict[str, list[Any]] = field(default_factory=lambda: {f.name: [] for f in RESULT_SCHEMA})
    curves: dict[str, list[Any]] = field(default_factory=lambda: {f.name: [] for f in CURVE_SCHEMA})
    gallery: list[tuple[str, Any]] = field(default_factory=list)  # (sample id, (H, W) attribution) for reports

    def add(self, metric: MetricColumns, sample: SampleColumns, value: float, status: str, message: str | None) -> None:
        if self.cell is None:
            raise ValueError("CellRows.add needs the cell's columns")
        if not isinstance(metric, MetricColumns) or not isinstance(sample, SampleColumns):
            raise TypeError("rows are built from MetricColumns and SampleColumns, not free dicts")
        if status not in STATUSES:
            raise ValueError(f"unknown row status {status!r}; one of {', '.join(STATUSES)}")
        row = {
            **asdict(self.cell),
            **asdict(metric),
            **sample.columns(),
            "value": value,
            "status": status,
            "message": message,
        }
        for name, column in self.columns.items():
            column.append(row[name])

    def add_curve(self, metric: str, sample_id: str, curve: list[float]) -> None:
        if self.cell is None:
            raise ValueError("CellRows.add_curve needs the cell's columns")
        self.curves["cell_id"].append(self.cell.cell_id)
        self.curves["metric"].append(metric)
        self.curves["sample_id"].append(sample_id)
        self.curves["curve"].append(curve)

    def extend(self, other: CellRows) -> None:
        """Append the rows, curves and gallery maps of ``other`` (a batch of the same cell)."""
        for name, column in other.columns.items():
            self.columns[name].extend(column)
        for name, column in other.curves.items():
            self.curves[name].extend(column)
        self.gallery.extend(other.gallery)

    def __len__(self) -> int:
        return len(self.columns["value"])

    def count(self, status: str) -> int:
        return sum(1 for s in self.columns["status"] if s == status)

    def table(self) -> pa.Table:
        return pa.table(self.columns, schema=RESULT_SCHEMA)

    def curve_table(self) -> pa.Table:
        return pa.table(self.curves, schema=CURVE_SCHEMA)

    @classmethod
    def from_tables(cls, rows: pa.Table, curves: pa.Table | None = None) -> CellRows:
        out = cls()
        out.columns = check_table(rows, RESULT_SCHEMA, "result rows").to_pydict()
        if curves is not None:
            out.curves = check_table(curves, CURVE_SCHEMA, "curves").to_pydict()
        return out
