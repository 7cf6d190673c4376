"""bench.functional: every metric's core as a function, each with an example whose exact output is checked."""

from __future__ import annotations

import doctest
import importlib

import pytest

import bench.functional as F
from bench.registry import METRICS, load_builtin_components

MODULES = ["bench.functional", *(f"bench.functional.{m}" for m in F.SUBMODULES)]


@pytest.mark.parametrize("module", MODULES)
def test_examples_give_their_exact_output(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_every_public_function_has_an_example() -> None:
    for name in F.__all__:
        function = getattr(F, name)
        assert function.__doc__ and ">>> " in function.__doc__, name


def test_every_metric_but_runtime_has_a_function() -> None:
    """runtime reports what the runner measured; every other metric's computation is a function here."""
    load_builtin_components()
    assert set(METRICS.names()) - set(F.__all__) == {"runtime"}
