"""Which output to explain for each sample, whether the model got it right, and model quality.

Rules (the suite's ``target``):

- ``label``: the dataset label; the model must predict the dataset's own classes.
- ``mapped``: for a model of another label space (an ImageNet classifier on VOC,
  CIFAR-10 or COCO, or any model with a user's ``label_map``), the
  highest-scoring model class inside the set that depicts the sample's class
  (see ``bench.datasets.label_maps``); a class without counterparts (VOC's
  person in ImageNet) gets no target, and the reason.
- ``predicted``: the model's top-1.
- ``auto``: ``label`` when the model's classes are the dataset's, else
  ``mapped`` when a mapping exists, else ``predicted``.

A prediction is correct when it equals the label (same classes) or falls inside
the label's set (mapped); otherwise correctness is unknown (None).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from bench.datasets.base import Dataset
from bench.datasets.label_maps import ClassMap, inverse
from bench.errors import ConfigError
from bench.types import ModelSpec, SampleRef

NO_TARGET = -1


@dataclass
class TargetPlan:
    """Per-sample targets (NO_TARGET where none), correctness and the rule that made them."""

    rule: str
    target: torch.Tensor  # (N,) int64
    correct: list[bool | None]
    predicted_class: list[int]  # the prediction in the dataset's classes (-1: none of them)
    reasons: list[str | None]  # why a sample has no target


def resolve_rule(rule: str, spec: ModelSpec, dataset: Dataset) -> tuple[str, ClassMap | None]:
    """The concrete rule for ``rule`` ('auto' resolved) and the class map it uses, if any."""
    same = tuple(spec.class_names) == tuple(dataset.classes) and len(dataset.classes) > 0
    mapping = dataset.class_map(spec) if not same else None
    if rule == "auto":
        rule = "label" if same else ("mapped" if mapping is not None else "predicted")
    if rule == "label" and not same:
        raise ConfigError(
            f"target: label needs a model that predicts the dataset's classes; this model predicts "
            f"{spec.label_space or f'{spec.num_classes} other classes'}",
            field="target",
            fix="use target: mapped (for ImageNet models on VOC, CIFAR-10 or COCO, or with a label_map) "
            "or target: predicted",
        )
    if rule == "mapped" and mapping is None:
        raise ConfigError(
            f"target: mapped needs a mapping from dataset {dataset.name!r} to the model's label space "
            f"{spec.label_space or '(unnamed)'}",
            field="target",
            fix="give the dataset a label_map file (docs/label_maps.md), use target: predicted, "
            "or target: label for a model trained on the dataset",
        )
    return rule, mapping


def plan_targets(
    rule: str, probs: torch.Tensor, refs: list[SampleRef], spec: ModelSpec, dataset: Dataset
) -> TargetPlan:
    """Targets and correctness for model outputs ``probs`` (N, K) of samples ``refs``."""
    rule, mapping = resolve_rule(rule, spec, dataset)
    sets = mapping.sets if mapping is not None else None
    labels = [r.label for r in refs]
    top1 = probs.argmax(1).tolist()
    same = tuple(spec.class_names) == tuple(dataset.classes)
    targets, correct, predicted, reasons = [], [], [], []
    back = inverse(sets) if sets is not None else {}
    for i, label in enumerate(labels):
        reason = None
        if same:
            ok: bool | None = top1[i] == label
            predicted.append(top1[i])
        elif sets is not None:
            ok = top1[i] in sets[label] if sets[label] else None
            predicted.append(back.get(top1[i], -1))
        else:
            ok = None
            predicted.append(-1)
        if rule == "label":
            target = label
        elif rule == "predicted":
            target = top1[i]
        else:
            members = cast(list[tuple[int, ...]], sets)[label]  # rule mapped: resolve_rule gave it a mapping
            if members:
                target = members[int(probs[i, list(members)].argmax())]
            else:
                target = NO_TARGET
                space = spec.label_space or "the model's classes"
                why = mapping.reasons[label] if mapping is not None else None
                reason = f"class {dataset.classes[label]!r} has no counterpart in {space}" + (f": {why}" if why else "")
        targets.append(target)
        correct.append(ok)
        reasons.append(reason)
    return TargetPlan(rule, torch.tensor(targets, dtype=torch.long), correct, predicted, reasons)


def quality(labels: list[int], plan: TargetPlan) -> dict[str, float | int]:
    """Top-1 accuracy (over samples whose correctness is known) and macro precision/recall/F1
    over the dataset classes that occur, with predictions mapped into the dataset's classes."""
    known = [c for c in plan.correct if c is not None]
    out: dict[str, float | int] = {
        "accuracy": float(np.mean(known)) if known else float("nan"),
        "n": len(labels),
        "n_scored": len(known),
        "n_no_target": int((plan.target == NO_TARGET).sum()),
    }
    if not known:
        return out
    y = np.array(labels)
    pred = np.array(plan.predicted_class)
    scored = np.array([c is not None for c in plan.correct])
    y, pred = y[scored], pred[scored]
    precision, recall, f1 = [], [], []
    for cls in sorted(set(y.tolist())):
        tp = np.sum((pred == cls) & (y == cls))
        fp = np.sum((pred == cls) & (y != cls))
        fn = np.sum((pred != cls) & (y == cls))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    out.update(
        macro_precision=float(np.mean(precision)), macro_recall=float(np.mean(recall)), macro_f1=float(np.mean(f1))
    )
    return out
