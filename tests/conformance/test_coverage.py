"""Every registered component has a conformance entry: a new one without an entry fails here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.registry import METRICS
from tests.conformance import entries
from tests.conftest import ROOT

ENTRIES = {
    "datasets": entries.DATASETS,
    "models": entries.MODELS,
    "explainers": entries.EXPLAINERS,
    "metrics": {k: v for k, v in entries.METRICS.items() if not k.startswith("quantus:")},
}


@pytest.fixture(scope="module")
def registered() -> dict[str, list[str]]:
    """The built-in names of every registry, listed in a fresh interpreter: other tests register throwaway
    components (tests/plugins.py) in this one."""
    code = (
        "import json; from bench.registry import REGISTRIES, load_builtin_components; load_builtin_components(); "
        "print(json.dumps({k: r.names() for k, r in REGISTRIES.items()}))"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "XBENCH_PLUGINS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    return json.loads(out.stdout)


@pytest.mark.parametrize("kind", sorted(ENTRIES))
def test_every_registered_name_has_an_entry(kind: str, registered: dict[str, list[str]]) -> None:
    names = set(registered[kind])
    missing, stale = sorted(names - set(ENTRIES[kind])), sorted(set(ENTRIES[kind]) - names)
    assert not missing, f"add conformance entries for these {kind} to tests/conformance/entries.py: {missing}"
    assert not stale, f"entries name {kind} that are not registered: {stale}"


def test_quantus_samples_are_registered_pass_throughs() -> None:
    assert len(entries.QUANTUS_SAMPLES) >= 3
    for name in entries.QUANTUS_SAMPLES:
        assert METRICS.get(name).reference == f"quantus.{name.split(':', 1)[1]}"
