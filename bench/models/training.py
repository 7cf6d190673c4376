"""The training loop of ``bench.models.finetune``: training images (in memory when they fit), augmentation,
optimiser and schedule, and epochs that hand a resumable state to a checkpoint callback after each one.
Deterministic for a seed on one machine."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench import fastpath
from bench.datasets.base import Dataset, stratified_sample
from bench.errors import DataError
from bench.seeding import stable_hash
from bench.types import SampleRef

if TYPE_CHECKING:  # finetune imports this module; the protocol is only a type here
    from bench.models.finetune import TrainSpec

PRELOAD_BYTES = 2 << 30  # keep a train split in memory up to this size


# ---------------------------------------------------------------- data and augmentation


class TrainData:
    """The training images, in memory when they fit, else read per batch."""

    def __init__(self, dataset: Dataset, refs: list[SampleRef], split: str):
        self.dataset, self.refs, self.split = dataset, refs, split
        self.x: torch.Tensor | None = None
        self.y = torch.tensor([r.label for r in refs], dtype=torch.long)
        probe = dataset.load(refs[:1], split)
        if probe.x.element_size() * probe.x[0].nelement() * len(refs) <= PRELOAD_BYTES:
            self.x, self.y = self._read(range(len(refs)))

    def _read(self, positions: range | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels at ``positions``, read 1000 at a time into one preallocated tensor
        (concatenating the chunks held the split twice: 295 MB more at the quickstart's peak)."""
        positions = list(positions)
        x: torch.Tensor | None = None
        y = torch.empty(len(positions), dtype=torch.long)
        for i in range(0, len(positions), 1000):
            batch = self.dataset.load([self.refs[j] for j in positions[i : i + 1000]], self.split)
            if batch.skipped:
                raise DataError(f"training image unreadable: {batch.skipped[0][1]}", fix="repair or remove it")
            if x is None:
                x = torch.empty((len(positions), *batch.x.shape[1:]), dtype=batch.x.dtype)
            x[i : i + len(batch.x)] = batch.x
            y[i : i + len(batch.x)] = batch.label
        if x is None:
            raise DataError("no training images to read", fix="give the train split at least one image")
        return x, y

    def __len__(self) -> int:
        return len(self.refs)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.x is not None:
            return self.x[idx], self.y[idx]
        return self._read(idx.tolist())


def augment(x: torch.Tensor, kinds: Sequence[str], gen: torch.Generator) -> torch.Tensor:
    """Per-sample random flips, 4-pixel-padded crops and colour jitter, drawn from ``gen``."""
    n = len(x)
    if "flip" in kinds:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if "crop" in kinds:
        pad = 4
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        h, w = x.shape[-2:]
        x = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    if "color_jitter" in kinds:
        b = 1 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.4
        c = 1 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.4
        s = 1 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.4
        x = x * b
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c + mean
        grey = x.mean(dim=1, keepdim=True)
        x = (x - grey) * s + grey
        x = x.clamp(0, 1)
    return x


# ---------------------------------------------------------------- the loop


def _optimizer(spec: TrainSpec, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


def _scheduler(spec: TrainSpec, opt: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
    if spec.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=spec.epochs * steps_per_epoch)
    if spec.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.epochs * steps_per_epoch)
    if spec.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=2)
    return None


@torch.no_grad()
def evaluate(model: nn.Module, data: TrainData, device: torch.device, batch: int = 256) -> tuple[float, float]:
    """(mean cross-entropy, top-1 accuracy) of ``model`` in eval mode on ``data``."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(data), batch):
        x, y = data.batch(torch.arange(i, min(i + batch, len(data))))
        logits = model(x.to(device))
        loss += F.cross_entropy(logits, y.to(device), reduction="sum").item()
        correct += (logits.argmax(1).cpu() == y).sum().item()
    return loss / max(len(data), 1), correct / max(len(data), 1)


def split_train_val(refs: list[SampleRef], spec: TrainSpec) -> tuple[list[SampleRef], list[SampleRef]]:
    if spec.train_samples is not None:
        refs = stratified_sample(refs, spec.train_samples, spec.seed)
    if spec.scheduler != "plateau" or spec.val_fraction == 0:
        return refs, []
    ranked = sorted(refs, key=lambda r: stable_hash("val", spec.seed, r.id))
    n_val = max(1, int(len(refs) * spec.val_fraction))
    val = {r.id for r in ranked[:n_val]}
    return [r for r in refs if r.id not in val], [r for r in refs if r.id in val]


def fit(
    model: nn.Module,
    data: TrainData,
    spec: TrainSpec,
    device: torch.device,
    log: Callable[[str], None],
    *,
    val: TrainData | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place; returns per-epoch statistics. Deterministic for a seed on one machine and
    thread count: with ``threads: auto`` it trains on one thread (``bench.fastpath.training_threads``)."""
    with fastpath.training_threads():
        return _fit(model, data, spec, device, log, val, checkpoint, resume)


def _fit(
    model: nn.Module,
    data: TrainData,
    spec: TrainSpec,
    device: torch.device,
    log: Callable[[str], None],
    val: TrainData | None,
    checkpoint: Callable[[dict[str, Any]], None] | None,
    resume: dict[str, Any] | None,
) -> list[dict[str, float]]:
    trainable = [p for p in model.parameters() if p.requires_grad]
    steps = math.ceil(len(data) / spec.batch_size)
    opt = _optimizer(spec, trainable)
    sched = _scheduler(spec, opt, steps)
    gen = torch.Generator().manual_seed(spec.seed)
    history: list[dict[str, float]] = []
    start = 0
    if resume:
        start, history = _restore(resume, model, opt, sched, gen)
        log(f"  resuming after epoch {start}/{spec.epochs}")
    for epoch in range(start, spec.epochs):
        stats = {"epoch": epoch + 1, "train_loss": _train_epoch(model, data, spec, device, opt, sched, gen, epoch)}
        if val is not None and len(val):
            stats["val_loss"], stats["val_accuracy"] = evaluate(model, val, device)
            if spec.scheduler == "plateau":
                sched.step(stats["val_loss"])
        elif spec.scheduler == "plateau":
            sched.step(stats["train_loss"])
        history.append(stats)
        log("  " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()))
        if checkpoint is not None:
            checkpoint(
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                }
            )
    model.eval()
    return history


def _restore(
    resume: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator
) -> tuple[int, list[dict[str, float]]]:
    """Model, optimiser, schedule and random states of an interrupted run: (first epoch to run, history)."""
    model.load_state_dict(resume["model"])
    opt.load_state_dict(resume["optimizer"])
    if sched is not None and resume.get("scheduler"):
        sched.load_state_dict(resume["scheduler"])
    gen.set_state(resume["generator"])
    torch.set_rng_state(resume["torch_rng"])  # dropout and other global draws continue where they were
    return resume["epoch"] + 1, resume["history"]


def _train_epoch(
    model: nn.Module,
    data: TrainData,
    spec: TrainSpec,
    device: torch.device,
    opt: torch.optim.Optimizer,
    sched: Any,
    gen: torch.Generator,
    epoch: int,
) -> float:
    """One epoch over ``data`` in an order drawn from ``gen``; the mean training loss."""
    model.train()
    _keep_frozen_in_eval(model)
    order = torch.randperm(len(data), generator=gen)
    total, seen = 0.0, 0
    bar = tqdm(
        range(0, len(data), spec.batch_size),
        desc=f"epoch {epoch + 1}/{spec.epochs}",
        leave=False,
        disable=not sys.stderr.isatty(),
        unit="batch",
    )
    for i in bar:
        idx = order[i : i + spec.batch_size]
        xb, yb = data.batch(idx)
        xb = augment(xb, spec.augment, gen)
        loss = F.cross_entropy(model(xb.to(device)), yb.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward has no annotations
        opt.step()
        if spec.scheduler in ("onecycle", "cosine"):
            sched.step()
        total += loss.item() * len(idx)
        seen += len(idx)
        bar.set_postfix(loss=f"{total / seen:.4f}")
    return total / max(seen, 1)


def _keep_frozen_in_eval(model: nn.Module) -> None:
    """BatchNorm layers whose parameters are frozen keep their running statistics."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()
