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
import time
from pathlib import Path
from typing import Any, Literal, cast

import torch
from filelock import FileLock
from pydantic import Field, model_validator
from torch import nn

from bench import atomic, fastpath
from bench.component import Params
from bench.datasets.base import Dataset, stratified_sample
from bench.errors import ConfigError, DataError
from bench.explainers.base import forward_batch_size
from bench.models.base import ImageClassifier, ModelContext, TrainingRequired
from bench.models.training import TrainData, evaluate, fit, split_train_val
from bench.seeding import short_digest
from bench.types import ModelSpec

PRESETS: dict[str, dict[str, Any]] = {
    # ResNet-50 (ImageNet weights) fine-tuned on CIFAR-10 at 224 input: the SHAP study's protocol.
    "resnet50_cifar10": {
        "optimizer": "adam",
        "lr": 1e-4,
        "weight_decay": 1e-4,
        "epochs": 10,
        "batch_size": 32,
        "dropout": 0.5,
        "scheduler": "plateau",
        "augment": ["crop", "flip", "color_jitter"],
        "input_size": 224,
    },
    # ResNet-34 on CIFAR-10 (CNN vs ViT study).
    "resnet34_cifar10": {
        "optimizer": "adam",
        "lr": 1e-5,
        "weight_decay": 5e-4,
        "epochs": 5,
        "batch_size": 32,
        "augment": ["crop", "flip"],
        "input_size": 224,
    },
    # ViT-B/16 on CIFAR-10 (CNN vs ViT study).
    "vit_b16_cifar10": {
        "optimizer": "adam",
        "lr": 2e-5,
        "weight_decay": 0.01,
        "epochs": 3,
        "batch_size": 32,
        "augment": ["crop", "flip"],
        "input_size": 224,
    },
    # AlexNet on CIFAR-10 (CNN vs ViT study; the study gives no protocol: ours, like ResNet-34's).
    "alexnet_cifar10": {
        "optimizer": "adam",
        "lr": 1e-5,
        "weight_decay": 5e-4,
        "epochs": 5,
        "batch_size": 32,
        "augment": ["crop", "flip"],
        "input_size": 224,
    },
    # The layer-wise study's VGG13, trained from scratch on 32x32 CIFAR-10.
    "vgg13_cifar10_scratch": {
        "optimizer": "adam",
        "lr": 1e-3,
        "epochs": 10,
        "batch_size": 64,
        "augment": ["crop", "flip"],
        "head": "keep",
    },
}

Augmentation = Literal["crop", "flip", "color_jitter"]


def _default_augment() -> list[Augmentation]:
    return ["crop", "flip"]


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
    augment: list[Augmentation] = Field(
        default_factory=_default_augment, description="random crop (4 px padding), h-flip, colour jitter"
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
            # cast: torch types every conv's kernel_size as tuple[int, ...]; a Conv2d's has two entries
            new: nn.Module = nn.Conv2d(old.in_channels, num_classes, kernel_size=cast(tuple[int, int], old.kernel_size))
        else:
            new = nn.Linear(old.in_features, num_classes)
    if dropout > 0:
        new = nn.Sequential(nn.Dropout(dropout), new)
    if name.isdigit():  # a numbered child: its parent is a Sequential (or ModuleList)
        cast(nn.Sequential | nn.ModuleList, parent)[int(name)] = new
    else:
        setattr(parent, name, new)


def _last_classifier(net: nn.Module) -> tuple[nn.Module, str, nn.Linear | nn.Conv2d]:
    candidates = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    squeeze = getattr(net, "classifier", None)
    if isinstance(squeeze, nn.Sequential) and any(isinstance(m, nn.Conv2d) for m in squeeze):
        index = max(i for i, m in enumerate(squeeze) if isinstance(m, nn.Conv2d))
        return squeeze, str(index), cast(nn.Conv2d, squeeze[index])
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
    """``net`` trained on ``dataset``'s train split with ``spec_train``: cached, resumable.

    ``channels_last`` trains in that memory layout (faster convolutions and pooling on a CPU; other
    rounding, so part of the caller's key) and hands the network back in the default layout, as a cached
    one loads. Training holds a lock in the cache folder: two runs that need the same model train it once (the
    second waits, then loads what the first wrote); every file is written atomically, so no reader sees
    a torn one."""
    full_key = {**key, "data": dataset.content_identity(), "train": spec_train.model_dump(mode="json")}
    folder = ctx.cache_dir / "models" / f"{name}-{short_digest(full_key, 16)}"
    cached = _load_cached(net, folder, ctx)
    if cached is not None:
        return net, cached
    if not ctx.allow_training:
        raise TrainingRequired(f"{name} is not trained yet (it trains on first use, cached in {folder})")
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(folder / ".train.lock", thread_local=False, preserve_lock_file=True):
        cached = _load_cached(net, folder, ctx)  # another run may have trained it while this one waited
        if cached is not None:
            return net, cached
        return _train(
            net=net,
            spec=spec,
            dataset=dataset,
            spec_train=spec_train,
            ctx=ctx,
            folder=folder,
            full_key=full_key,
            name=name,
            channels_last=channels_last,
        )


def _load_cached(net: nn.Module, folder: Path, ctx: ModelContext) -> dict[str, Any] | None:
    """The cached model's facts (its weights loaded into ``net``), or None when there is no usable cache."""
    weights, meta_path = folder / "weights.pt", folder / "meta.json"
    if meta_path.exists() and weights.exists():
        try:
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            return {**json.loads(meta_path.read_text()), "cached": True, "cache_dir": str(folder)}
        except (RuntimeError, OSError, ValueError, EOFError) as exc:
            ctx.log(f"cached model in {folder} is unreadable ({exc}); training again")
    return None


def _train(
    *,
    net: nn.Module,
    spec: ModelSpec,
    dataset: Dataset,
    spec_train: TrainSpec,
    ctx: ModelContext,
    folder: Path,
    full_key: dict[str, Any],
    name: str,
    channels_last: bool,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train (resuming from a partial checkpoint) and write the cache: what ``finetune_cached`` does on a miss."""
    partial = folder / "partial.pt"
    if "train" not in dataset.splits():
        raise ConfigError(
            f"dataset {dataset.name!r} has no train split to train on",
            field="train.dataset",
            fix="name a dataset with a train split in train.dataset (e.g. cifar10 with its root)",
        )
    frozen = freeze(net, spec_train.freeze)
    resume = _partial_state(partial)
    ctx.log(f"training {name} on {dataset.name} ({spec_train.epochs} epochs; cached in {folder})")
    begin = time.perf_counter()
    train_refs, val_refs = split_train_val(dataset.index("train"), spec_train)
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
        meta.update(_test_accuracy(model, dataset, spec_train, ctx))
    for p in net.parameters():
        p.requires_grad_(True)
    net = net.cpu().to(memory_format=torch.contiguous_format)
    fastpath.release_memory()
    _store(net, meta, folder)
    partial.unlink(missing_ok=True)
    return net, {**meta, "cached": False, "cache_dir": str(folder)}


def _partial_state(partial: Path) -> dict[str, Any] | None:
    """The state an interrupted training run left (``fit``'s checkpoint); None when absent or unreadable."""
    if not partial.exists():
        return None
    try:
        state: dict[str, Any] = torch.load(partial, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError, EOFError):
        return None
    return state


def _test_accuracy(model: nn.Module, dataset: Dataset, spec_train: TrainSpec, ctx: ModelContext) -> dict[str, Any]:
    """Accuracy on a stratified sample of ``eval_samples`` test images, for the model's facts."""
    test_refs = stratified_sample(dataset.index("test"), spec_train.eval_samples, spec_train.seed)
    test = TrainData(dataset, test_refs, "test")
    # batches as forward_batch auto: 256 images of 64 px held 310 MB more with the tuned allocator
    batch = forward_batch_size("auto", test.x if test.x is not None else test.batch(torch.arange(1))[0])
    _, accuracy = evaluate(model, test, ctx.device, batch)
    ctx.log(f"  test accuracy {accuracy:.4f} on {len(test_refs)} images")
    return {"test_accuracy": accuracy, "test_images": len(test_refs)}


def _store(net: nn.Module, meta: dict[str, Any], folder: Path) -> None:
    """Write the trained weights and their facts into the cache folder (atomically); DataError when it is
    not writable."""
    try:
        atomic.write_with(folder / "weights.pt", lambda tmp: torch.save(net.state_dict(), tmp))
        atomic.write_json(folder / "meta.json", meta)
    except OSError as exc:
        raise DataError(
            f"cannot write the model cache {folder}: {exc}", fix="set XBENCH_CACHE to a writable folder"
        ) from exc
