"""Run one cell on a prepared group: explain each batch once, score every metric on it.

Per batch, the attributions come from the attribution cache when every sample
is there, else from the explainer (timed, with its model passes counted and
its peak memory measured), and are then cached. Non-finite attributions become
error rows for their samples; every metric scores the same attributions; an
exception in the explainer or a metric becomes error rows for that batch and
the cell goes on. Each finished batch is yielded as an event (the driver keeps
it as a part, so an interrupted cell resumes where it stopped); batches already
on disk are skipped. An out-of-memory error halves the batch and retries
(results are batch invariant, so the numbers do not change).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from bench.attribution_cache import AttributionCache, CacheKey
from bench.cards import MetricCard
from bench.cost import PassCounter, PeakMemory
from bench.errors import XbenchError
from bench.explainers.base import Explainer, ExplainerContext
from bench.group import Group
from bench.guards import Backoff, error_text, timed
from bench.metrics.base import Metric, MetricInput, Scores
from bench.plan import Cell
from bench.seeding import short_digest
from bench.store.schema import CellColumns, CellRows, SampleColumns
from bench.tasks import BatchDone, CellDone, add_status, metric_columns
from bench.types import Batch, LoadedModel

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class CellSettings:
    """What the cell executor needs from the run."""

    seed: int
    device: torch.device
    warmup: bool = True
    precision: str = "fp32"


def batch_key(samples: list[SampleColumns]) -> str:
    """The name of a batch's part: a digest of its sample ids."""
    return short_digest([s.sample_id for s in samples], 16)


class CellExecutor:
    def __init__(
        self,
        settings: CellSettings,
        metrics: dict[str, Metric],
        cards: dict[str, MetricCard],
        *,
        cache: AttributionCache | None = None,
        gallery_ids: set[str] | None = None,
        log: Callable[[str], None] = print,
        should_stop: Callable[[], bool] = lambda: False,
    ):
        self.s = settings
        self.metrics = metrics
        self.cards = cards
        self.cache = cache
        self.gallery_ids = gallery_ids or set()
        self.log = log
        self.should_stop = should_stop
        self.cache_hits = 0
        self.backoff = Backoff()

    # ------------------------------------------------------------ the cell

    def run(
        self,
        cell: Cell,
        columns: CellColumns,
        explainer: Explainer,
        group: Group,
        cache_key: CacheKey | None,
        finished: set[str],
    ) -> Iterator[BatchDone | CellDone]:
        """Yield each batch of ``cell`` (those in ``finished`` as already on disk), then CellDone.
        Stops early, without CellDone, when ``should_stop`` says so (between batches)."""
        begin, hits, halvings = time.perf_counter(), self.cache_hits, self.backoff.halvings
        cards = [self.cards[k] for k in cell.metrics]
        reason = explainer.supports(group.model)
        todo = any(batch_key(group.sample_columns(p)) not in finished for p in group.positions())
        fatal = None if reason is not None or not todo else self._prepare(explainer, group)
        if reason is None and fatal is None and todo and self.s.warmup:
            fatal = self._warmup(explainer, group, cache_key)
        keys = []
        for positions in group.positions():
            if self.should_stop():
                return
            samples = group.sample_columns(positions)
            key = batch_key(samples)
            keys.append(key)
            if key in finished:
                yield BatchDone(cell, key, None)
                continue
            rows = CellRows(columns)
            if reason is not None or fatal is not None:
                add_status(rows, cards, samples, reason or fatal or "", "skipped" if reason is not None else "error")
                yield BatchDone(cell, key, rows, persist=reason is not None)
                continue
            batch = group.batch(positions, self.s.device)
            fatal = self._run_batch(cell, explainer, group.model, batch, samples, rows, cache_key)
            yield BatchDone(cell, key, rows, persist=fatal is None and rows.count("error") == 0)
        yield CellDone(
            cell, keys, time.perf_counter() - begin, self.cache_hits - hits, self.backoff.halvings - halvings
        )

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
        """One untimed call on two images (lazy initialisation, allocator warm-up). A configuration
        error found here fails the cell."""
        _, first = next(iter(group.batches(self.s.device)))
        columns = group.sample_columns(range(len(first)))
        targeted = [j for j, c in enumerate(columns) if c.no_target_reason is None][:2]
        if not targeted:
            return None
        head = first.select(targeted)
        try:
            with self._autocast():
                assert head.target is not None
                explainer.explain(group.model, head.x, head.target, [columns[j].seed or 0 for j in targeted])
        except XbenchError as exc:
            return error_text(exc)
        except Exception:  # noqa: BLE001 - per-batch handling will record it precisely
            return None
        return None

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        dtype = PRECISIONS[self.s.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.s.device.type, dtype=dtype)

    # ------------------------------------------------------------ a batch

    def _attributions(
        self,
        explainer: Explainer,
        model: LoadedModel,
        batch: Batch,
        samples: list[SampleColumns],
        key: CacheKey | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(attributions, per-image cost): from the cache when every sample is there, else explained."""
        ids = [s.sample_id or "" for s in samples]
        seeds = [s.seed or 0 for s in samples]
        targets = [s.target if s.target is not None else -1 for s in samples]
        if self.cache is not None and key is not None:
            hit = self.cache.get(key, ids, seeds, targets)
            if hit is not None:
                self.cache_hits += len(ids)
                maps, costs = hit
                return torch.from_numpy(maps).to(batch.x.device), {k: torch.from_numpy(v) for k, v in costs.items()}

        def explain(positions: list[int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            part = batch if len(positions) == len(samples) else batch.select(positions)
            chosen = [seeds[i] for i in positions]
            target = part.target
            assert target is not None, "the group sets every batch's targets"
            with PassCounter(model.module) as passes, PeakMemory(self.s.device) as memory, self._autocast():
                attr, seconds = timed(lambda: explainer.explain(model, part.x, target, chosen), self.s.device)
            n = len(positions)
            cost = {
                "seconds": torch.full((n,), seconds / n, dtype=torch.float64),
                "forward_images": torch.full((n,), passes.forward_images / n, dtype=torch.float64),
                "backward_images": torch.full((n,), passes.backward_images / n, dtype=torch.float64),
                "peak_memory_mb": torch.full((n,), memory.peak_mb, dtype=torch.float64),
            }
            return attr.float(), cost

        def join(parts: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[torch.Tensor, dict[str, Any]]:
            return torch.cat([p[0] for p in parts]), {k: torch.cat([p[1][k] for p in parts]) for k in parts[0][1]}

        attr, cost = self.backoff(explain, len(samples), join)
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
        samples: list[SampleColumns],
        rows: CellRows,
        key: CacheKey | None,
    ) -> str | None:
        """Explain and score one batch; returns an error text that should stop the cell, if any."""
        cards = [self.cards[k] for k in cell.metrics]
        for sample in samples:
            if sample.no_target_reason is not None:
                add_status(rows, cards, [sample], sample.no_target_reason, "skipped")
        targeted = [j for j, s in enumerate(samples) if s.no_target_reason is None]
        if not targeted:
            return None
        if len(targeted) != len(samples):
            batch, samples = batch.select(targeted), [samples[j] for j in targeted]
        try:
            attr, cost = self._attributions(explainer, model, batch, samples, key)
        except Exception as exc:  # noqa: BLE001 - recorded as rows, the run goes on
            message = error_text(exc)
            add_status(rows, cards, samples, message, "error")
            return message if isinstance(exc, XbenchError) else None
        finite = torch.isfinite(attr.flatten(1)).all(dim=1).cpu()
        for j, sample in enumerate(samples):
            if sample.sample_id in self.gallery_ids and finite[j]:
                rows.gallery.append((sample.sample_id, attr[j, 0].detach().cpu().numpy()))
        bad = [samples[i] for i in range(len(samples)) if not finite[i]]
        add_status(rows, cards, bad, "explainer returned non-finite attributions", "error")
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
        samples: list[SampleColumns],
        rows: CellRows,
    ) -> None:
        metric, card = self.metrics[metric_key], self.cards[metric_key]

        def score(positions: list[int]) -> Scores:
            whole = len(positions) == len(samples)
            with self._autocast():
                return metric.score(
                    MetricInput(
                        model=model,
                        batch=batch if whole else batch.select(positions),
                        attributions=attr if whole else attr[positions],
                        seeds=[samples[i].seed or 0 for i in positions],
                        explainer=explainer,
                        cost={k: v if whole else v[positions] for k, v in cost.items()},
                    )
                )

        try:
            scores = self.backoff(score, len(samples), join_scores)
        except Exception as exc:  # noqa: BLE001 - a failing metric fails its rows only
            add_status(rows, [card], samples, error_text(exc), "error")
            return
        record(rows, card, samples, scores)


def record(rows: CellRows, card: MetricCard, samples: list[SampleColumns], scores: Scores) -> None:
    """Rows (and curves) of one metric's scores: ok, degenerate (the declared "no answer" value),
    or nan (undefined), each non-ok row with its reason."""
    n = len(samples)
    reasons = scores.reasons or [None] * n
    degenerate = scores.degenerate.tolist() if scores.degenerate is not None else [False] * n
    prefix = card.key
    for columns in metric_columns(card):
        output = columns.metric[len(prefix) + 1 :] if columns.metric != prefix else ""
        values = scores.values[output].detach().double().cpu().tolist()
        for sample, value, reason, flag in zip(samples, values, reasons, degenerate, strict=True):
            if flag:
                status, message = "degenerate", reason or "the attribution gives no answer"
            elif value != value:
                status, message = "nan", reason or "undefined"
            else:
                status, message = "ok", None
            rows.add(columns, sample, value, status, message)
    for output, curves in scores.curves.items():
        name = prefix if output == "" else f"{prefix}.{output}"
        for sample, curve in zip(samples, curves.detach().float().cpu().tolist(), strict=True):
            rows.add_curve(name, sample.sample_id or "", curve)


def join_scores(parts: list[Scores]) -> Scores:
    """Concatenate the Scores of two halves of a batch (after an out-of-memory back-off)."""
    first = parts[0]

    def size(p: Scores) -> int:
        return len(next(iter(p.values.values())))

    reasons = None
    if any(p.reasons for p in parts):
        reasons = [r for p in parts for r in (p.reasons or [None] * size(p))]
    degenerate = None
    if any(p.degenerate is not None for p in parts):
        degenerate = torch.cat(
            [p.degenerate if p.degenerate is not None else torch.zeros(size(p), dtype=torch.bool) for p in parts]
        )
    return Scores(
        values={k: torch.cat([p.values[k] for p in parts]) for k in first.values},
        curves={k: _cat_curves([p.curves[k] for p in parts]) for k in first.curves},
        reasons=reasons,
        degenerate=degenerate,
    )


def _cat_curves(curves: list[torch.Tensor]) -> torch.Tensor:
    width = max(c.shape[1] for c in curves)
    padded = [torch.nn.functional.pad(c, (0, width - c.shape[1]), value=float("nan")) for c in curves]
    return torch.cat(padded)
