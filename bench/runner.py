"""Execute a suite: load each model once, explain each batch once, score every metric on it.

For each (dataset, model) group the runner samples images (stratified, seeded),
loads the model, records its predictions, then runs every pending cell of the
group: per batch it times the explainer, checks the attributions, scores all
metrics on the same attributions, and finally writes the cell atomically. A
finished cell is not recomputed unless ``force``; a cell that recorded errors
is retried on the next run. An exception inside a cell becomes status=error
rows and the run goes on.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bench import gallery
from bench.config import Suite
from bench.cost import PassCounter, PeakMemory
from bench.datasets.base import Dataset, stratified_sample
from bench.environment import environment, resolve_device
from bench.errors import XbenchError
from bench.explainers.base import Explainer, ExplainerContext
from bench.group import Group, has_target, prepare_group
from bench.metrics.base import Metric, MetricInput, output_name
from bench.models.base import ModelContext
from bench.plan import Cell, build_plan
from bench.preflight import preflight
from bench.seeding import sample_seeds
from bench.store import SCHEMA_VERSION, CellRows, RunStore
from bench.types import Batch, LoadedModel, SampleRef


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _error_text(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    place = f" (at {Path(frame.filename).name}:{frame.lineno})" if frame else ""
    text = exc.render() if isinstance(exc, XbenchError) else f"{type(exc).__name__}: {exc}"
    return text + place


@dataclass
class RunOptions:
    output: Path | None = None
    run_id: str | None = None
    force: bool = False
    progress: bool | None = None  # None: a progress bar when stderr is a terminal
    log: Callable[[str], None] = field(default=lambda msg: tqdm.write(msg, file=sys.stderr))


@dataclass
class RunResult:
    run_dir: Path
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=dict)  # cell id -> error rows

    @property
    def ok(self) -> bool:
        return not self.failed


def timed(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, float]:
    """Run ``fn`` and return (result, seconds): CUDA events around it on GPU, wall clock on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize(device)
        return out, start.elapsed_time(end) / 1000.0
    begin = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - begin


class Runner:
    def __init__(self, suite: Suite, options: RunOptions | None = None):
        self.suite = suite
        self.options = options or RunOptions()
        self.cfg = suite.config
        self.run_dir, self.run_id = suite.run_location(self.options.output, self.options.run_id)
        self.store = RunStore(self.run_dir)
        self.device = resolve_device(self.cfg.device)
        self.log = self.options.log
        self._refs: dict[str, list[SampleRef]] = {}
        self.unreadable: dict[str, list[tuple[str, str]]] = {}  # "dataset/model" -> (sample id, reason)
        self._gallery: set[str] = set()  # sample ids whose attributions are kept for reports

    # ------------------------------------------------------------ top level

    def run(self) -> RunResult:
        cells = build_plan(self.suite)
        preflight(self.suite, self.run_dir, keep_output=True, from_cli=self.options.output is not None)
        self.store.prepare()
        manifest = self._start_manifest(cells)
        result = RunResult(self.run_dir)
        pending = [c for c in cells if self.options.force or not self._complete(c, manifest)]
        result.reused = [c.cell_id for c in cells if c not in pending]
        if result.reused:
            self.log(f"reusing {len(result.reused)} finished cell(s) in {self.run_dir} (use --force to recompute)")
        total_batches = sum(self._n_batches(c.dataset) for c in pending)
        bar = tqdm(total=total_batches, unit="batch", disable=self._progress_disabled(), dynamic_ncols=True)
        invocation = manifest["invocations"][-1]
        try:
            for (dk, mk), group in self._groups(pending).items():
                self._run_group(dk, mk, group, result, manifest, bar)
            invocation["status"] = "finished"
        except BaseException:
            invocation["status"] = "interrupted"
            raise
        finally:
            bar.close()
            invocation.update(finished=_now(), computed=len(result.computed), reused=len(result.reused))
            self.store.write_manifest(manifest)
        return result

    def _progress_disabled(self) -> bool:
        if self.options.progress is None:
            return not sys.stderr.isatty()
        return not self.options.progress

    def _groups(self, cells: list[Cell]) -> dict[tuple[str, str], list[Cell]]:
        groups: dict[tuple[str, str], list[Cell]] = {}
        for cell in cells:
            groups.setdefault((cell.dataset, cell.model), []).append(cell)
        return groups

    def _complete(self, cell: Cell, manifest: dict | None = None) -> bool:
        """A stored cell counts as done when it holds every planned metric, unchanged, and no errors.
        A sweep (one entry standing for several explainers) is done when all its variants are."""
        if self.suite.explainers[cell.explainer].sweeps() and manifest is not None:
            variants = manifest.get("sweeps", {}).get(cell.cell_id)
            return bool(variants) and all(self._complete(self._variant(cell, v)) for v in variants)
        meta = self.store.cell_metadata(cell.cell_id)
        if not meta or meta.get("errors", 1) > 0:
            return False
        stored = meta.get("metrics", {})
        return all(stored.get(k) == json.loads(json.dumps(v)) for k, v in cell.metric_identities.items())

    def _sample_refs(self, dk: str) -> list[SampleRef]:
        """The benchmark's samples of dataset ``dk`` (stratified by class, seeded)."""
        if dk not in self._refs:
            dataset = self.suite.datasets[dk]
            refs = stratified_sample(dataset.index(dataset.eval_split), self.cfg.samples_for(dk), self.cfg.seed)
            self._refs[dk] = refs
        return self._refs[dk]

    def _n_batches(self, dk: str) -> int:
        """Batches of a dataset's sample (an estimate for the progress bar: unreadable images shorten it)."""
        return -(-len(self._sample_refs(dk)) // self.cfg.batch_size)

    # ------------------------------------------------------------ manifest

    def _start_manifest(self, cells: list[Cell]) -> dict[str, Any]:
        manifest = self.store.read_manifest()
        suite_text = self.suite.path.read_text(encoding="utf-8")
        manifest.update(
            schema_version=SCHEMA_VERSION,
            run_id=self.run_id,
            suite_name=self.suite.name,
            suite_path=str(self.suite.path),
            suite_yaml=suite_text,
            suite=self.cfg.model_dump(mode="json"),
            environment=environment(self.device),
        )
        manifest.setdefault("invocations", []).append(
            {"started": _now(), "argv": sys.argv, "force": self.options.force, "status": "running"}
        )
        manifest.setdefault("cells", {})
        manifest.setdefault("models", {})
        for cell in cells:
            manifest["cells"].setdefault(
                cell.cell_id,
                {"dataset": cell.dataset, "model": cell.model, "explainer": cell.explainer, "status": "pending"},
            )
        self.store.write_manifest(manifest)
        return manifest

    # ------------------------------------------------------------ groups

    def _run_group(self, dk: str, mk: str, cells: list[Cell], result: RunResult, manifest: dict, bar: tqdm) -> None:
        dataset: Dataset = self.suite.datasets[dk]
        refs = self._sample_refs(dk)
        seeds = dict(zip([r.id for r in refs], sample_seeds(self.cfg.seed, [r.id for r in refs]), strict=True))
        try:
            self.suite.models[mk].check(dataset)
            model = self.suite.models[mk].load(ModelContext(dataset=dataset, device=self.device, log=self.log))
            group = prepare_group(
                dataset,
                model,
                refs,
                seeds,
                target_rule=self.cfg.target,
                batch_size=self.cfg.batch_size,
                device=self.device,
            )
        except Exception as exc:  # noqa: BLE001 - a broken model fails its cells, not the run
            message = _error_text(exc)
            self.log(f"{dk}/{mk}: cannot prepare the model: {message}")
            samples = [{"sample_id": r.id, "label": r.label, "seed": seeds[r.id]} for r in refs]
            for cell in cells:
                rows = self._rows(cell, self.suite.explainers[cell.explainer])
                for metric_key in cell.metrics:
                    for sample in samples:
                        self._add_error(rows, metric_key, sample, message)
                self._finish_cell(cell, rows, result, manifest, seconds=0.0)
                bar.update(self._n_batches(dk))
            return
        self._record_group(dk, mk, group, manifest)
        self._gallery = {group.refs[i].id for i in gallery.choose(group, self.cfg.gallery)}
        if self._gallery:
            positions = [i for i, r in enumerate(group.refs) if r.id in self._gallery]
            gallery.write_images(self.run_dir, dk, mk, group, positions)
        for cell in cells:
            variants = self.suite.explainers[cell.explainer].expand(model)
            if variants == [("", self.suite.explainers[cell.explainer])]:
                self._run_cell(cell, self.suite.explainers[cell.explainer], group, result, manifest, bar)
                continue
            manifest.setdefault("sweeps", {})[cell.cell_id] = [suffix for suffix, _ in variants]
            bar.total += group.n_batches * (len(variants) - 1)
            for suffix, explainer in variants:
                variant = self._variant(cell, suffix)
                if self.options.force or not self._complete(variant):
                    self._run_cell(variant, explainer, group, result, manifest, bar)
                else:
                    result.reused.append(variant.cell_id)
                    bar.update(group.n_batches)

    @staticmethod
    def _variant(cell: Cell, suffix: str) -> Cell:
        """The cell of one variant of a sweep (e.g. one layer of ``layer: all_conv``)."""
        return replace(cell, explainer=f"{cell.explainer}@{suffix}", identity={**cell.identity, "variant": suffix})

    def _record_group(self, dk: str, mk: str, group: Group, manifest: dict) -> None:
        """Model quality on exactly the explained images, unreadable samples, predictions table."""
        info = {**group.quality(), **{k: v for k, v in group.model.info.items() if k != "key"}}
        manifest["models"][f"{dk}/{mk}"] = info
        if group.skipped:
            self.unreadable[f"{dk}/{mk}"] = group.skipped
            manifest.setdefault("unreadable_samples", {})[f"{dk}/{mk}"] = group.skipped
            self.log(f"{dk}/{mk}: skipped {len(group.skipped)} unreadable sample(s), e.g. {group.skipped[0][1]}")
        self.store.write_predictions(dk, mk, group.predictions_frame(dk, mk), {"model_info": info})
        self.store.write_models_table(manifest["models"])
        self.store.write_manifest(manifest)
        f1 = f", macro-F1 {info['macro_f1']:.4f}" if "macro_f1" in info else ""
        no_target = f", {info['n_no_target']} without a target" if info["n_no_target"] else ""
        self.log(
            f"{dk}/{mk}: accuracy {info['accuracy']:.4f}{f1} on {info['n_scored']} of the {info['n']} sampled images "
            f"(target rule: {group.plan.rule}{no_target})"
        )

    # ------------------------------------------------------------ cells

    def _rows(self, cell: Cell, explainer: Explainer) -> CellRows:
        return CellRows(
            constants={
                "suite": self.suite.name,
                "run_id": self.run_id,
                "cell_id": cell.cell_id,
                "dataset": cell.dataset,
                "model": cell.model,
                "explainer": cell.explainer,
                "explainer_name": explainer.name,
                "explainer_version": explainer.version,
                "explainer_params": json.dumps(explainer.params.model_dump(mode="json"), sort_keys=True),
            }
        )

    def _metric_columns(self, metric_key: str, output: str) -> dict[str, Any]:
        metric: Metric = self.suite.metrics[metric_key]
        return {
            "metric": output_name(metric_key, output),
            "metric_name": metric.name,
            "metric_version": metric.version,
            "metric_params": json.dumps(metric.params.model_dump(mode="json"), sort_keys=True),
            "higher_is_better": metric.outputs[output].higher_is_better,
        }

    def _add_error(self, rows: CellRows, metric_key: str, sample: dict, message: str, status: str = "error") -> None:
        """NaN rows for every output of a metric, with the status and the reason."""
        for output in self.suite.metrics[metric_key].outputs:
            rows.add(self._metric_columns(metric_key, output), sample, float("nan"), status, message)

    def _run_cell(
        self, cell: Cell, explainer: Explainer, group: Group, result: RunResult, manifest: dict, bar: tqdm
    ) -> None:
        model = group.model
        rows = self._rows(cell, explainer)
        bar.set_description(cell.label)
        started = time.perf_counter()
        reason = explainer.supports(model)
        fatal: str | None = None
        if reason is None:
            fatal = self._prepare_explainer(explainer, group)
        if reason is None and fatal is None and self.cfg.warmup:
            fatal = self._warmup(explainer, group)
        for positions, batch in group.batches(self.device):
            samples = group.sample_columns(positions)
            if reason is not None or fatal is not None:
                status = "skipped" if reason is not None else "error"
                for metric_key in cell.metrics:
                    for sample in samples:
                        self._add_error(rows, metric_key, sample, reason or fatal, status)
            else:
                targeted = has_target(samples)
                for j in sorted(set(range(len(samples))) - set(targeted)):
                    for metric_key in cell.metrics:
                        self._add_error(rows, metric_key, samples[j], samples[j]["no_target_reason"], "skipped")
                if targeted:
                    whole = len(targeted) == len(samples)
                    sub, kept = (batch, samples) if whole else (batch.select(targeted), [samples[j] for j in targeted])
                    fatal = self._run_batch(cell, explainer, model, sub, kept, rows)
            bar.update(1)
        self._finish_cell(cell, rows, result, manifest, seconds=time.perf_counter() - started)

    def _prepare_explainer(self, explainer: Explainer, group: Group) -> str | None:
        """``explainer.prepare`` with this cell's context; an error text fails the cell."""
        ctx = ExplainerContext(
            model=group.model,
            device=self.device,
            seed=self.cfg.seed,
            background=lambda n: group.background(n, self.cfg.seed, self.device),
            log=self.log,
        )
        try:
            explainer.prepare(ctx)
        except Exception as exc:  # noqa: BLE001 - the cell fails with the reason, the run goes on
            return _error_text(exc)
        return None

    def _warmup(self, explainer: Explainer, group: Group) -> str | None:
        """One untimed call on two images (lazy initialisation, allocator warm-up). A
        configuration error found here fails the whole cell at once."""
        _, first = next(iter(group.batches(self.device)))
        targeted = has_target(group.sample_columns(range(len(first))))[:2]
        if not targeted:
            return None
        head = first.select(targeted)
        try:
            explainer.explain(group.model, head.x, head.target, [0] * len(head))
        except XbenchError as exc:
            return _error_text(exc)
        except Exception:  # noqa: BLE001 - per-batch handling will record it precisely
            return None
        return None

    def _run_batch(
        self, cell: Cell, explainer: Explainer, model: LoadedModel, batch: Batch, samples: list[dict], rows: CellRows
    ) -> str | None:
        """Explain and score one batch; returns an error text that should stop the cell, if any."""
        seeds = [s["seed"] for s in samples]
        try:
            with PassCounter(model.module) as passes, PeakMemory(self.device) as memory:
                attr, seconds = timed(lambda: explainer.explain(model, batch.x, batch.target, seeds), self.device)
        except Exception as exc:  # noqa: BLE001 - recorded as rows, the run goes on
            message = _error_text(exc)
            for metric_key in cell.metrics:
                for sample in samples:
                    self._add_error(rows, metric_key, sample, message)
            return message if isinstance(exc, XbenchError) else None
        finite = torch.isfinite(attr.flatten(1)).all(dim=1).cpu()
        for j, sample in enumerate(samples):
            if sample["sample_id"] in self._gallery and finite[j]:
                rows.gallery.append((sample["sample_id"], attr[j, 0].detach().cpu().numpy()))
        keep = finite.nonzero().squeeze(1).tolist()
        bad = [i for i in range(len(samples)) if not finite[i]]
        n = max(len(samples), 1)
        per_image = {
            name: torch.full((len(samples),), value / (n if name != "peak_memory_mb" else 1), dtype=torch.float64)
            for name, value in (
                ("seconds", seconds),
                ("forward_images", passes.forward_images),
                ("backward_images", passes.backward_images),
                ("peak_memory_mb", memory.peak_mb),
            )
        }
        for metric_key in cell.metrics:
            for i in bad:
                self._add_error(rows, metric_key, samples[i], "explainer returned non-finite attributions")
            if keep:
                self._score(metric_key, model, explainer, batch, attr, per_image, samples, keep, rows)
        return None

    def _score(
        self,
        metric_key: str,
        model: LoadedModel,
        explainer: Explainer,
        batch: Batch,
        attr: torch.Tensor,
        per_image: dict[str, torch.Tensor],
        samples: list[dict],
        keep: list[int],
        rows: CellRows,
    ) -> None:
        metric: Metric = self.suite.metrics[metric_key]
        whole = len(keep) == len(samples)
        sub = batch if whole else batch.select(keep)
        kept = samples if whole else [samples[i] for i in keep]
        try:
            scores = metric.score(
                MetricInput(
                    model=model,
                    batch=sub,
                    attributions=attr if whole else attr[keep],
                    seeds=[s["seed"] for s in kept],
                    explainer=explainer,
                    cost={k: v if whole else v[keep] for k, v in per_image.items()},
                )
            )
        except Exception as exc:  # noqa: BLE001 - a failing metric fails its rows only
            message = _error_text(exc)
            for sample in kept:
                self._add_error(rows, metric_key, sample, message)
            return
        reasons = scores.reasons or [None] * len(kept)
        for output, values in scores.values.items():
            columns = self._metric_columns(metric_key, output)
            for sample, value, reason in zip(kept, values.detach().double().cpu().tolist(), reasons, strict=True):
                nan = value != value
                rows.add(columns, sample, value, "nan" if nan else "ok", (reason or "undefined") if nan else None)
        for output, curves in scores.curves.items():
            name = output_name(metric_key, output)
            for sample, curve in zip(kept, curves.detach().float().cpu().tolist(), strict=True):
                rows.add_curve(name, sample["sample_id"], curve)

    def _finish_cell(self, cell: Cell, rows: CellRows, result: RunResult, manifest: dict, seconds: float) -> None:
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
