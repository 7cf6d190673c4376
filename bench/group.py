"""One (dataset, model) group: the sampled images, the model's predictions and the targets.

The images of a group are read once (resized to the model's input when the
dataset's images vary in size), unreadable samples are set aside and counted,
the model predicts every image once, and the targets follow the suite's rule.
Every cell of the group then iterates the same batches, kept in memory when
they fit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from bench.datasets.base import Dataset, stratified_sample
from bench.seeding import stable_hash
from bench.store.schema import SampleColumns
from bench.targets import TargetPlan, plan_targets, quality
from bench.types import Batch, LoadedModel, SampleRef

BATCH_CACHE_BYTES = 1 << 30  # keep a group's images in memory up to this size


@dataclass
class Group:
    """The prepared data of one (dataset, model) pair."""

    dataset: Dataset
    model: LoadedModel
    refs: list[SampleRef]  # readable samples, in benchmark order
    seeds: list[int]
    plan: TargetPlan
    confidence: torch.Tensor  # (N,) top-1 probability
    prediction: torch.Tensor  # (N,) top-1 output index
    skipped: list[tuple[str, str]]  # unreadable samples: (id, reason)
    batch_size: int
    image_size: tuple[int, int] | None
    _cache: list[tuple[range, Batch]] = field(default_factory=list)
    _backgrounds: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    def positions(self) -> list[range]:
        """The positions (in ``refs``) of each batch, in order."""
        if self._cache:
            return [positions for positions, _ in self._cache]
        return [range(s, min(s + self.batch_size, len(self.refs))) for s in range(0, len(self.refs), self.batch_size)]

    def batch(self, positions: range, device: torch.device) -> Batch:
        """The batch at ``positions`` (one of ``positions()``) on ``device``, with its targets set."""
        for cached, batch in self._cache:
            if cached == positions:
                return self._with_target(batch, positions)
        batch = self.dataset.load([self.refs[i] for i in positions], self.dataset.eval_split, self.image_size)
        return self._with_target(batch.to(device), positions)

    def batches(self, device: torch.device) -> Iterator[tuple[range, Batch]]:
        """(positions in ``refs``, batch on ``device`` with targets set), the same every time."""
        for positions in self.positions():
            yield positions, self.batch(positions, device)

    def background(self, n: int, seed: int, device: torch.device) -> torch.Tensor:
        """``n`` reference images for SHAP-style explainers: stratified and seeded from the
        train split (the benchmark split when there is none), at the group's image size."""
        key = (n, seed)
        if key not in self._backgrounds:
            split = "train" if "train" in self.dataset.splits() else self.dataset.eval_split
            refs = stratified_sample(self.dataset.index(split), n, stable_hash("background", seed))
            images = []
            for start in range(0, len(refs), 256):
                images.append(self.dataset.load(refs[start : start + 256], split, self.image_size).x)
            self._backgrounds[key] = torch.cat(images)
        return self._backgrounds[key].to(device)

    def _with_target(self, batch: Batch, positions: range) -> Batch:
        batch.target = self.plan.target[positions.start : positions.stop].to(batch.x.device)
        return batch

    @property
    def n_batches(self) -> int:
        return len(self._cache) if self._cache else -(-len(self.refs) // self.batch_size)

    def sample_columns(self, positions: range) -> list[SampleColumns]:
        """Per-sample columns of the result rows."""
        return [
            SampleColumns(
                sample_id=self.refs[i].id,
                label=self.refs[i].label,
                target=int(self.plan.target[i]),
                prediction=int(self.prediction[i]),
                correct=self.plan.correct[i],
                seed=self.seeds[i],
                no_target_reason=self.plan.reasons[i],
            )
            for i in positions
        ]

    def quality(self) -> dict[str, Any]:
        return {
            **quality([r.label for r in self.refs], self.plan),
            "target_rule": self.plan.rule,
            "n_unreadable": len(self.skipped),
        }

    def predictions_frame(self, dataset_key: str, model_key: str) -> pd.DataFrame:
        names = self.dataset.classes
        return pd.DataFrame(
            {
                "dataset": dataset_key,
                "model": model_key,
                "sample_id": [r.id for r in self.refs],
                "label": [r.label for r in self.refs],
                "label_name": [names[r.label] for r in self.refs],
                "prediction": self.prediction.numpy(),
                "prediction_name": [self._model_class(int(p)) for p in self.prediction],
                "predicted_class": self.plan.predicted_class,
                "target": self.plan.target.numpy(),
                "target_rule": self.plan.rule,
                "correct": pd.array(self.plan.correct, dtype="boolean"),
                "confidence": self.confidence.numpy(),
            }
        )

    def _model_class(self, index: int) -> str:
        names = self.model.spec.class_names
        return names[index] if index < len(names) else str(index)


@torch.no_grad()
def prepare_group(
    dataset: Dataset,
    model: LoadedModel,
    refs: list[SampleRef],
    seeds: dict[str, int],
    *,
    target_rule: str,
    batch_size: int,
    device: torch.device,
) -> Group:
    """Read the sampled images once, predict them, and plan the targets."""
    image_size = model.spec.input_size if dataset.variable_size else None
    cache: list[tuple[range, Batch]] = []
    kept: list[SampleRef] = []
    skipped: list[tuple[str, str]] = []
    probs: list[torch.Tensor] = []
    nbytes, caching = 0, True
    by_id = {r.id: r for r in refs}
    for start in range(0, len(refs), batch_size):
        batch = dataset.load(refs[start : start + batch_size], dataset.eval_split, image_size)
        skipped += batch.skipped
        if not batch.ids:
            continue
        positions = range(len(kept), len(kept) + len(batch.ids))
        kept += [by_id[i] for i in batch.ids]
        batch = batch.to(device)
        probs.append(model(batch.x).float().softmax(1).cpu())
        nbytes += batch.x.element_size() * batch.x.nelement()
        caching = caching and nbytes <= BATCH_CACHE_BYTES
        if caching:
            cache.append((positions, batch))
        else:
            cache.clear()  # too large: cells will read the images batch by batch
    prob = torch.cat(probs) if probs else torch.empty(0, model.spec.num_classes)
    confidence, prediction = prob.max(1) if len(prob) else (torch.empty(0), torch.empty(0, dtype=torch.long))
    plan = plan_targets(target_rule, prob, kept, model.spec, dataset)
    return Group(
        dataset=dataset,
        model=model,
        refs=kept,
        seeds=[seeds[r.id] for r in kept],
        plan=plan,
        confidence=confidence,
        prediction=prediction,
        skipped=skipped,
        batch_size=batch_size,
        image_size=image_size,
        _cache=cache,
    )


def sample_refs(dataset: Dataset, n: int | None, seed: int) -> list[SampleRef]:
    """The benchmark's samples of ``dataset``: stratified by class, seeded."""
    return stratified_sample(dataset.index(dataset.eval_split), n, seed)


def open_group(
    dataset: Dataset,
    source: Any,
    refs: Sequence[SampleRef],
    seeds: Sequence[int],
    *,
    target_rule: str,
    batch_size: int,
    device: torch.device,
    log: Any = print,
) -> Group:
    """Load the model for ``dataset`` and prepare the group (what every cell of it shares)."""
    from bench.models.base import ModelContext

    source.check(dataset)
    model = source.load(ModelContext(dataset=dataset, device=device, log=log))
    by_id = dict(zip([r.id for r in refs], seeds, strict=True))
    group = prepare_group(
        dataset, model, list(refs), by_id, target_rule=target_rule, batch_size=batch_size, device=device
    )
    # images whose files could not be indexed gave no samples, so no batch reports them: report them here
    group.skipped = [*dataset.index_problems(dataset.eval_split), *group.skipped]
    return group
