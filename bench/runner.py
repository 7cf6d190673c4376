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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from bench.config import Suite
from bench.datasets.base import Dataset, stratified_sample
from bench.environment import environment, resolve_device
from bench.errors import XbenchError
from bench.explainers.base import Explainer
from bench.metrics.base import Metric, MetricInput, output_name
from bench.models.base import ModelContext
from bench.plan import Cell, build_plan
from bench.preflight import preflight
from bench.seeding import sample_seeds
from bench.store import SCHEMA_VERSION, CellRows, RunStore
from bench.types import Batch, LoadedModel, SampleRef

BATCH_CACHE_BYTES = 1 << 30  # keep a group's images in memory up to this size


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


@dataclass
class Predictions:
    """The model's view of the sampled images of one group, in sample order."""

    refs: list[SampleRef]
    prediction: torch.Tensor
    target: torch.Tensor
    confidence: torch.Tensor

    def sample_columns(self, positions: range, seeds: list[int]) -> list[dict[str, Any]]:
        return [
            {
                "sample_id": self.refs[i].id,
                "label": self.refs[i].label,
                "target": int(self.target[i]),
                "prediction": int(self.prediction[i]),
                "correct": bool(self.prediction[i] == self.refs[i].label),
                "seed": seeds[j],
            }
            for j, i in enumerate(positions)
        ]


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
        self.run_dir = Path(self.options.output) if self.options.output else suite.output_dir
        self.run_id = self.run_dir.resolve().name
        self.store = RunStore(self.run_dir)
        self.device = resolve_device(self.cfg.device)
        self.log = self.options.log
        self._refs: dict[str, list[SampleRef]] = {}

    # ------------------------------------------------------------ top level

    def run(self) -> RunResult:
        cells = build_plan(self.suite)
        preflight(self.suite, self.options.output, keep_output=True)
        self.store.prepare()
        manifest = self._start_manifest(cells)
        result = RunResult(self.run_dir)
        pending = [c for c in cells if self.options.force or not self._complete(c)]
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

    def _complete(self, cell: Cell) -> bool:
        """A stored cell counts as done when it holds every planned metric, unchanged, and no errors."""
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
        seeds = sample_seeds(self.cfg.seed, [r.id for r in refs])
        try:
            self.suite.models[mk].check(dataset)
            model = self.suite.models[mk].load(ModelContext(dataset=dataset, device=self.device, log=self.log))
            batches = self._batches(dataset, refs, model)
            preds = self._predict(model, batches, refs)
        except Exception as exc:  # noqa: BLE001 - a broken model fails its cells, not the run
            message = _error_text(exc)
            self.log(f"{dk}/{mk}: cannot prepare the model: {message}")
            for cell in cells:
                rows = self._rows(cell)
                for metric_key in cell.metrics:
                    for sample in [
                        {"sample_id": r.id, "label": r.label, "seed": s} for r, s in zip(refs, seeds, strict=True)
                    ]:
                        self._add_error(rows, metric_key, sample, message)
                self._finish_cell(cell, rows, result, manifest, seconds=0.0)
                bar.update(self._n_batches(dk))
            return
        self._record_model(dk, mk, model, preds, manifest)
        for cell in cells:
            self._run_cell(cell, model, batches, preds, seeds, result, manifest, bar)

    def _batches(
        self, dataset: Dataset, refs: list[SampleRef], model: LoadedModel
    ) -> Callable[[], Iterator[tuple[range, Batch]]]:
        """A re-iterable source of (positions, batch) on the device; kept in memory when small."""
        size = self.cfg.batch_size
        split = dataset.eval_split
        chunks = [range(i, min(i + size, len(refs))) for i in range(0, len(refs), size)]
        cache: list[Batch] = []

        def load(positions: range) -> Batch:
            return dataset.load([refs[i] for i in positions], split).to(self.device)

        def iterate() -> Iterator[tuple[range, Batch]]:
            if cache:
                yield from zip(chunks, cache, strict=True)
                return
            loaded, nbytes = [], 0
            for positions in chunks:
                batch = load(positions)
                nbytes += batch.x.element_size() * batch.x.nelement()
                if nbytes <= BATCH_CACHE_BYTES:
                    loaded.append(batch)
                yield positions, batch
            if len(loaded) == len(chunks):
                cache.extend(loaded)

        return iterate

    @torch.no_grad()
    def _predict(self, model: LoadedModel, batches: Callable, refs: list[SampleRef]) -> Predictions:
        preds, confs = [], []
        for _, batch in batches():
            probs = model(batch.x).float().softmax(1)
            conf, pred = probs.max(1)
            preds.append(pred.cpu())
            confs.append(conf.cpu())
        prediction = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
        labels = torch.tensor([r.label for r in refs], dtype=torch.long)
        target = prediction.clone() if self.cfg.target == "predicted" else labels
        return Predictions(refs, prediction, target, torch.cat(confs) if confs else torch.empty(0))

    def _record_model(self, dk: str, mk: str, model: LoadedModel, preds: Predictions, manifest: dict) -> None:
        labels = torch.tensor([r.label for r in preds.refs])
        correct = (preds.prediction == labels).float()
        accuracy = float(correct.mean()) if len(labels) else float("nan")
        info = {"accuracy": accuracy, "n": len(labels), **{k: v for k, v in model.info.items() if k != "key"}}
        manifest["models"][f"{dk}/{mk}"] = info
        frame = pd.DataFrame(
            {
                "dataset": dk,
                "model": mk,
                "sample_id": [r.id for r in preds.refs],
                "label": labels.numpy(),
                "prediction": preds.prediction.numpy(),
                "target": preds.target.numpy(),
                "correct": correct.bool().numpy(),
                "confidence": preds.confidence.numpy(),
            }
        )
        self.store.write_predictions(dk, mk, frame, {"model_info": info})
        self.store.write_manifest(manifest)
        self.log(f"{dk}/{mk}: accuracy {accuracy:.4f} on the {len(labels)} sampled images")

    # ------------------------------------------------------------ cells

    def _rows(self, cell: Cell) -> CellRows:
        explainer: Explainer = self.suite.explainers[cell.explainer]
        return CellRows(
            constants={
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
        self,
        cell: Cell,
        model: LoadedModel,
        batches: Callable,
        preds: Predictions,
        seeds: list[int],
        result: RunResult,
        manifest: dict,
        bar: tqdm,
    ) -> None:
        explainer: Explainer = self.suite.explainers[cell.explainer]
        rows = self._rows(cell)
        bar.set_description(cell.label)
        started = time.perf_counter()
        reason = explainer.supports(model)
        fatal: str | None = None
        if reason is None and self.cfg.warmup:
            fatal = self._warmup(explainer, model, batches, preds)
        for positions, batch in batches():
            samples = preds.sample_columns(positions, [seeds[i] for i in positions])
            if reason is not None or fatal is not None:
                status = "skipped" if reason is not None else "error"
                for metric_key in cell.metrics:
                    for sample in samples:
                        self._add_error(rows, metric_key, sample, reason or fatal, status)
            else:
                batch.target = preds.target[positions.start : positions.stop].to(self.device)
                fatal = self._run_batch(cell, explainer, model, batch, samples, rows)
            bar.update(1)
        self._finish_cell(cell, rows, result, manifest, seconds=time.perf_counter() - started)

    def _warmup(self, explainer: Explainer, model: LoadedModel, batches: Callable, preds: Predictions) -> str | None:
        """One untimed call on two images (lazy initialisation, allocator warm-up). A
        configuration error found here fails the whole cell at once."""
        _, first = next(iter(batches()))
        head = first.select(slice(0, 2))
        try:
            explainer.explain(model, head.x, preds.target[: len(head)].to(self.device), [0] * len(head))
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
            attr, seconds = timed(lambda: explainer.explain(model, batch.x, batch.target, seeds), self.device)
        except Exception as exc:  # noqa: BLE001 - recorded as rows, the run goes on
            message = _error_text(exc)
            for metric_key in cell.metrics:
                for sample in samples:
                    self._add_error(rows, metric_key, sample, message)
            return message if isinstance(exc, XbenchError) else None
        finite = torch.isfinite(attr.flatten(1)).all(dim=1).cpu()
        keep = finite.nonzero().squeeze(1).tolist()
        bad = [i for i in range(len(samples)) if not finite[i]]
        per_image = torch.full((len(samples),), seconds / max(len(samples), 1), dtype=torch.float64)
        for metric_key in cell.metrics:
            for i in bad:
                self._add_error(rows, metric_key, samples[i], "explainer returned non-finite attributions")
            if keep:
                self._score(metric_key, model, batch, attr, per_image, samples, keep, rows)
        return None

    def _score(
        self,
        metric_key: str,
        model: LoadedModel,
        batch: Batch,
        attr: torch.Tensor,
        per_image: torch.Tensor,
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
                    seconds_per_image=per_image if whole else per_image[keep],
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
