"""Fine-tuning: protocols and presets, a tiny CPU run that is cached, and resumption after a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import bench.models.training as training
from bench.cli import main
from bench.datasets.synthetic import Synthetic, SyntheticParams
from bench.models.base import ModelContext
from bench.models.finetune import PRESETS, TrainSpec, freeze, replace_head
from bench.models.zoo import STUDY_ARCHS, TorchvisionModel, TorchvisionParams
from tests.conftest import tiny_suite, write_suite

DATA = Synthetic(SyntheticParams(size=32, train_size=400, test_size=100))
TRAIN = {"epochs": 1, "train_samples": 300, "batch_size": 50, "lr": 1e-3, "input_size": 32, "eval_samples": 100}


def _source(**train) -> TorchvisionModel:
    return TorchvisionModel(TorchvisionParams(arch="resnet18", weights="none", input_size=32, train={**TRAIN, **train}))


def _ctx(cache: Path, log=None) -> ModelContext:
    return ModelContext(dataset=DATA, device=torch.device("cpu"), cache_dir=cache, log=log or (lambda _: None))


def test_presets_fill_unset_fields_and_overrides_win() -> None:
    spec = TrainSpec(preset="resnet50_cifar10", epochs=1)
    assert (spec.lr, spec.weight_decay, spec.batch_size, spec.dropout) == (1e-4, 1e-4, 32, 0.5)
    assert spec.scheduler == "plateau" and spec.augment == ["crop", "flip", "color_jitter"] and spec.input_size == 224
    assert spec.epochs == 1
    assert TrainSpec(preset="vit_b16_cifar10").weight_decay == 0.01
    assert TrainSpec(preset="resnet34_cifar10").lr == 1e-5
    assert TrainSpec(preset="vgg13_cifar10_scratch").head == "keep"
    with pytest.raises(ValueError, match="unknown preset"):
        TrainSpec(preset="resnet51")
    assert set(PRESETS) >= {"resnet50_cifar10", "resnet34_cifar10", "vit_b16_cifar10", "vgg13_cifar10_scratch"}


@pytest.mark.parametrize("arch", STUDY_ARCHS)
def test_replace_head_on_every_study_architecture(arch: str) -> None:
    with torch.device("meta"):
        net = TorchvisionModel(TorchvisionParams(arch=arch, weights="none")).build(1000)
        replace_head(net, 10, dropout=0.5)
        size = 299 if arch == "inception_v3" else 224
        out = net(torch.zeros(2, 3, size, size))
    assert out.shape == (2, 10)


def test_freeze_backbone_leaves_only_the_head_trainable() -> None:
    net = TorchvisionModel(TorchvisionParams(arch="resnet18", weights="none")).build(10)
    frozen = freeze(net, ["backbone"])
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    assert len(frozen) == len(list(net.parameters())) - 2
    freeze(net, ["layer4"])
    assert all(p.requires_grad != n.startswith("layer4") for n, p in net.named_parameters())
    with pytest.raises(Exception, match="no parameters under"):
        freeze(net, ["layer9"])


@pytest.mark.slow
def test_tiny_fine_tuning_is_cached_and_reused(tmp_path: Path) -> None:
    logs: list[str] = []
    model = _source().load(_ctx(tmp_path, logs.append))
    info = model.info["finetuned"]
    assert info["cached"] is False and info["train_images"] == 300 and 0 <= info["test_accuracy"] <= 1
    folder = Path(info["cache_dir"])
    assert (folder / "weights.pt").exists() and (folder / "meta.json").exists() and not (folder / "partial.pt").exists()
    assert any("training resnet18" in line for line in logs)
    assert model.spec.class_names == DATA.classes and model.spec.input_size == (32, 32)
    logs.clear()
    again = _source().load(_ctx(tmp_path, logs.append))
    assert again.info["finetuned"]["cached"] is True and not any("training" in line for line in logs)
    for a, b in zip(model.module.parameters(), again.module.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    other = _source(lr=2e-3).load(_ctx(tmp_path))  # another protocol is another cache entry
    assert other.info["finetuned"]["cache_dir"] != info["cache_dir"]


@pytest.mark.slow
def test_training_resumes_after_a_crash_with_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {"epochs": 2, "scheduler": "cosine", "dropout": 0.3}
    straight = _source(**spec).load(_ctx(tmp_path / "straight"))
    real_augment, calls = training.augment, {"n": 0}

    def crash_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # 6 batches per epoch: crash in the second epoch
            raise KeyboardInterrupt
        return real_augment(*args, **kwargs)

    monkeypatch.setattr(training, "augment", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        _source(**spec).load(_ctx(tmp_path / "crashed"))
    partial = next((tmp_path / "crashed" / "models").glob("*/partial.pt"))
    assert torch.load(partial, weights_only=True)["epoch"] == 0
    monkeypatch.setattr(training, "augment", real_augment)
    logs: list[str] = []
    resumed = _source(**spec).load(_ctx(tmp_path / "crashed", logs.append))
    assert any("resuming after epoch 1/2" in line for line in logs)
    for a, b in zip(straight.module.parameters(), resumed.module.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert not partial.exists()


def test_xbench_train_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = {"name": "torchvision", "id": "r18", "params": {"arch": "resnet18", "weights": "none", "input_size": 32,
                                                              "train": TRAIN}}  # fmt: skip
    data = {"name": "synthetic", "params": {"size": 32, "train_size": 400, "test_size": 100}}
    path = write_suite(tmp_path, tiny_suite(models=[model], datasets=[data]))
    assert main(["train", str(path)]) == 0
    assert "| trained" in capsys.readouterr().out
    assert main(["train", str(path)]) == 0
    assert "| reused" in capsys.readouterr().out


def test_frozen_batchnorm_keeps_its_statistics() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 3, 8, 8))
    freeze(net, ["0", "1"])
    before = net[1].running_mean.clone()
    net.train()
    training._keep_frozen_in_eval(net)
    net(torch.rand(4, 3, 8, 8) + 5)
    torch.testing.assert_close(net[1].running_mean, before)
