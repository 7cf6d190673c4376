"""Hostile suite files: arbitrary YAML never crashes the loader with anything but a clean ConfigError."""

from __future__ import annotations

import contextlib
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.config import load_suite
from bench.errors import XbenchError
from tests.conftest import tiny_suite

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["synthetic", "small_cnn", "saliency", "gradcam", "iou", "deletion", "../x", "/etc", "a/b", "~"]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
KEYS = ["name", "seed", "samples", "batch_size", "device", "output", "target", "datasets", "models", "explainers",
        "metrics", "exclude", "regression", "gallery", "warmup", "params", "id"]  # fmt: skip


def _load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    with contextlib.suppress(XbenchError):  # a clean, explained refusal is the expected outcome for garbage
        load_suite(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), values, max_size=8))
def test_random_suites_fail_cleanly(tmp_path: Path, data: dict) -> None:
    _load(tmp_path, yaml.safe_dump(data))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["datasets", "models", "explainers", "metrics"]), st.integers(0, 2), st.text(max_size=10), values
)
def test_mutated_valid_suites_fail_cleanly(tmp_path: Path, section: str, index: int, key: str, value: object) -> None:
    suite = tiny_suite()
    entries = suite[section]
    entry = entries[index % len(entries)]
    entry = {"name": entry} if isinstance(entry, str) else dict(entry)
    entry.setdefault("params", {})[key] = value
    entries[index % len(entries)] = entry
    _load(tmp_path, yaml.safe_dump(suite))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_arbitrary_text_fails_cleanly(tmp_path: Path, text: str) -> None:
    _load(tmp_path, text)
