"""The dataset contract, run over every registered dataset on a tiny fixture in its exact on-disk format.

Per entry of ``entries.DATASETS``: ``check`` passes; ``index`` lists unique ids with labels in range, the
same every time; stratified sampling is deterministic, independent of the order of the index and
prefix-stable; ``load`` returns float32 images in [0, 1] of the shape ``image_shape()`` announces, the
requested ids and labels, uint8 masks of 0/1/255 with an object in each; resizing datasets resize on request
and keep each mask at its original size; a damaged file is skipped and counted, never dropped silently.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from bench.datasets.base import Dataset, stratified_sample
from bench.registry import DATASETS, load_builtin_components
from bench.types import VOID
from tests.conformance.entries import DATASETS as ENTRIES

load_builtin_components()
NAMES = sorted(ENTRIES)


def _dataset(name: str, folder: Path) -> Dataset:
    cls = DATASETS.get(name)
    return cls(cls.Params(**ENTRIES[name].make(folder)))


@pytest.mark.parametrize("name", NAMES)
def test_index_and_sampling(name: str, tmp_path: Path) -> None:
    data = _dataset(name, tmp_path)
    data.check()
    for split in data.splits():
        refs = data.index(split)
        assert refs and len({r.id for r in refs}) == len(refs), f"{name}/{split}: ids must be unique"
        assert all(0 <= r.label < len(data.classes) for r in refs)
        assert data.index(split) == refs, "the index is the same every time"
    refs = data.index(data.eval_split)
    n = max(2, len(refs) - 1)
    chosen = stratified_sample(refs, n, seed=3)
    shuffled = random.Random(0).sample(refs, len(refs))
    assert stratified_sample(shuffled, n, seed=3) == chosen, "sampling ignores the order of the index"
    assert stratified_sample(refs, n - 1, seed=3) == chosen[: n - 1], "growing n only adds samples"
    counts = Counter(r.label for r in chosen)
    available = Counter(r.label for r in refs)
    assert max(counts.values()) - min(counts.values()) <= 1 or any(counts[k] == available[k] for k in counts)


@pytest.mark.parametrize("name", NAMES)
def test_load(name: str, tmp_path: Path) -> None:
    data = _dataset(name, tmp_path)
    refs = data.index(data.eval_split)[:4]
    batch = data.load(refs, data.eval_split)
    n = len(refs)
    assert batch.ids == [r.id for r in refs] and not batch.skipped
    assert batch.label.dtype == torch.int64 and batch.label.tolist() == [r.label for r in refs]
    assert batch.x.dtype == torch.float32 and batch.x.shape[:2] == (n, 3)
    assert batch.x.min() >= 0 and batch.x.max() <= 1
    shape = data.image_shape()
    assert shape is None or tuple(batch.x.shape[1:]) == tuple(shape)
    assert (shape is None) == data.variable_size, "only variable-size datasets leave their shape open"
    if data.has_masks:
        _check_masks(batch.mask, batch.x)
    else:
        assert batch.mask is None


def _check_masks(mask: torch.Tensor, x: torch.Tensor) -> None:
    assert mask.dtype == torch.uint8 and mask.shape == (x.shape[0], 1, *x.shape[-2:])
    assert set(mask.unique().tolist()) <= {0, 1, VOID}
    assert (mask == 1).flatten(1).any(1).all(), "every sample's mask holds its object"


@pytest.mark.parametrize("name", NAMES)
def test_resize_on_request_keeps_original_masks(name: str, tmp_path: Path) -> None:
    data = _dataset(name, tmp_path)
    refs = data.index(data.eval_split)[:3]
    batch = data.load(refs, data.eval_split, image_size=(12, 10))
    assert batch.x.shape == (len(refs), 3, 12, 10)
    if data.has_masks:
        _check_masks(batch.mask, batch.x)
    if data.variable_size and data.has_masks:
        assert batch.original_masks is not None and len(batch.original_masks) == len(refs)
        for original in batch.original_masks:
            assert original.dtype == torch.uint8 and original.dim() == 3 and original.shape[0] == 1
            assert set(original.unique().tolist()) <= {0, 1, VOID} and (original == 1).any()


@pytest.mark.parametrize("name", NAMES)
def test_damaged_files_are_skipped_and_counted(name: str, tmp_path: Path) -> None:
    entry = ENTRIES[name]
    assert (entry.corrupt is None) == bool(entry.no_corrupt), "declare how to damage a file, or why not"
    if entry.corrupt is None:
        return
    data = _dataset(name, tmp_path)
    refs = data.index(data.eval_split)
    damaged = entry.corrupt(tmp_path, refs)
    batch = data.load(refs, data.eval_split)
    assert damaged and {sample for sample, _ in batch.skipped} == damaged
    assert all(reason for _, reason in batch.skipped)
    assert batch.ids == [r.id for r in refs if r.id not in damaged]
    assert len(batch.ids) + len(batch.skipped) == len(refs)
