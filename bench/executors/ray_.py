"""`--executor ray`: cells become Ray tasks, on a local Ray or an existing cluster (`--address`).

Each task runs one planned cell (all variants of a sweep) in a Ray worker
process. Workers keep their prepared (dataset, model) groups between tasks, so
a model loads once per worker. Results (rows, curves, gallery maps, the
group's predictions) travel back to the driver, which writes them into the
same run directory as the local executor, atomically. A task whose worker
dies is retried (``--retries``); when the retries are spent, its cell is
recorded as error rows and the run goes on. Install with
``pip install "xbench[ray]"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

from bench.errors import ConfigError
from bench.executors.base import Executor, WorkerSpec
from bench.plan import Cell
from bench.work import Worker, WorkResult

_WORKERS: dict[WorkerSpec, Worker] = {}  # per Ray worker process: reused across tasks


def _execute(spec: WorkerSpec, cell: Cell, threads: int) -> WorkResult:
    """Runs inside a Ray worker process."""
    from bench.store import RunStore

    torch.set_num_threads(max(1, threads))
    if spec not in _WORKERS:
        _WORKERS[spec] = spec.worker(log=lambda msg: print(msg, flush=True))
    store = RunStore(spec.run_dir)
    from bench.runner import cell_complete

    return _WORKERS[spec].run(cell, complete=lambda c: cell_complete(store, c, None))


class RayExecutor(Executor):
    def __init__(self, spec: WorkerSpec, *, address: str | None = None, workers: int | None = None, retries: int = 2):
        try:
            import ray
        except ImportError as exc:
            raise ConfigError(
                "the ray executor needs Ray", field="--executor", fix='pip install "xbench[ray]"'
            ) from exc
        self.ray = ray
        self.spec = spec
        self.retries = retries
        self.started = not ray.is_initialized()
        if self.started:
            passed = {k: v for k, v in os.environ.items() if k.startswith(("XBENCH_", "TORCH_HOME", "PYTHONPATH"))}
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "ignore_reinit_error": True,
                "runtime_env": {"env_vars": passed},  # plugins, caches and paths, also in the workers
            }
            if address:
                kwargs["address"] = address
            elif workers:
                kwargs["num_cpus"] = workers
            ray.init(**kwargs)
        self.gpus = 1 if spec.device != "cpu" and torch.cuda.is_available() else 0

    def run(
        self, cells: list[Cell], tick: Callable[[int], None], complete: Callable[[Cell], bool]
    ) -> Iterator[WorkResult]:
        ray = self.ray
        task = ray.remote(_execute).options(
            num_cpus=1, num_gpus=self.gpus, max_retries=self.retries, retry_exceptions=False
        )
        pending = {task.remote(self.spec, cell, 1): cell for cell in cells}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 - a lost task fails its cell, not the run
                result = self._failed(cell, exc)
            tick(0)
            yield result

    def _failed(self, cell: Cell, exc: BaseException) -> WorkResult:
        from bench.work import CellResult

        message = f"Ray task failed after {self.retries} retries: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        worker = self.spec.worker(log=lambda _: None, device="cpu")
        rows = worker._failed(cell, worker.suite.explainers[cell.explainer], message)
        return WorkResult(cell, results=[CellResult(cell, rows, 0.0)])

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
