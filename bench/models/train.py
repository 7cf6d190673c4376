"""Train a classifier on a dataset's train split once, and cache the weights by a key.

The cache entry is ``<cache>/models/<name>-<digest>/`` with ``weights.pt`` (a
state dict, loaded back with ``weights_only=True``) and ``meta.json`` (the key,
test accuracy, time taken, versions). Both are written atomically, weights
first, so an entry with a ``meta.json`` is complete.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench import atomic
from bench.datasets.base import Dataset
from bench.errors import DataError
from bench.models.base import ImageClassifier, ModelContext
from bench.seeding import short_digest
from bench.types import ModelSpec


@dataclass(frozen=True)
class TrainRecipe:
    """A training protocol: Adam with a one-cycle learning-rate schedule, optional h-flips."""

    epochs: int = 8
    lr: float = 5e-3
    batch_size: int = 128
    train_samples: int | None = None
    seed: int = 0
    hflip: bool = True

    def identity(self) -> dict[str, Any]:
        return asdict(self)


def _load_split(dataset: Dataset, split: str, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    refs = dataset.index(split)[:limit]
    chunks = [dataset.load(refs[i : i + 1000], split) for i in range(0, len(refs), 1000)]
    return torch.cat([c.x for c in chunks]), torch.cat([c.label for c in chunks])


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch: int = 500) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``x``, ``y``."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += (model(x[i : i + batch].to(device)).argmax(1).cpu() == y[i : i + batch]).sum().item()
    return correct / max(len(x), 1)


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: TrainRecipe,
    device: torch.device,
    log: Callable[[str], None],
) -> None:
    """Train ``model`` in place on (x, y) with ``recipe``; deterministic for a seed on one machine."""
    gen = torch.Generator().manual_seed(recipe.seed)
    steps_per_epoch = (len(x) + recipe.batch_size - 1) // recipe.batch_size
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), recipe.batch_size):
            idx = order[i : i + recipe.batch_size]
            xb = x[idx]
            if recipe.hflip:
                flip = torch.rand(len(idx), generator=gen) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            loss = F.cross_entropy(model(xb.to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        log(f"  epoch {epoch + 1}/{recipe.epochs}: loss {total / len(x):.4f}")
    model.eval()


def train_cached(
    *,
    key: dict[str, Any],
    name: str,
    build: Callable[[], nn.Module],
    spec: ModelSpec,
    dataset: Dataset,
    recipe: TrainRecipe,
    ctx: ModelContext,
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network for ``key``: loaded from the cache, or trained and cached now."""
    folder = ctx.cache_dir / "models" / f"{name}-{short_digest(key, 16)}"
    weights, meta_path = folder / "weights.pt", folder / "meta.json"
    net = build()
    if meta_path.exists() and weights.exists():
        try:
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            meta = json.loads(meta_path.read_text())
            return net, {**meta, "cached": True, "cache_dir": str(folder)}
        except (RuntimeError, OSError, ValueError, EOFError) as exc:  # corrupt entry: retrain
            ctx.log(f"cached model in {folder} is unreadable ({exc}); training again")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = build()
    ctx.log(f"training {name} on {dataset.name} (first use; cached in {folder})")
    start = time.perf_counter()
    x, y = _load_split(dataset, "train", recipe.train_samples)
    wrapped = ImageClassifier(net, spec).to(ctx.device)
    fit(wrapped, x, y, recipe, ctx.device, ctx.log)
    meta: dict[str, Any] = {"key": key, "train_images": len(x), "train_seconds": round(time.perf_counter() - start, 2)}
    if "test" in dataset.splits():
        xt, yt = _load_split(dataset, "test", None)
        meta["test_accuracy"] = accuracy(wrapped, xt, yt, ctx.device)
        meta["test_images"] = len(xt)
        ctx.log(f"  test accuracy {meta['test_accuracy']:.4f} on {len(xt)} images")
    meta["torch"] = torch.__version__
    net = net.cpu()
    try:
        atomic.write_with(weights, lambda tmp: torch.save(net.state_dict(), tmp))
        atomic.write_json(meta_path, meta)
    except OSError as exc:
        raise DataError(
            f"cannot write the model cache {folder}: {exc}", fix="set XBENCH_CACHE to a writable folder"
        ) from exc
    return net, {**meta, "cached": False, "cache_dir": str(folder)}
