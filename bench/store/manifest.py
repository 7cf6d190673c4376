"""The run manifest (``manifest.json``) as a typed document.

The manifest says what a run directory holds: the resolved suite, the
environment, every invocation, the state of every cell (with the size and
SHA-256 of its finished file, so a damaged file is recognised), the models'
quality, sweep variants, unreadable samples, the cards of the metrics and
explainers, and files set aside as corrupt. Unknown keys are refused, so a
typo in the code that writes it fails a test instead of adding a stray field.
Manifests of schema version 2 read as version 3 (the new fields get defaults).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CellStatus = Literal["pending", "done", "error", "skipped"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Invocation(_Strict):
    """One `xbench run` on this directory."""

    started: str
    argv: list[str] = Field(default_factory=list)
    force: bool = False
    status: Literal["running", "finished", "interrupted", "failed"] = "running"
    executor: str = "local"
    shard: str | None = None
    pid: int | None = None
    host: str | None = None
    threads: int | None = None
    finished: str | None = None
    computed: int | None = None
    reused: int | None = None
    attribution_cache_hits: int | None = None
    signal: str | None = None  # SIGTERM / SIGINT when it stopped on a signal


class CellState(_Strict):
    """Where one cell stands; ``sha256`` and ``bytes`` describe its finished file."""

    dataset: str
    model: str
    explainer: str
    status: CellStatus = "pending"
    rows: int | None = None
    errors: int | None = None
    seconds: float | None = None
    sha256: str | None = None
    bytes: int | None = None
    oom_backoffs: int = 0  # batches halved after an out-of-memory error


class Quarantined(_Strict):
    """A file found damaged and moved aside (then recomputed)."""

    path: str
    moved_to: str
    reason: str
    at: str


class Manifest(_Strict):
    schema_version: int = 3
    run_id: str = ""
    suite_name: str = ""
    suite_path: str = ""
    suite_yaml: str = ""
    suite: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)
    invocations: list[Invocation] = Field(default_factory=list)
    cells: dict[str, CellState] = Field(default_factory=dict)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    sweeps: dict[str, list[str]] = Field(default_factory=dict)
    unreadable_samples: dict[str, list[list[str]]] = Field(default_factory=dict)
    cards: dict[str, Any] = Field(default_factory=dict)
    quarantined: list[Quarantined] = Field(default_factory=list)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Manifest:
        """A manifest from its JSON; version-2 documents are upgraded (their fields are a subset)."""
        data = dict(data)
        if int(data.get("schema_version", 1) or 1) < 3:
            data["schema_version"] = 3
        return cls.model_validate(data)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
