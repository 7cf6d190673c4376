"""The run directory: typed result tables, parts, the manifest, the lock, and consistent readers.

``RunStore`` is the only writer of a run directory (used by the driver while it
holds the lock); ``read_run`` / ``read_results`` read a consistent snapshot.
"""

from bench.store.lock import RunLock, RunLocked
from bench.store.manifest import CellState, Invocation, Manifest
from bench.store.read import (
    Results,
    read_manifest,
    read_predictions,
    read_results,
    read_run,
    resolve_run,
    result_files,
    run_dirs,
    schema_version,
    write_results,
)
from bench.store.run_dir import GALLERY_DIR, RunStore
from bench.store.schema import (
    CURVE_SCHEMA,
    PREDICTION_SCHEMA,
    RESULT_SCHEMA,
    SCHEMA_VERSION,
    CellColumns,
    CellRows,
    MetricColumns,
    SampleColumns,
    SchemaError,
    check_table,
)

__all__ = [
    "CURVE_SCHEMA",
    "GALLERY_DIR",
    "PREDICTION_SCHEMA",
    "RESULT_SCHEMA",
    "SCHEMA_VERSION",
    "CellColumns",
    "CellRows",
    "CellState",
    "Invocation",
    "Manifest",
    "MetricColumns",
    "Results",
    "RunLock",
    "RunLocked",
    "RunStore",
    "SampleColumns",
    "SchemaError",
    "check_table",
    "read_manifest",
    "read_predictions",
    "read_results",
    "read_run",
    "resolve_run",
    "result_files",
    "run_dirs",
    "schema_version",
    "write_results",
]
