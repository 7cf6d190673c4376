"""Run one cell on a prepared group: explain each batch once, score every metric on it.

Per batch, the attributions come from the attribution cache when every sample
is there, else from the explainer (timed, with its model passes counted and
its peak memory measured), and are then cached. Non-finite attributions become
error rows for their samples; every metric scores the same attributions; an
exception in the explainer or a metric becomes error rows for that batch and
the cell goes on. Finished batches are kept as parts, so an interrupted cell
resumes where it stopped. An out-of-memory error halves the batch and retries
(results are batch invariant, so the numbers do not change).
"""

from __future__ import annotations

import contextlib
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.attribution_cache import AttributionCache, CacheKey
from bench.cost import PassCounter, PeakMemory
from bench.errors import XbenchError
from bench.explainers.base import Explainer, ExplainerContext
from bench.group import Group, has_target
from bench.metrics.base import Metric, MetricInput, output_name
from bench.plan import Cell
from bench.seeding import short_digest
from bench.store import CellRows, PartStore
from bench.types import Batch, LoadedModel

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def error_text(exc: BaseException) -> str:
    """One line: the error and where it happened."""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    place = f" (at {Path(frame.filename).name}:{frame.lineno})" if frame else ""
    text = exc.render() if isinstance(exc, XbenchError) else f"{type(exc).__name__}: {exc}"
    return text + place


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


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def with_backoff(fn: Callable[[list[int]], Any], n: int, join: Callable[[list[Any]], Any]) -> Any:
    """``fn(positions)`` on all ``n`` positions; on out-of-memory, on halves (recursively), joined."""

    def attempt(positions: list[int]) -> Any:
        try:
            return fn(positions)
        except Exception as exc:
            if not is_oom(exc) or len(positions) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(positions) // 2
            return join([attempt(positions[:half]), attempt(positions[half:])])

    return attempt(list(range(n)))


@dataclass
class CellSettings:
    """What the cell executor needs from the suite and the run."""

    suite_name: str
    run_id: str
    seed: int
    device: torch.device
    warmup: bool = True
    precision: str = "fp32"


class CellExecutor:
    def __init__(
        self,
        settings: CellSettings,
        metrics: dict[str, Metric],
        *,
        cache: AttributionCache | None = None,
        parts: PartStore | None = None,
        gallery_ids: set[str] | None = None,
        log: Callable[[str], None] = print,
    ):
        self.s = settings
        self.metrics = metrics
        self.cache = cache
        self.parts = parts
        self.gallery_ids = gallery_ids or set()
        self.log = log
        self.cache_hits = 0

    # ------------------------------------------------------------ rows

    def rows_for(self, cell: Cell, explainer: Explainer) -> CellRows:
        return CellRows(
            constants={
                "suite": self.s.suite_name,
                "run_id": self.s.run_id,
                "cell_id": cell.cell_id,
                "dataset": cell.dataset,
                "model": cell.model,
                "explainer": cell.explainer,
                "explainer_name": explainer.name,
                "explainer_version": explainer.version,
                "explainer_params": json.dumps(explainer.params.model_dump(mode="json"), sort_keys=True),
            }
        )

    def metric_columns(self, metric_key: str, output: str) -> dict[str, Any]:
        metric = self.metrics[metric_key]
        return {
            "metric": output_name(metric_key, output),
            "metric_name": metric.name,
            "metric_version": metric.version,
            "metric_params": json.dumps(metric.params.model_dump(mode="json"), sort_keys=True),
            "higher_is_better": metric.outputs[output].higher_is_better,
        }

    def add_status(
        self, rows: CellRows, metric_keys: tuple[str, ...], samples: list[dict], message: str, status: str
    ) -> None:
        """NaN rows for every output of the metrics and samples, with the status and the reason."""
        for metric_key in metric_keys:
            for output in self.metrics[metric_key].outputs:
                columns = self.metric_columns(metric_key, output)
                for sample in samples:
                    rows.add(columns, sample, float("nan"), status, message)

    # ------------------------------------------------------------ the cell

    def run(
        self, cell: Cell, explainer: Explainer, group: Group, cache_key: CacheKey | None, tick: Callable[[], None]
    ) -> CellRows:
        rows = self.rows_for(cell, explainer)
        reason = explainer.supports(group.model)
        fatal = None if reason is not None else self._prepare(explainer, group)
        if reason is None and fatal is None and self.s.warmup:
            fatal = self._warmup(explainer, group, cache_key)
        for positions, batch in group.batches(self.s.device):
            samples = group.sample_columns(positions)
            part_key = short_digest([s["sample_id"] for s in samples], 16)
            if self.parts is not None and (done := self.parts.read(cell.cell_id, part_key)) is not None:
                rows.extend(done)  # finished before an interruption
            elif reason is not None or fatal is not None:
                status = "skipped" if reason is not None else "error"
                self.add_status(rows, cell.metrics, samples, reason or fatal, status)
            else:
                part = self.rows_for(cell, explainer)
                fatal = self._run_batch(cell, explainer, group.model, batch, samples, part, cache_key)
                if self.parts is not None and fatal is None:
                    self.parts.write(cell.cell_id, part_key, part)
                rows.extend(part)
            tick()
        return rows

    def _prepare(self, explainer: Explainer, group: Group) -> str | None:
        ctx = ExplainerContext(
            model=group.model,
            device=self.s.device,
            seed=self.s.seed,
            background=lambda n: group.background(n, self.s.seed, self.s.device),
            log=self.log,
        )
        try:
            explainer.prepare(ctx)
        except Exception as exc:  # noqa: BLE001 - the cell fails with the reason, the run goes on
            return error_text(exc)
        return None

    def _warmup(self, explainer: Explainer, group: Group, cache_key: CacheKey | None) -> str | None:
        """One untimed call on two images (lazy initialisation, allocator warm-up), unless the
        cell's attributions are all cached. A configuration error found here fails the cell."""
        _, first = next(iter(group.batches(self.s.device)))
        columns = group.sample_columns(range(len(first)))
        targeted = has_target(columns)[:2]
        if not targeted:
            return None
        head = first.select(targeted)
        try:
            with self._autocast():
                explainer.explain(group.model, head.x, head.target, [columns[j]["seed"] for j in targeted])
        except XbenchError as exc:
            return error_text(exc)
        except Exception:  # noqa: BLE001 - per-batch handling will record it precisely
            return None
        return None

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.s.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.s.device.type, dtype=dtype)

    # ------------------------------------------------------------ a batch

    def _attributions(
        self, explainer: Explainer, model: LoadedModel, batch: Batch, samples: list[dict], key: CacheKey | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(attributions, per-image cost): from the cache when every sample is there, else explained."""
        ids = [s["sample_id"] for s in samples]
        seeds = [s["seed"] for s in samples]
        targets = [s["target"] for s in samples]
        if self.cache is not None and key is not None:
            hit = self.cache.get(key, ids, seeds, targets)
            if hit is not None:
                self.cache_hits += len(ids)
                maps, costs = hit
                return torch.from_numpy(maps).to(batch.x.device), {k: torch.from_numpy(v) for k, v in costs.items()}

        def explain(positions: list[int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            part = batch if len(positions) == len(samples) else batch.select(positions)
            chosen = [seeds[i] for i in positions]
            with PassCounter(model.module) as passes, PeakMemory(self.s.device) as memory, self._autocast():
                attr, seconds = timed(lambda: explainer.explain(model, part.x, part.target, chosen), self.s.device)
            n = len(positions)
            cost = {
                "seconds": torch.full((n,), seconds / n, dtype=torch.float64),
                "forward_images": torch.full((n,), passes.forward_images / n, dtype=torch.float64),
                "backward_images": torch.full((n,), passes.backward_images / n, dtype=torch.float64),
                "peak_memory_mb": torch.full((n,), memory.peak_mb, dtype=torch.float64),
            }
            return attr.float(), cost

        def join(parts: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, dict]:
            return torch.cat([p[0] for p in parts]), {k: torch.cat([p[1][k] for p in parts]) for k in parts[0][1]}

        attr, cost = with_backoff(explain, len(samples), join)
        if self.cache is not None and key is not None and torch.isfinite(attr).all():
            self.cache.put(
                key, ids, seeds, targets, attr.detach().cpu().numpy(), {k: v.numpy() for k, v in cost.items()}
            )
        return attr, cost

    def _run_batch(
        self,
        cell: Cell,
        explainer: Explainer,
        model: LoadedModel,
        batch: Batch,
        samples: list[dict],
        rows: CellRows,
        key: CacheKey | None,
    ) -> str | None:
        """Explain and score one batch; returns an error text that should stop the cell, if any."""
        targeted = has_target(samples)
        untargeted = [samples[j] for j in range(len(samples)) if j not in set(targeted)]
        for sample in untargeted:
            self.add_status(rows, cell.metrics, [sample], sample["no_target_reason"], "skipped")
        if not targeted:
            return None
        if len(targeted) != len(samples):
            batch, samples = batch.select(targeted), [samples[j] for j in targeted]
        try:
            attr, cost = self._attributions(explainer, model, batch, samples, key)
        except Exception as exc:  # noqa: BLE001 - recorded as rows, the run goes on
            message = error_text(exc)
            self.add_status(rows, cell.metrics, samples, message, "error")
            return message if isinstance(exc, XbenchError) else None
        finite = torch.isfinite(attr.flatten(1)).all(dim=1).cpu()
        for j, sample in enumerate(samples):
            if sample["sample_id"] in self.gallery_ids and finite[j]:
                rows.gallery.append((sample["sample_id"], attr[j, 0].detach().cpu().numpy()))
        bad = [samples[i] for i in range(len(samples)) if not finite[i]]
        self.add_status(rows, cell.metrics, bad, "explainer returned non-finite attributions", "error")
        keep = finite.nonzero().squeeze(1).tolist()
        if keep:
            whole = len(keep) == len(samples)
            sub = batch if whole else batch.select(keep)
            kept = samples if whole else [samples[i] for i in keep]
            attr = attr if whole else attr[keep]
            cost = cost if whole else {k: v[keep] for k, v in cost.items()}
            for metric_key in cell.metrics:
                self._score(metric_key, model, explainer, sub, attr, cost, kept, rows)
        return None

    def _score(
        self,
        metric_key: str,
        model: LoadedModel,
        explainer: Explainer,
        batch: Batch,
        attr: torch.Tensor,
        cost: dict[str, torch.Tensor],
        samples: list[dict],
        rows: CellRows,
    ) -> None:
        metric = self.metrics[metric_key]

        def score(positions: list[int]):
            whole = len(positions) == len(samples)
            with self._autocast():
                return metric.score(
                    MetricInput(
                        model=model,
                        batch=batch if whole else batch.select(positions),
                        attributions=attr if whole else attr[positions],
                        seeds=[samples[i]["seed"] for i in positions],
                        explainer=explainer,
                        cost={k: v if whole else v[positions] for k, v in cost.items()},
                    )
                )

        try:
            scores = with_backoff(score, len(samples), _join_scores)
        except Exception as exc:  # noqa: BLE001 - a failing metric fails its rows only
            self.add_status(rows, (metric_key,), samples, error_text(exc), "error")
            return
        reasons = scores.reasons or [None] * len(samples)
        for output, values in scores.values.items():
            columns = self.metric_columns(metric_key, output)
            for sample, value, reason in zip(samples, values.detach().double().cpu().tolist(), reasons, strict=True):
                nan = value != value
                rows.add(columns, sample, value, "nan" if nan else "ok", (reason or "undefined") if nan else None)
        for output, curves in scores.curves.items():
            name = output_name(metric_key, output)
            for sample, curve in zip(samples, curves.detach().float().cpu().tolist(), strict=True):
                rows.add_curve(name, sample["sample_id"], curve)


def _join_scores(parts: list[Any]) -> Any:
    """Concatenate the Scores of two halves of a batch (after an out-of-memory back-off)."""
    from bench.metrics.base import Scores

    first = parts[0]
    reasons = None
    if any(p.reasons for p in parts):
        reasons = [r for p in parts for r in (p.reasons or [None] * len(next(iter(p.values.values()))))]
    return Scores(
        values={k: torch.cat([p.values[k] for p in parts]) for k in first.values},
        curves={k: _cat_curves([p.curves[k] for p in parts]) for k in first.curves},
        reasons=reasons,
    )


def _cat_curves(curves: list[torch.Tensor]) -> torch.Tensor:
    width = max(c.shape[1] for c in curves)
    padded = [torch.nn.functional.pad(c, (0, width - c.shape[1]), value=float("nan")) for c in curves]
    return torch.cat(padded)
