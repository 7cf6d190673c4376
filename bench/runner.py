"""Execute a suite: plan the cells, run the pending ones on an executor, write what comes back.

The runner decides what to run (every planned cell whose file is missing,
incomplete or holds errors; all with ``force``; one shard with ``--shard
i/n``), hands the cells to an executor (in-process, or Ray), and writes each
result as it arrives: the group's predictions and model quality once, then
each cell atomically, then the manifest. An interrupted run loses only the
batches in progress: finished cells are files, finished batches of unfinished
cells are parts, and attributions are cached.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from bench import gallery
from bench.config import Suite
from bench.environment import environment, resolve_device
from bench.errors import ConfigError
from bench.executors import WorkerSpec, make_executor
from bench.executors.local import LocalExecutor
from bench.group import sample_refs
from bench.models.base import cache_root
from bench.plan import Cell, build_plan
from bench.preflight import preflight
from bench.store import SCHEMA_VERSION, RunStore
from bench.work import GroupFacts, WorkResult, variant


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
    log: Callable[[str], None] = field(default=lambda msg: tqdm.write(msg, file=sys.stderr))


@dataclass
class RunResult:
    run_dir: Path
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=dict)  # cell id -> error rows
    cache_hits: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


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


def cell_complete(store: RunStore, cell: Cell, manifest: dict | None, sweeps: bool = False) -> bool:
    """Done when the cell file holds every planned metric, unchanged, and no errors. A sweep is
    done when all its variants are (known from the manifest once the model was loaded)."""
    if sweeps:
        variants = (manifest or {}).get("sweeps", {}).get(cell.cell_id)
        return bool(variants) and all(cell_complete(store, variant(cell, v), None) for v in variants)
    meta = store.cell_metadata(cell.cell_id)
    if not meta or meta.get("errors", 1) > 0:
        return False
    stored = meta.get("metrics", {})
    return all(stored.get(k) == json.loads(json.dumps(v)) for k, v in cell.metric_identities.items())


class Runner:
    def __init__(self, suite: Suite, options: RunOptions | None = None):
        self.suite = suite
        self.options = options or RunOptions()
        self.cfg = suite.config
        self.run_dir, self.run_id = suite.run_location(self.options.output, self.options.run_id)
        self.store = RunStore(self.run_dir)
        self.device = resolve_device(self.cfg.device)
        self.log = self.options.log
        self.unreadable: dict[str, list[tuple[str, str]]] = {}  # "dataset/model" -> (sample id, reason)
        self._recorded: set[tuple[str, str]] = set()

    # ------------------------------------------------------------ top level

    def run(self) -> RunResult:
        plan = build_plan(self.suite)
        cells = in_shard(plan, self.options.shard)
        preflight(self.suite, self.run_dir, keep_output=True, from_cli=self.options.output is not None)
        self.store.prepare()
        manifest = self._start_manifest(cells)
        self._retire_superseded(plan, manifest)
        result = RunResult(self.run_dir)
        pending = [c for c in cells if self.options.force or not self._complete(c, manifest)]
        result.reused = [c.cell_id for c in cells if c not in pending]
        if result.reused:
            self.log(f"reusing {len(result.reused)} finished cell(s) in {self.run_dir} (use --force to recompute)")
        bar = tqdm(total=sum(self._n_batches(c.dataset) for c in pending), unit="batch",
                   disable=self._progress_disabled(), dynamic_ncols=True)  # fmt: skip
        invocation = manifest["invocations"][-1]
        executor = self._executor()
        try:
            for work in executor.run(pending, bar.update, lambda c: cell_complete(self.store, c, None)):
                self._record(work, manifest, result, bar)
            invocation["status"] = "finished"
        except BaseException:
            invocation["status"] = "interrupted"
            raise
        finally:
            executor.close()
            bar.close()
            invocation.update(finished=_now(), computed=len(result.computed), reused=len(result.reused),
                              attribution_cache_hits=result.cache_hits)  # fmt: skip
            self.store.write_manifest(manifest)
        return result

    def _retire_superseded(self, plan: list[Cell], manifest: dict[str, Any]) -> None:
        """Cells of an earlier version of the suite in this run directory (another dataset
        parameter, a removed explainer) are moved to superseded/, so the summary holds this suite only.
        A sweep's variants are kept when their parent cell is planned: cell files by the parent identity
        stored with them, unfinished parts by the parent's name (their variants may not be known yet)."""
        keep = {cell.cell_id for cell in plan}
        parents = {_identity_key(cell.identity) for cell in plan}
        for path in self.store.cells_dir.glob("*.parquet"):
            identity = (self.store.cell_metadata(path.stem) or {}).get("cell", {}) if path.stem not in keep else {}
            parent = {k: v for k, v in identity.items() if k != "variant"}
            if "variant" in identity and _identity_key(parent) in parents:
                keep.add(path.stem)
        sweeps = tuple(f"{c.dataset}__{c.model}__{c.explainer}@" for c in plan if self._sweeps(c))
        retired = self.store.retire(keep, sweep_prefixes=sweeps)
        for cell_id in retired:
            manifest["cells"].pop(cell_id, None)
        if retired:
            self.log(f"moved {len(retired)} cell(s) of an earlier version of the suite to {self.run_dir}/superseded/")
            self.store.write_manifest(manifest)

    def _executor(self):
        spec = WorkerSpec(
            suite_path=str(self.suite.path),
            suite_text=self.suite.path.read_text(encoding="utf-8"),
            run_dir=str(self.run_dir),
            run_id=self.run_id,
            device=str(self.device),
            precision=self.cfg.precision,
            warmup=self.cfg.warmup,
            seed=self.cfg.seed,
            cache_root=str(cache_root() / "attributions") if self.options.cache_attributions else None,
            gallery_size=self.cfg.gallery,
            force=self.options.force,
        )
        if self.options.executor == "local":
            return LocalExecutor(spec, self.suite, self.log)
        return make_executor(self.options.executor, spec, address=self.options.address,
                             workers=self.options.workers, retries=self.options.retries)  # fmt: skip

    def _progress_disabled(self) -> bool:
        if self.options.progress is None:
            return not sys.stderr.isatty()
        return not self.options.progress

    def _sweeps(self, cell: Cell) -> bool:
        return self.suite.explainers[cell.explainer].sweeps()

    def _complete(self, cell: Cell, manifest: dict) -> bool:
        return cell_complete(self.store, cell, manifest, self._sweeps(cell))

    def _n_batches(self, dk: str) -> int:
        """Batches of a dataset's sample (for the progress bar: unreadable images shorten it)."""
        if not hasattr(self, "_sizes"):
            self._sizes: dict[str, int] = {}
        if dk not in self._sizes:
            refs = sample_refs(self.suite.datasets[dk], self.cfg.samples_for(dk), self.cfg.seed)
            self._sizes[dk] = len(refs)
        return -(-self._sizes[dk] // self.cfg.batch_size)

    # ------------------------------------------------------------ manifest

    def _start_manifest(self, cells: list[Cell]) -> dict[str, Any]:
        manifest = self.store.read_manifest()
        manifest.update(
            schema_version=SCHEMA_VERSION,
            run_id=self.run_id,
            suite_name=self.suite.name,
            suite_path=str(self.suite.path),
            suite_yaml=self.suite.path.read_text(encoding="utf-8"),
            suite=self.cfg.model_dump(mode="json"),
            environment=environment(self.device),
        )
        shard = self.options.shard
        manifest.setdefault("invocations", []).append(
            {"started": _now(), "argv": sys.argv, "force": self.options.force, "status": "running",
             "executor": self.options.executor, "shard": None if shard is None else f"{shard[0] + 1}/{shard[1]}"}
        )  # fmt: skip
        manifest.setdefault("cells", {})
        manifest.setdefault("models", {})
        for cell in cells:
            manifest["cells"].setdefault(
                cell.cell_id,
                {"dataset": cell.dataset, "model": cell.model, "explainer": cell.explainer, "status": "pending"},
            )
        self.store.write_manifest(manifest)
        return manifest

    # ------------------------------------------------------------ results

    def _record(self, work: WorkResult, manifest: dict, result: RunResult, bar: tqdm) -> None:
        if work.facts is not None:
            self._record_group(work.facts, manifest)
        if work.sweep is not None:
            manifest.setdefault("sweeps", {})[work.cell.cell_id] = work.sweep
        result.reused += work.reused
        for done in work.results:
            self._finish_cell(done.cell, done.rows, done.seconds, manifest, result)
            result.cache_hits += done.cache_hits
        if isinstance(bar.total, int | float) and self.options.executor != "local":
            bar.update(self._n_batches(work.cell.dataset))

    def _record_group(self, facts: GroupFacts, manifest: dict) -> None:
        """Model quality on exactly the explained images, unreadable samples, predictions, gallery images."""
        key = (facts.dataset, facts.model)
        if key in self._recorded:
            return
        self._recorded.add(key)
        dk, mk = key
        info = facts.quality
        manifest["models"][f"{dk}/{mk}"] = info
        if facts.skipped:
            self.unreadable[f"{dk}/{mk}"] = facts.skipped
            manifest.setdefault("unreadable_samples", {})[f"{dk}/{mk}"] = facts.skipped
            self.log(f"{dk}/{mk}: skipped {len(facts.skipped)} unreadable sample(s), e.g. {facts.skipped[0][1]}")
        self.store.write_predictions(dk, mk, facts.predictions, {"model_info": info})
        if facts.gallery_images is not None:
            gallery.write_images(self.run_dir, dk, mk, facts.gallery_images)
        self.store.write_models_table(manifest["models"])
        self.store.write_manifest(manifest)
        f1 = f", macro-F1 {info['macro_f1']:.4f}" if "macro_f1" in info else ""
        no_target = f", {info['n_no_target']} without a target" if info["n_no_target"] else ""
        self.log(
            f"{dk}/{mk}: accuracy {info['accuracy']:.4f}{f1} on {info['n_scored']} of the {info['n']} sampled images "
            f"(target rule: {info['target_rule']}{no_target})"
        )

    def _finish_cell(self, cell: Cell, rows: Any, seconds: float, manifest: dict, result: RunResult) -> None:
        errors = rows.count("error")
        meta = {
            "cell": cell.identity,
            "metrics": cell.metric_identities,
            "dropped_metrics": cell.dropped_metrics,
            "errors": errors,
            "rows": len(rows),
            "seconds": round(seconds, 3),
            "finished": _now(),
        }
        self.store.write_cell(cell.cell_id, rows, meta)
        self.store.parts.clear(cell.cell_id)
        result.computed.append(cell.cell_id)
        if errors:
            result.failed[cell.cell_id] = errors
        state = "error" if errors else ("skipped" if rows.count("skipped") == len(rows) and len(rows) else "done")
        manifest["cells"][cell.cell_id] = {
            "dataset": cell.dataset,
            "model": cell.model,
            "explainer": cell.explainer,
            "status": state,
            "rows": len(rows),
            "errors": errors,
            "seconds": round(seconds, 3),
        }
        self.store.write_manifest(manifest)
        note = f", {errors} error rows" if errors else ""
        self.log(f"{cell.label}: {len(rows)} rows in {seconds:.1f} s{note}")
