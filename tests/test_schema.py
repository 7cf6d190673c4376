"""Typed rows, curves, predictions and manifest: unknown and missing fields are refused; version-2 files and
manifests read as version 3; renaming metric ids in a suite keeps every view."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from bench.cli import main
from bench.store import (
    CURVE_SCHEMA,
    PREDICTION_SCHEMA,
    RESULT_SCHEMA,
    CellColumns,
    CellRows,
    Manifest,
    MetricColumns,
    SampleColumns,
    SchemaError,
    check_table,
    read_run,
)
from tests.conftest import tiny_suite, write_suite

CELL = CellColumns("s", "r", "c", "d", "m", "e", "saliency", 1, "{}")
METRIC = MetricColumns("iou", "iou", 1, "{}", True)


@pytest.mark.parametrize("schema", [RESULT_SCHEMA, CURVE_SCHEMA, PREDICTION_SCHEMA], ids=["rows", "curves", "preds"])
def test_tables_with_unknown_missing_or_mistyped_columns_are_refused(schema: pa.Schema) -> None:
    empty = schema.empty_table()
    assert check_table(empty, schema) is empty
    with pytest.raises(SchemaError, match="unknown columns \\['extra'\\]"):
        check_table(empty.append_column("extra", pa.array([], pa.string())), schema)
    with pytest.raises(SchemaError, match=f"missing columns \\['{schema.names[0]}'\\]"):
        check_table(empty.drop([schema.names[0]]), schema)
    retyped = empty.set_column(0, schema.names[0], pa.array([], pa.float32()))
    with pytest.raises(SchemaError, match="mistyped columns"):
        check_table(retyped, schema)


def test_rows_are_built_from_typed_parts_only() -> None:
    rows = CellRows(CELL)
    rows.add(METRIC, SampleColumns("s0", 1, 1, 1, True, 7, no_target_reason=None), 0.5, "ok", None)
    rows.add(
        METRIC,
        SampleColumns("s1", 2, -1, 3, None, 8, no_target_reason="no counterpart"),
        float("nan"),
        "skipped",
        "no counterpart",
    )
    table = check_table(rows.table(), RESULT_SCHEMA)
    assert table.num_rows == 2 and table.column("message").to_pylist() == [None, "no counterpart"]
    with pytest.raises(ValueError, match="unknown row status 'okay'"):
        rows.add(METRIC, SampleColumns("s2"), 0.1, "okay", None)
    with pytest.raises(TypeError):
        rows.add(METRIC, {"sample_id": "s3", "surprise": 1}, 0.1, "ok", None)  # type: ignore[arg-type]


def test_manifest_refuses_unknown_keys_and_upgrades_version_2() -> None:
    with pytest.raises(ValidationError, match="surprise"):
        Manifest.parse({"schema_version": 3, "surprise": 1})
    with pytest.raises(ValidationError, match="cells"):
        Manifest.parse({"cells": {"c": {"dataset": "d", "model": "m", "explainer": "e", "oops": 1}}})
    old = {
        "schema_version": 2,
        "run_id": "a",
        "cells": {"c": {"dataset": "d", "model": "m", "explainer": "e", "status": "done", "rows": 3}},
        "invocations": [{"started": "2026-01-01T00:00:00+00:00", "status": "finished"}],
    }
    manifest = Manifest.parse(old)
    assert manifest.schema_version == 3 and manifest.cells["c"].sha256 is None and manifest.quarantined == []


@pytest.fixture(scope="module")
def renamed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run whose metrics have unusual ids: runtime is "cost", iou is "overlap", deletion "del"."""
    folder = tmp_path_factory.mktemp("renamed")
    metrics = [
        {"name": "deletion", "id": "del", "params": {"steps": 8, "baseline": "mean"}},
        {"name": "iou", "id": "overlap", "params": {"threshold": "mask_size"}},
        {"name": "runtime", "id": "cost"},
    ]
    models = [
        {"name": "small_cnn", "params": {"widths": [8, 16, 32, 32], "epochs": 10}},
        {"name": "small_cnn", "id": "other", "params": {"widths": [8, 16, 32, 32], "epochs": 10, "seed": 1}},
    ]
    path = write_suite(folder, tiny_suite(metrics=metrics, models=models, output=str(folder / "run")))
    assert main(["run", str(path), "--no-progress"]) == 0
    return folder / "run"


def test_renaming_metric_ids_in_a_suite_keeps_every_view(renamed: Path) -> None:
    text = (renamed / "leaderboard.md").read_text()
    assert "## Cost and faithfulness" in text and "cost (s/image)" in text and "| del" in text
    assert "## Models by localisation" in text and "overlap ↑" in text
    assert "## Reliability" in text and "del ↓" in text
    cards = read_run(renamed).cards
    assert cards.metrics["cost"].family == "cost" and cards.output("overlap").degenerate_value == 0.0  # type: ignore[union-attr]


def test_cell_files_carry_their_cards_and_version_2_files_get_cards_from_rows(renamed: Path, tmp_path: Path) -> None:
    cell = next((renamed / "cells").glob("*.parquet"))
    meta = json.loads(pq.read_schema(cell).metadata[b"xbench"])
    assert meta["schema_version"] == 3 and set(meta["cards"]["metrics"]) == {"del", "overlap", "cost"}
    old = pq.read_table(cell).replace_schema_metadata({"xbench": json.dumps({"schema_version": 2})})
    pq.write_table(old, tmp_path / "v2.parquet")
    cards = read_run(tmp_path / "v2.parquet").cards
    assert cards.output("cost.forward_images").unit == "images"  # type: ignore[union-attr]
    assert not cards.output("cost").ranked and cards.output("overlap").ranked  # type: ignore[union-attr]
