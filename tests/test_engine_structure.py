"""The engine's shape, checked: no import cycle in bench/, workers get no path to the run
directory, and every write into a run directory goes through the store."""

from __future__ import annotations

import ast
import contextlib
import inspect
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest

import bench.atomic
from bench.cli import main
from bench.config import load_suite
from bench.runner import Runner, RunOptions
from tests.conftest import ROOT, tiny_suite, write_suite

PACKAGE = ROOT / "bench"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """The bench modules that ``path`` imports (at module level only, or anywhere)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bench"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("bench"))
    return found


def _graph(top_level_only: bool = True) -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in _imports(path, top_level_only) if m in modules and m != name}
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_in_bench() -> None:
    graph = _graph()
    # a package's __init__ importing its own submodules is not a cycle of the design
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    assert _cycles(graph) == []


def test_workers_and_executors_never_reach_the_driver_or_the_store_writer() -> None:
    """Not even lazily: the worker side cannot write a run directory."""
    driver = {"bench.runner", "bench.recorder", "bench.store.run_dir", "bench.store.parts", "bench.merge"}
    for path in [PACKAGE / "work.py", PACKAGE / "cell.py", *(PACKAGE / "executors").glob("*.py")]:
        assert not (_imports(path, top_level_only=False) & driver), path.name


def test_tasks_carry_no_path_to_the_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run-dir-that-workers-must-not-see"
    suite = load_suite(write_suite(tmp_path, tiny_suite(output=str(out))))
    runner = Runner(suite, RunOptions(progress=False))
    from bench.plan import build_plan

    for cell in build_plan(suite):
        task = runner._task(cell)
        assert str(out).encode() not in pickle.dumps(task)  # (its name is the run id, which rows carry)


@contextlib.contextmanager
def _watch_writes(run_dir: Path) -> Iterator[list[tuple[Path, list[str]]]]:
    """Record every atomic write under ``run_dir`` with the bench modules on the call stack."""
    seen: list[tuple[Path, list[str]]] = []
    original = bench.atomic.atomic_path

    @contextlib.contextmanager
    def watched(dest: Path) -> Iterator[Path]:
        if Path(dest).resolve().is_relative_to(run_dir.resolve()):
            callers = [f.filename for f in inspect.stack() if "/bench/" in f.filename]
            seen.append((Path(dest), callers))
        with original(dest) as tmp:
            yield tmp

    bench.atomic.atomic_path = watched
    try:
        yield seen
    finally:
        bench.atomic.atomic_path = original


@pytest.mark.slow
def test_every_write_into_a_run_directory_goes_through_the_store(tmp_path: Path, model_cache: Path) -> None:
    out = tmp_path / "run"
    path = write_suite(tmp_path, tiny_suite(output=str(out)))
    with _watch_writes(out) as seen:
        assert main(["run", str(path), "--no-progress"]) == 0
        assert main(["report", str(out)]) == 0
        assert main(["compare", str(out), str(out)]) == 0
    assert len(seen) > 10
    for dest, callers in seen:
        assert any("/bench/store/" in c for c in callers), f"{dest} written outside the store: {callers[:3]}"


@pytest.mark.parametrize("module", ["bench.work", "bench.cell", "bench.executors.local", "bench.executors.ray_"])
def test_worker_side_modules_do_not_mention_run_dirs(module: str) -> None:
    """The old design passed run_dir to workers; none of the worker-side code should know one."""
    source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
    assert "run_dir" not in source and "RunStore" not in source


def test_modules_and_functions_stay_small() -> None:
    """No module of bench/ over 450 lines and no function over 65: one job each, readable in one screen
    (issue 15; split a module or function that grows past them)."""
    import ast

    too_long = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 450:
            too_long.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 65:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)
