"""`--executor ray`: cell tasks become Ray generator tasks, on a local Ray or an existing cluster.

Each task runs one planned cell (all variants of a sweep) in a Ray worker process
and streams its events back as it goes (a Ray streaming generator), so the driver
writes each finished batch as it arrives: a run killed mid-cell resumes from its
last finished batch, and no shared disk is needed. Workers keep their prepared
(dataset, model) groups between tasks, so a model loads once per worker.

Retries are the executor's own: a task whose worker dies is submitted again with
the batches and variants it had already finished (``--retries`` times), so the
retry resumes instead of starting over; when the retries are spent, its cell is
recorded as error rows and the run goes on. Install with ``pip install "xbench[ray]"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bench.errors import ConfigError
from bench.executors.base import Executor
from bench.tasks import BatchDone, CellDone, CellTask, Event, TaskFailed
from bench.work import Worker, run_task

if TYPE_CHECKING:
    from bench.fastpath import AllocatorSetting

_WORKERS: dict[str | None, Worker] = {}  # per Ray worker process: reused across tasks


def _execute(task: CellTask, cache_root: str | None, threads: int) -> Iterator[Event]:
    """Runs inside a Ray worker process (a streaming generator task): the allocator as the driver chose it
    (``XBENCH_ALLOCATOR``, passed in the runtime environment), one thread per CPU the task holds."""
    from bench import fastpath

    allocator: AllocatorSetting = "default" if os.environ.get(fastpath.ENV_ALLOCATOR) == "default" else "tuned"
    fastpath.configure(max(1, threads), allocator)
    torch.set_num_threads(max(1, threads))
    if cache_root not in _WORKERS:
        _WORKERS[cache_root] = Worker(Path(cache_root) if cache_root else None, log=lambda m: print(m, flush=True))
    yield from run_task(_WORKERS[cache_root], task)


class RayExecutor(Executor):
    def __init__(
        self,
        *,
        cache_root: Path | None,
        log: Callable[[str], None] = print,
        address: str | None = None,
        workers: int | None = None,
        retries: int = 2,
        device: str = "cpu",
    ):
        try:
            import ray
        except ImportError as exc:
            raise ConfigError(
                "the ray executor needs Ray", field="--executor", fix='pip install "xbench[ray]"'
            ) from exc
        self.ray = ray
        self.cache_root = str(cache_root) if cache_root else None
        self.log = log
        self.retries = retries
        self.stopping = False
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
        self.gpus = 1 if device != "cpu" and torch.cuda.is_available() else 0

    def _submit(self, task: CellTask) -> Any:
        remote = self.ray.remote(_execute).options(num_cpus=1, num_gpus=self.gpus, max_retries=0)
        return remote.remote(task, self.cache_root, 1)

    def run(self, tasks: list[CellTask]) -> Iterator[Event]:
        ray = self.ray
        current = list(tasks)  # each task as far as it got (what a retry skips)
        attempts = [0] * len(tasks)
        running = {self._submit(task): i for i, task in enumerate(tasks)}
        while running and not self.stopping:
            ready, _ = ray.wait(list(running), num_returns=1)
            generator = ready[0]
            i = running[generator]
            try:
                event = ray.get(next(generator))
            except StopIteration:
                del running[generator]
                continue
            except Exception as exc:  # noqa: BLE001 - the worker died: retry from what it finished
                del running[generator]
                attempts[i] += 1
                if attempts[i] > self.retries:
                    reason = str(exc).splitlines()[0] if str(exc) else ""
                    yield TaskFailed(
                        current[i], f"Ray task failed after {self.retries} retries: {type(exc).__name__}: {reason}"
                    )
                    continue
                self.log(
                    f"{current[i].cell.label}: Ray worker failed ({type(exc).__name__}); retrying from its "
                    "last finished batch"
                )
                running[self._submit(current[i])] = i
                continue
            current[i] = self._progress(current[i], event)
            yield event
        for generator in running:
            ray.cancel(generator, force=True)

    @staticmethod
    def _progress(task: CellTask, event: Event) -> CellTask:
        """``task`` with what ``event`` finished added to its done sets (what a retry skips)."""
        if isinstance(event, BatchDone) and event.rows is not None and event.persist:
            return replace(task, finished_parts=task.finished_parts | {(event.cell.cell_id, event.key)})
        if isinstance(event, CellDone) and "variant" in event.cell.identity:
            return replace(task, complete_variants=task.complete_variants | {event.cell.identity["variant"]})
        return task

    def stop(self) -> None:
        self.stopping = True

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
