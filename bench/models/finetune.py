"""Training and fine-tuning with a declared protocol, resumable, cached by what defines the result.

A ``TrainSpec`` (the ``train:`` block of a model in a suite, or ``xbench
train``) gives the optimiser, schedule, augmentation, input size, head and
freezing. ``finetune_cached`` trains once and stores ``weights.pt`` and
``meta.json`` under ``<cache>/models/<name>-<digest>/``, keyed by the model,
the training data and the protocol; after every epoch it writes a resumable
``partial.pt`` (model, optimiser, scheduler, RNG), so an interrupted training
continues from its last finished epoch. The study protocols ship as presets.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn
from tqdm.auto import tqdm

from bench import atomic, fastpath
from bench.component import Params
from bench.datasets.base import Dataset, stratified_sample
from bench.errors import ConfigError, DataError
from bench.explainers.base import forward_batch_size
from bench.models.base import ImageClassifier, ModelContext
from bench.seeding import short_digest, stable_hash
from bench.types import ModelSpec, SampleRef

PRELOAD_BYTES = 2 << 30  # keep a train split in memory up to this size

PRESETS: dict[str, dict[str, Any]] = {
    # ResNet-50 (ImageNet weights) fine-tuned on CIFAR-10 at 224 input: the SHAP study's protocol.
    "resnet50_cifar10": {
        "optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-4, "epochs": 10, "batch_size": 32, "dropout": 0.5,
        "scheduler": "plateau", "augment": ["crop", "flip", "color_jitter"], "input_size": 224,
    },
    # ResNet-34 on CIFAR-10 (CNN vs ViT study).
    "resnet34_cifar10": {
        "optimizer": "adam", "lr": 1e-5, "weight_decay": 5e-4, "epochs": 5, "batch_size": 32,
        "augment": ["crop", "flip"], "input_size": 224,
    },
    # ViT-B/16 on CIFAR-10 (CNN vs ViT study).
    "vit_b16_cifar10": {
        "optimizer": "adam", "lr": 2e-5, "weight_decay": 0.01, "epochs": 3, "batch_size": 32,
        "augment": ["crop", "flip"], "input_size": 224,
    },
    # AlexNet on CIFAR-10 (CNN vs ViT study; the study gives no protocol: ours, like ResNet-34's).
    "alexnet_cifar10": {
        "optimizer": "adam", "lr": 1e-5, "weight_decay": 5e-4, "epochs": 5, "batch_size": 32,
        "augment": ["crop", "flip"], "input_size": 224,
    },
    # The layer-wise study's VGG13, trained from scratch on 32x32 CIFAR-10.
    "vgg13_cifar10_scratch": {
        "optimizer": "adam", "lr": 1e-3, "epochs": 10, "batch_size": 64, "augment": ["crop", "flip"], "head": "keep",
    },
}  # fmt: skip


class TrainSpec(Params):
    """A training protocol. ``preset`` fills every field the block does not set."""

    preset: str | None = Field(None, description=f"a study protocol: {', '.join(PRESETS)}")
    dataset: dict[str, Any] | None = Field(
        None, description="{name, params} of the dataset to train on (default: the cell's dataset, train split)"
    )
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="optimiser")
    lr: float = Field(1e-4, gt=0, le=10, description="(peak) learning rate")
    weight_decay: float = Field(0.0, ge=0, description="weight decay")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    epochs: int = Field(10, ge=1, le=1000, description="epochs")
    batch_size: int = Field(32, ge=1, le=8192, description="batch size")
    scheduler: Literal["none", "plateau", "cosine", "onecycle"] = Field("none", description="learning-rate schedule")
    augment: list[Literal["crop", "flip", "color_jitter"]] = Field(
        default_factory=lambda: ["crop", "flip"], description="random crop (4 px padding), h-flip, colour jitter"
    )
    input_size: int | None = Field(None, ge=16, description="resize inputs inside the model (e.g. 224)")
    head: Literal["replace", "keep"] = Field("replace", description="replace the classifier for the dataset's classes")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the new head")
    freeze: list[str] = Field(default_factory=list, description="module prefixes to freeze, or ['backbone']")
    train_samples: int | None = Field(None, ge=1, description="cap on training images (stratified, seeded)")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="held-out share of the train split (plateau schedule)")
    eval_samples: int | None = Field(2000, ge=1, description="test images for the recorded accuracy (null: all)")
    seed: int = Field(0, ge=0, description="seed of data order, augmentation and new layers")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") is not None:
            preset = data["preset"]
            if preset not in PRESETS:
                raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
            return {**PRESETS[preset], **data}
        return data

    def resolve_dataset(self, default: Dataset) -> Dataset:
        """The dataset to train on: the block's own, or the cell's."""
        if self.dataset is None:
            return default
        from bench.registry import DATASETS, load_builtin_components

        load_builtin_components()
        ref = self.dataset
        if "name" not in ref:
            raise ConfigError("train.dataset needs a `name`", field="train.dataset", fix="give {name, params}")
        cls = DATASETS.get(ref["name"], field="train.dataset.name")
        dataset = cls(cls.Params.model_validate(ref.get("params") or {}))
        dataset.check()
        return dataset


# ---------------------------------------------------------------- network surgery


def replace_head(net: nn.Module, num_classes: int, dropout: float = 0.0, seed: int = 0) -> None:
    """Swap the last classification layer for a fresh one with ``num_classes`` outputs (in place)."""
    parent, name, old = _last_classifier(net)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(old, nn.Conv2d):  # SqueezeNet classifies with a 1x1 conv
            new: nn.Module = nn.Conv2d(old.in_channels, num_classes, kernel_size=old.kernel_size)
        else:
            new = nn.Linear(old.in_features, num_classes)
    if dropout > 0:
        new = nn.Sequential(nn.Dropout(dropout), new)
    if name.isdigit():
        parent[int(name)] = new
    else:
        setattr(parent, name, new)


def _last_classifier(net: nn.Module) -> tuple[nn.Module, str, nn.Module]:
    candidates = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    squeeze = getattr(net, "classifier", None)
    if isinstance(squeeze, nn.Sequential) and any(isinstance(m, nn.Conv2d) for m in squeeze):
        index = max(i for i, m in enumerate(squeeze) if isinstance(m, nn.Conv2d))
        return squeeze, str(index), squeeze[index]
    if not candidates:
        raise ConfigError("cannot find the model's classification layer", field="train.head", fix="use head: keep")
    path, module = candidates[-1]
    parent_path, _, name = path.rpartition(".")
    parent = net.get_submodule(parent_path) if parent_path else net
    return parent, name, module


def freeze(net: nn.Module, prefixes: list[str]) -> list[str]:
    """Freeze parameters under ``prefixes`` ('backbone' = all but the classification layer)."""
    if not prefixes:
        return []
    if prefixes == ["backbone"]:
        _, _, head = _last_classifier(net)
        keep = {id(p) for p in head.parameters()}
        frozen = [n for n, p in net.named_parameters() if id(p) not in keep]
    else:
        frozen = [n for n, _ in net.named_parameters() if any(n == f or n.startswith(f + ".") for f in prefixes)]
        unknown = [f for f in prefixes if not any(n == f or n.startswith(f + ".") for n, _ in net.named_parameters())]
        if unknown:
            raise ConfigError(
                f"no parameters under {unknown}", field="train.freeze", fix="use module names of the model"
            )
    names = set(frozen)
    for n, p in net.named_parameters():
        p.requires_grad_(n not in names)
    return frozen


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
        assert x is not None, "no training images"
        return x, y

    def __len__(self) -> int:
        return len(self.refs)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.x is not None:
            return self.x[idx], self.y[idx]
        return self._read(idx.tolist())


def augment(x: torch.Tensor, kinds: list[str], gen: torch.Generator) -> torch.Tensor:
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


def _split_train_val(refs: list[SampleRef], spec: TrainSpec) -> tuple[list[SampleRef], list[SampleRef]]:
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
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        if sched is not None and resume.get("scheduler"):
            sched.load_state_dict(resume["scheduler"])
        gen.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])  # dropout and other global draws continue where they were
        start, history = resume["epoch"] + 1, resume["history"]
        log(f"  resuming after epoch {start}/{spec.epochs}")
    for epoch in range(start, spec.epochs):
        model.train()
        _keep_frozen_in_eval(model)
        order = torch.randperm(len(data), generator=gen)
        total, seen = 0.0, 0
        bar = tqdm(range(0, len(data), spec.batch_size), desc=f"epoch {epoch + 1}/{spec.epochs}", leave=False,
                   disable=not sys.stderr.isatty(), unit="batch")  # fmt: skip
        for i in bar:
            idx = order[i : i + spec.batch_size]
            xb, yb = data.batch(idx)
            xb = augment(xb, spec.augment, gen)
            loss = F.cross_entropy(model(xb.to(device)), yb.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if spec.scheduler in ("onecycle", "cosine"):
                sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total / seen:.4f}")
        stats = {"epoch": epoch + 1, "train_loss": total / max(seen, 1)}
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


def _keep_frozen_in_eval(model: nn.Module) -> None:
    """BatchNorm layers whose parameters are frozen keep their running statistics."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


def finetune_cached(
    *,
    net: nn.Module,
    spec: ModelSpec,
    dataset: Dataset,
    spec_train: TrainSpec,
    ctx: ModelContext,
    key: dict[str, Any],
    name: str,
    channels_last: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """``net`` trained on ``dataset``'s train split with ``spec_train``: cached, resumable. ``channels_last``
    trains in that memory layout (faster convolutions and pooling on a CPU; other rounding, so part of
    the caller's key) and hands the network back in the default layout, as a cached one loads."""
    full_key = {**key, "data": dataset.content_identity(), "train": spec_train.model_dump(mode="json")}
    folder = ctx.cache_dir / "models" / f"{name}-{short_digest(full_key, 16)}"
    weights, meta_path, partial = folder / "weights.pt", folder / "meta.json", folder / "partial.pt"
    if meta_path.exists() and weights.exists():
        try:
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            return net, {**json.loads(meta_path.read_text()), "cached": True, "cache_dir": str(folder)}
        except (RuntimeError, OSError, ValueError, EOFError) as exc:
            ctx.log(f"cached model in {folder} is unreadable ({exc}); training again")
    if "train" not in dataset.splits():
        raise ConfigError(
            f"dataset {dataset.name!r} has no train split to train on",
            field="train.dataset",
            fix="name a dataset with a train split in train.dataset (e.g. cifar10 with its root)",
        )
    frozen = freeze(net, spec_train.freeze)
    resume = None
    if partial.exists():
        try:
            resume = torch.load(partial, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, ValueError, EOFError):
            resume = None
    ctx.log(f"training {name} on {dataset.name} ({spec_train.epochs} epochs; cached in {folder})")
    begin = time.perf_counter()
    train_refs, val_refs = _split_train_val(dataset.index("train"), spec_train)
    data = TrainData(dataset, train_refs, "train")
    val = TrainData(dataset, val_refs, "train") if val_refs else None
    model = ImageClassifier(net, spec).to(ctx.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def save_partial(state: dict[str, Any]) -> None:
        atomic.write_with(partial, lambda tmp: torch.save(state, tmp))

    with torch.random.fork_rng(devices=[]), fastpath.training_threads() as threads:
        torch.manual_seed(spec_train.seed)
        history = fit(model, data, spec_train, ctx.device, ctx.log, val=val, checkpoint=save_partial, resume=resume)
    meta: dict[str, Any] = {
        "key": full_key,
        "train_images": len(data),
        "frozen_parameters": len(frozen),
        "history": history,
        "train_seconds": round(time.perf_counter() - begin, 2),
        "train_threads": threads,
        "torch": torch.__version__,
    }
    del data, val
    fastpath.release_memory()  # the train split (295 MB for the quickstart) goes back to the system
    if "test" in dataset.splits():
        test_refs = stratified_sample(dataset.index("test"), spec_train.eval_samples, spec_train.seed)
        test = TrainData(dataset, test_refs, "test")
        # batches as forward_batch auto: 256 images of 64 px held 310 MB more with the tuned allocator
        batch = forward_batch_size("auto", test.x if test.x is not None else test.batch(torch.arange(1))[0])
        _, meta["test_accuracy"] = evaluate(model, test, ctx.device, batch)
        meta["test_images"] = len(test_refs)
        ctx.log(f"  test accuracy {meta['test_accuracy']:.4f} on {len(test_refs)} images")
    for p in net.parameters():
        p.requires_grad_(True)
    net = net.cpu().to(memory_format=torch.contiguous_format)
    fastpath.release_memory()
    try:
        atomic.write_with(weights, lambda tmp: torch.save(net.state_dict(), tmp))
        atomic.write_json(meta_path, meta)
    except OSError as exc:
        raise DataError(
            f"cannot write the model cache {folder}: {exc}", fix="set XBENCH_CACHE to a writable folder"
        ) from exc
    partial.unlink(missing_ok=True)
    return net, {**meta, "cached": False, "cache_dir": str(folder)}
