"""Execute a suite: plan the cells, hand the pending ones to an executor as tasks, record the events.

The runner is the driver of a run. It holds the run directory's lock for the
whole run, decides what to run (every planned cell whose file is missing,
damaged, incomplete or holds errors; all with ``force``; one shard with
``--shard i/n``), builds a picklable task per cell (with what is already done on
disk), and lets the ``Recorder`` write each event an executor streams back. An
interrupted run loses only the batches in flight: finished cells are files,
finished batches of unfinished cells are parts, and attributions are cached.

SIGINT and SIGTERM stop a run cleanly: the batch in flight finishes (a second
signal abandons it), parts and the manifest are flushed, and ``RunInterrupted``
carries the signal to the command line (exit 130 / 143).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from bench.cards import Cards
from bench.config import Suite
from bench.environment import environment, resolve_device
from bench.errors import ConfigError, RunInterrupted
from bench.executors import make_executor
from bench.group import sample_refs
from bench.models.base import cache_root
from bench.plan import Cell, build_plan
from bench.preflight import preflight
from bench.recorder import Recorder, RunResult, default_log, now
from bench.seeding import sample_seeds
from bench.store import SCHEMA_VERSION, CellState, Invocation, Manifest, RunStore
from bench.tasks import CellTask, ComponentSpec, RunSettings

__all__ = ["RunInterrupted", "RunOptions", "RunResult", "Runner", "in_shard", "parse_shard"]


@dataclass
class RunOptions:
    output: Path | None = None
    run_id: str | None = None
    force: bool = False
    progress: bool | None = None  # None: a progress bar when stderr is a terminal
    executor: str = "local"  # local | ray
    address: str | None = None  # an existing Ray cluster
    workers: int | None = None  # CPUs of a local Ray cluster
    retries: int = 2  # Ray: retries of a task whose worker died
    shard: tuple[int, int] | None = None  # (i, n): run only shard i of n (0-based)
    cache_attributions: bool = True
    wait: bool = False  # wait for another run holding the directory instead of failing
    threads: int | None = None  # torch threads per worker (None: leave as is)
    log: Callable[[str], None] = field(default=default_log)


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' (1-based, as SLURM array indices often are written: 1/4 .. 4/4) -> (i-1, n)."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r} is not i/n", field="--shard", fix="e.g. --shard 2/8") from None
    if not 1 <= i <= n:
        raise ConfigError(f"--shard {text!r}: i must be in 1..n", field="--shard", fix="e.g. --shard 2/8")
    return i - 1, n


def in_shard(cells: list[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    """The cells of one shard: round-robin over the plan's order (stable for a suite)."""
    if shard is None:
        return cells
    i, n = shard
    return [c for k, c in enumerate(cells) if k % n == i]


def _identity_key(identity: dict[str, Any]) -> str:
    return json.dumps(identity, sort_keys=True, default=str)


class Runner:
    def __init__(self, suite: Suite, options: RunOptions | None = None):
        self.suite = suite
        self.options = options or RunOptions()
        self.cfg = suite.config
        self.run_dir, self.run_id = suite.run_location(self.options.output, self.options.run_id)
        self.log = self.options.log
        self.store = RunStore(self.run_dir, log=self.log)
        self.device = resolve_device(self.cfg.device)
        self.cards = suite_cards(suite)
        self.unreadable: dict[str, list[tuple[str, str]]] = {}
        self._refs: dict[str, tuple[list[Any], list[int]]] = {}

    # ------------------------------------------------------------ top level

    def run(self) -> RunResult:
        plan = build_plan(self.suite)
        cells = in_shard(plan, self.options.shard)
        preflight(self.suite, self.run_dir, keep_output=True, from_cli=self.options.output is not None)
        with self.store.lock(wait=self.options.wait):
            self.store.prepare()
            manifest = self._start_manifest(cells)
            self.store.verify_cells(manifest)
            self.store.adopt(manifest)
            self._retire_superseded(plan, manifest)
            self._drop_stale_parts(plan)
            return self._execute(cells, manifest)

    def _execute(self, cells: list[Cell], manifest: Manifest) -> RunResult:
        result = RunResult(self.run_dir)
        pending = [c for c in cells if self.options.force or not self._complete(c, manifest)]
        result.reused = [c.cell_id for c in cells if c not in pending]
        if result.reused:
            self.log(f"reusing {len(result.reused)} finished cell(s) in {self.run_dir} (use --force to recompute)")
        tasks = [self._task(cell) for cell in pending]
        if self.store.parts.damaged:
            self.log(f"warning: {self.store.parts.damaged} damaged finished batch(es) found and dropped; recomputing")
        bar = tqdm(
            total=sum(-(-len(t.samples) // self.cfg.batch_size) for t in tasks),
            unit="batch",
            disable=self._progress_disabled(),
            dynamic_ncols=True,
        )
        recorder = Recorder(self.store, manifest, self.cards, result, self.log, bar.update)
        invocation = manifest.invocations[-1]
        executor = make_executor(
            self.options.executor,
            cache_root=self._cache_root(),
            log=self.log,
            address=self.options.address,
            workers=self.options.workers,
            retries=self.options.retries,
            device=str(self.device),
        )
        stop = _StopOnSignal(executor.stop, self.log, self.run_dir)
        try:
            with stop.installed():
                for event in executor.run(tasks):
                    recorder.handle(event)
            invocation.status = "interrupted" if stop.signum else "finished"
        except BaseException:
            invocation.status = "interrupted"
            raise
        finally:
            executor.close()
            bar.close()
            invocation.signal = signal.Signals(stop.signum).name if stop.signum else None
            invocation.finished, invocation.computed, invocation.reused = (
                now(),
                len(result.computed),
                len(result.reused),
            )
            invocation.attribution_cache_hits = result.cache_hits
            self.store.write_manifest(manifest)
            self.unreadable = recorder.unreadable
        if stop.signum:
            raise RunInterrupted(stop.signum, self.run_dir)
        return result

    def _cache_root(self) -> Path | None:
        return cache_root() / "attributions" if self.options.cache_attributions else None

    def _progress_disabled(self) -> bool:
        if self.options.progress is None:
            return not sys.stderr.isatty()
        return not self.options.progress

    # ------------------------------------------------------------ what to run

    def _sweeps(self, cell: Cell) -> bool:
        return bool(self.suite.explainers[cell.explainer].sweeps())

    def _complete(self, cell: Cell, manifest: Manifest) -> bool:
        """Done when the cell file holds every planned metric, unchanged, and no errors; a sweep when
        all its variants are (known from the manifest once the model was loaded)."""
        if not self._sweeps(cell):
            return self.store.cell_complete(cell.cell_id, cell.metric_identities)
        variants = manifest.sweeps.get(cell.cell_id) or []
        return bool(variants) and set(variants) <= self._complete_variants(cell)

    def _complete_variants(self, cell: Cell) -> set[str]:
        """Suffixes of the sweep variants of ``cell`` whose files are complete (found by their stored identity)."""
        done = set()
        parent = _identity_key(cell.identity)
        for cell_id in self.store.cell_ids():
            if not cell_id.startswith(cell.sweep_prefix):
                continue
            identity = (self.store.cell_metadata(cell_id) or {}).get("cell", {})
            suffix = identity.get("variant")
            same = _identity_key({k: v for k, v in identity.items() if k != "variant"}) == parent
            if suffix and same and self.store.cell_complete(cell_id, cell.metric_identities):
                done.add(suffix)
        return done

    def _samples(self, dataset_key: str) -> tuple[list[Any], list[int]]:
        if dataset_key not in self._refs:
            refs = sample_refs(self.suite.datasets[dataset_key], self.cfg.samples_for(dataset_key), self.cfg.seed)
            self._refs[dataset_key] = (refs, sample_seeds(self.cfg.seed, [r.id for r in refs]))
        return self._refs[dataset_key]

    def _task(self, cell: Cell) -> CellTask:
        refs, seeds = self._samples(cell.dataset)
        sweeps = self._sweeps(cell)
        owners = [
            c for c in self.store.parts.cells() if c == cell.cell_id or (sweeps and c.startswith(cell.sweep_prefix))
        ]
        if self.options.force:
            for c in owners:
                self.store.parts.clear(c)
        finished = frozenset((c, key) for c in owners for key in self.store.parts.verified_keys(c, cell.parts_stamp))
        s = self.suite
        return CellTask(
            cell=cell,
            dataset=ComponentSpec.of("datasets", cell.dataset, s.datasets[cell.dataset]),
            model=ComponentSpec.of("models", cell.model, s.models[cell.model]),
            explainer=ComponentSpec.of("explainers", cell.explainer, s.explainers[cell.explainer]),
            metrics=tuple(ComponentSpec.of("metrics", k, s.metrics[k]) for k in cell.metrics),
            metric_cards=tuple(self.cards.metrics[k] for k in cell.metrics),
            explainer_card=self.cards.explainers[cell.explainer],
            settings=self._settings(),
            samples=tuple(refs),
            seeds=tuple(seeds),
            sweeps=sweeps,
            finished_parts=finished,
            complete_variants=frozenset()
            if self.options.force or not sweeps
            else frozenset(self._complete_variants(cell)),
        )

    def _settings(self) -> RunSettings:
        cache = self._cache_root()
        return RunSettings(
            suite_name=self.suite.name,
            run_id=self.run_id,
            seed=self.cfg.seed,
            device=str(self.device),
            precision=self.cfg.precision,
            warmup=self.cfg.warmup,
            batch_size=self.cfg.batch_size,
            target_rule=self.cfg.target,
            gallery_size=self.cfg.gallery,
            cache_root=str(cache) if cache else None,
            threads=self.options.threads,
        )

    def _drop_stale_parts(self, plan: list[Cell]) -> None:
        """Parts of cells whose file is already complete (a run killed between writing a cell and removing
        its parts) are leftovers: the cell is reused, so they are removed. A sweep variant is complete
        under its planned parent's metrics."""
        metrics = {c.cell_id: c.metric_identities for c in plan}
        prefixes = [(c.sweep_prefix, c.metric_identities) for c in plan if self._sweeps(c)]
        for cell_id in self.store.parts.cells():
            wanted = metrics.get(cell_id) or next((m for p, m in prefixes if cell_id.startswith(p)), None)
            if wanted is not None and self.store.cell_complete(cell_id, wanted):
                self.store.parts.clear(cell_id)

    def _retire_superseded(self, plan: list[Cell], manifest: Manifest) -> None:
        """Cells of an earlier version of the suite in this run directory (another dataset
        parameter, a removed explainer) are moved to superseded/, so the summary holds this suite only.
        A sweep's variants are kept when their parent cell is planned: cell files by the parent identity
        stored with them, unfinished parts by the parent's name (their variants may not be known yet)."""
        keep = {cell.cell_id for cell in plan}
        parents = {_identity_key(cell.identity) for cell in plan}
        for cell_id in self.store.cell_ids():
            identity = (self.store.cell_metadata(cell_id) or {}).get("cell", {}) if cell_id not in keep else {}
            parent = {k: v for k, v in identity.items() if k != "variant"}
            if "variant" in identity and _identity_key(parent) in parents:
                keep.add(cell_id)
        sweeps = tuple(c.sweep_prefix for c in plan if self._sweeps(c))
        retired = self.store.retire(keep, sweep_prefixes=sweeps)
        for cell_id in retired:
            manifest.cells.pop(cell_id, None)
        if retired:
            self.log(f"moved {len(retired)} cell(s) of an earlier version of the suite to {self.run_dir}/superseded/")
            self.store.write_manifest(manifest)

    # ------------------------------------------------------------ manifest

    def _start_manifest(self, cells: list[Cell]) -> Manifest:
        manifest = self.store.read_manifest()
        manifest.schema_version = SCHEMA_VERSION
        manifest.run_id, manifest.suite_name = self.run_id, self.suite.name
        manifest.suite_path, manifest.suite_yaml = str(self.suite.path), self.suite.path.read_text(encoding="utf-8")
        manifest.suite = self.cfg.model_dump(mode="json")
        manifest.environment = environment(self.device)
        manifest.cards = self.cards.to_json()
        shard = self.options.shard
        manifest.invocations.append(
            Invocation(
                started=now(),
                argv=list(sys.argv),
                force=self.options.force,
                executor=self.options.executor,
                shard=None if shard is None else f"{shard[0] + 1}/{shard[1]}",
                pid=os.getpid(),
                host=socket.gethostname(),
                threads=self.options.threads,
            )
        )
        for cell in cells:
            manifest.cells.setdefault(
                cell.cell_id, CellState(dataset=cell.dataset, model=cell.model, explainer=cell.explainer)
            )
        self.store.write_manifest(manifest)
        return manifest


def suite_cards(suite: Suite) -> Cards:
    """The cards of every metric and explainer of ``suite`` (controls: the class flag or the entry's ``control:``)."""
    refs = suite.refs("explainers")
    return Cards(
        {key: metric.card(key) for key, metric in suite.metrics.items()},
        {key: e.card(key, getattr(refs[key], "control", None)) for key, e in suite.explainers.items()},
    )


class _StopOnSignal:
    """SIGINT/SIGTERM handling of a run: the first asks the executor to stop after the batch in flight,
    a second abandons it at once (raises RunInterrupted)."""

    def __init__(self, stop: Callable[[], None], log: Callable[[str], None], run_dir: Path):
        self.stop, self.log, self.run_dir = stop, log, run_dir
        self.signum: int | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise RunInterrupted(self.signum, self.run_dir)
        self.signum = signum
        self.log(f"{signal.Signals(signum).name}: stopping after the batch in flight (send it again to abandon it)")
        self.stop()

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
