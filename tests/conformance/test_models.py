"""The model contract, run over every registered model source in a tiny configuration, offline.

Per entry of ``entries.MODELS``: ``check`` passes; ``load`` returns an eval-mode module with frozen parameters
whose outputs are (N, num_classes) finite logits for images in [0, 1] at the dataset's resolution and at a
second one; the spec is consistent (input size, mean and std, a CAM layer that exists, the token layout).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.datasets.synthetic import Synthetic, SyntheticParams
from bench.models.base import ModelContext, ModelSource
from bench.registry import MODELS, load_builtin_components
from bench.types import LoadedModel
from tests.conformance.entries import MODELS as ENTRIES

load_builtin_components()
DATA = Synthetic(SyntheticParams(size=24, train_size=16, test_size=10))


def _param(name: str):
    return pytest.param(name, marks=pytest.mark.slow) if ENTRIES[name].slow else name


def _load(name: str, cache: Path) -> tuple[ModelSource, LoadedModel]:
    cls = MODELS.get(name)
    source = cls(cls.Params(**ENTRIES[name].params))
    source.check(DATA)
    ctx = ModelContext(dataset=DATA, device=torch.device("cpu"), cache_dir=cache, log=lambda _: None)
    return source, source.load(ctx)


@pytest.mark.parametrize("name", [_param(n) for n in sorted(ENTRIES)])
def test_load_and_forward(name: str, tmp_path: Path) -> None:
    _, model = _load(name, tmp_path)
    module, spec = model.module, model.spec
    assert not module.training and not any(p.requires_grad for p in module.parameters())
    with torch.no_grad():
        for side in (24, 40):
            logits = model(torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(side)))
            assert logits.shape == (2, spec.num_classes) and torch.isfinite(logits).all(), side
    assert spec.input_size is None or (len(spec.input_size) == 2 and min(spec.input_size) > 0)
    assert len(spec.mean) == len(spec.std) == 3 and min(spec.std) > 0
    assert not spec.class_names or len(spec.class_names) == spec.num_classes
    layers = dict(module.named_modules())
    assert spec.target_layer is None or spec.target_layer in layers, spec.target_layer
    if spec.cam_format == "tokens":
        assert spec.token_grid is not None and spec.prefix_tokens >= 0
