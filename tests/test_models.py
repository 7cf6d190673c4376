"""Model sources: strict state-dict loading, the torchvision zoo offline, CAM layers, targets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from bench.datasets.label_maps import ClassMap
from bench.datasets.synthetic import Synthetic, SyntheticParams
from bench.errors import ConfigError, DataError
from bench.models.base import ModelContext
from bench.models.checkpoints import load_into, read_state_dict
from bench.models.cifar_resnet import CifarResNet, CifarResNetParams, CifarResNetSource
from bench.models.zoo import STUDY_ARCHS, TorchvisionModel, TorchvisionParams, cam_layer, weights_enum, weights_file
from bench.targets import plan_targets, quality
from bench.types import ModelSpec, SampleRef

TINY = Synthetic(SyntheticParams(size=32, train_size=60, test_size=20))


def _ctx() -> ModelContext:
    return ModelContext(dataset=TINY, device=torch.device("cpu"), log=lambda _: None)


@pytest.mark.parametrize(("depth", "params"), [(20, 269_722), (32, 464_154), (44, 658_586), (56, 853_018)])
def test_cifar_resnet_sizes_match_the_paper(depth: int, params: int) -> None:
    """He et al. 2016, Table 6: 0.27M, 0.46M, 0.66M, 0.85M parameters."""
    net = CifarResNet(depth)
    assert sum(p.numel() for p in net.parameters()) == params
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_cifar_resnet_checkpoint_round_trip_with_dataparallel_prefix(tmp_path: Path) -> None:
    net = CifarResNet(20)
    path = tmp_path / "r20.th"
    torch.save({"best_prec1": 91.0, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    model = CifarResNetSource(CifarResNetParams(depth=20, checkpoint=str(path))).load(_ctx())
    x = torch.rand(3, 3, 32, 32)
    net.eval()
    expected = net((x - model.module.mean) / model.module.std)
    torch.testing.assert_close(model(x), expected)
    assert model.spec.target_layer == "net.layer3" and model.spec.label_space == "cifar10"
    assert not model.module.training and not any(p.requires_grad for p in model.module.parameters())


def test_wrong_checkpoint_names_file_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "r56.th"
    torch.save(CifarResNet(56).state_dict(), path)
    with pytest.raises(DataError) as info:
        CifarResNetSource(CifarResNetParams(depth=20, checkpoint=str(path))).load(_ctx())
    text = str(info.value)
    assert str(path) in text and "unexpected keys" in text and "layer1.3" in text
    truncated = tmp_path / "cut.th"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="cannot load checkpoint"):
        read_state_dict(truncated)


def test_checkpoints_that_need_code_are_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Evil()}, path)
    with pytest.raises(DataError, match="weights_only"):
        read_state_dict(path)


def test_load_into_reports_shape_mismatch() -> None:
    net = nn.Linear(3, 2)
    with pytest.raises(DataError, match="shape mismatches weight"):
        load_into(net, {"weight": torch.zeros(4, 3), "bias": torch.zeros(2)}, "somewhere.pt")


def test_missing_imagenet_weights_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("bench.models.zoo._network_reachable", lambda *a: False)
    source = TorchvisionModel(TorchvisionParams(arch="resnet18"))
    with pytest.raises(DataError) as info:
        source.check(TINY)
    text = str(info.value)
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in text and "download.pytorch.org" in text and "weights: none" in text
    with pytest.raises(DataError):
        source.load(_ctx())


def test_weights_from_the_hub_cache_are_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A weights file placed in $TORCH_HOME/hub/checkpoints is loaded without any network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("bench.models.zoo._network_reachable", lambda *a: False)
    source = TorchvisionModel(TorchvisionParams(arch="resnet18"))
    fake = source.build(1000)
    path = weights_file(weights_enum("resnet18", "DEFAULT"))
    path.parent.mkdir(parents=True)
    torch.save(fake.state_dict(), path)
    model = source.load(_ctx())
    torch.testing.assert_close(model.module.net.fc.weight, fake.fc.weight)
    assert model.spec.label_space == "imagenet1k" and model.spec.input_size == (224, 224)
    assert model.spec.class_names[281] == "tabby"
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 1000)  # 32x32 inputs are upsampled inside


def test_random_init_and_fine_tuned_checkpoint(tmp_path: Path) -> None:
    source = TorchvisionModel(TorchvisionParams(arch="resnet18", weights="none", seed=3))
    a, b = source.build(5), TorchvisionModel(TorchvisionParams(arch="resnet18", weights="none", seed=3)).build(5)
    torch.testing.assert_close(a.fc.weight, b.fc.weight)  # seeded
    path = tmp_path / "ft.pt"
    torch.save(a.state_dict(), path)
    model = TorchvisionModel(TorchvisionParams(arch="resnet18", checkpoint=str(path), num_classes=5)).load(_ctx())
    assert model.spec.class_names == TINY.classes and model.spec.num_classes == 5
    assert all(not m.inplace for m in model.module.modules() if isinstance(m, nn.ReLU))


def test_unknown_arch_and_weights() -> None:
    with pytest.raises(ValueError, match="did you mean resnet50"):
        TorchvisionParams(arch="resnet05")
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        weights_enum("resnet50", "IMAGENET22K")


EXPECTED_LAYERS = {
    "resnet34": "net.layer4",
    "resnet50": "net.layer4",
    "resnet101": "net.layer4",
    "vgg13": "net.features.23",
    "vgg16": "net.features.29",
    "alexnet": "net.features.11",
    "densenet161": "net.features",
    "squeezenet1_1": "net.features",
    "vit_b_16": "net.encoder.layers.encoder_layer_11.ln_1",
}


@pytest.mark.parametrize("arch", STUDY_ARCHS)
def test_default_cam_layer_of_the_study_architectures(arch: str) -> None:
    with torch.device("meta"):
        net = TorchvisionModel(TorchvisionParams(arch=arch, weights="none")).build(1000)
    layer = cam_layer(arch, net)
    assert layer["target_layer"] == EXPECTED_LAYERS[arch]
    path = layer["target_layer"].removeprefix("net.")
    module = net.get_submodule(path)
    if arch.startswith(("vgg", "alexnet")):
        assert isinstance(module, nn.ReLU)  # the activation of the last convolution
    if arch == "vit_b_16":
        assert layer["cam_format"] == "tokens" and layer["token_grid"] == (14, 14) and layer["prefix_tokens"] == 1


# ---------------------------------------------------------------- targets


class _Data:
    """The parts of a dataset that target planning reads."""

    name = "toy"

    def __init__(self, classes: tuple[str, ...], sets: list[tuple[int, ...]] | None = None):
        self.classes = classes
        self._sets = sets

    def class_map(self, spec: ModelSpec) -> ClassMap | None:
        return None if self._sets is None else ClassMap(self._sets, [None] * len(self._sets), "a test map")


def test_target_rules() -> None:
    refs = [SampleRef("a", 0), SampleRef("b", 1), SampleRef("c", 2)]
    probs = torch.tensor([[0.1, 0.6, 0.2, 0.1], [0.1, 0.1, 0.7, 0.1], [0.2, 0.3, 0.4, 0.1]])
    same = ModelSpec(num_classes=3, class_names=("x", "y", "z"))
    data = _Data(("x", "y", "z"))
    plan = plan_targets("auto", probs[:, :3], refs, same, data)
    assert plan.rule == "label" and plan.target.tolist() == [0, 1, 2] and plan.correct == [False, False, True]
    assert plan_targets("predicted", probs[:, :3], refs, same, data).target.tolist() == [1, 2, 2]
    other = ModelSpec(num_classes=4, class_names=("p", "q", "r", "s"), label_space="imagenet1k")
    mapped = _Data(("x", "y", "z"), sets=[(1, 3), (0,), ()])
    plan = plan_targets("auto", probs, refs, other, mapped)
    assert plan.rule == "mapped"
    assert plan.target.tolist() == [1, 0, -1]  # best inside the set; no counterpart for z
    assert plan.correct == [True, False, None] and plan.predicted_class == [0, -1, -1]
    assert "no counterpart in imagenet1k" in plan.reasons[2]
    q = quality([0, 1, 2], plan)
    assert q["accuracy"] == 0.5 and q["n_scored"] == 2 and q["n_no_target"] == 1
    with pytest.raises(ConfigError, match="target: label needs"):
        plan_targets("label", probs, refs, other, mapped)
    with pytest.raises(ConfigError, match="target: mapped needs"):
        plan_targets("mapped", probs, refs, other, _Data(("x", "y", "z")))


def test_macro_f1_by_hand() -> None:
    refs = [SampleRef(str(i), label) for i, label in enumerate([0, 0, 1, 1])]
    probs = torch.eye(2)[[0, 1, 1, 1]]  # predictions 0, 1, 1, 1
    spec = ModelSpec(num_classes=2, class_names=("a", "b"))
    q = quality([0, 0, 1, 1], plan_targets("label", probs, refs, spec, _Data(("a", "b"))))
    # class a: P=1, R=.5, F1=2/3; class b: P=2/3, R=1, F1=.8
    assert q["accuracy"] == 0.75
    assert q["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert q["macro_precision"] == pytest.approx((1 + 2 / 3) / 2) and q["macro_recall"] == pytest.approx(0.75)


def test_vgg13_cifar_loads_a_checkpoint_instead_of_training(tmp_path: Path) -> None:
    from bench.models.base import ModelContext
    from bench.models.vgg_cifar import build_vgg13_cifar
    from bench.registry import DATASETS, MODELS, load_builtin_components

    load_builtin_components()
    checkpoint = tmp_path / "vgg13.pt"
    torch.save(build_vgg13_cifar(5).state_dict(), checkpoint)
    data = DATASETS.get("synthetic")(DATASETS.get("synthetic").Params(size=32, train_size=10, test_size=10))
    source = MODELS.get("vgg13_cifar")(MODELS.get("vgg13_cifar").Params(checkpoint=str(checkpoint)))
    model = source.load(ModelContext(dataset=data, device=torch.device("cpu"), cache_dir=tmp_path))
    assert not source.trains() and model.spec.target_layer == "net.0.13"  # the last ReLU of the features
    assert model.module(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    assert model.info["checkpoint"] == str(checkpoint)


@pytest.mark.parametrize(
    ("name", "params"), [("efficientnet_lite0", {"weights": "none"}), ("resnet34", {"weights": "none"})]
)
def test_untrained_models_are_the_same_network_on_every_load(name: str, params: dict) -> None:
    """An untrained control model must not change between runs: cells reused from one run and predictions of
    the next would otherwise describe two different networks."""
    import torch

    from bench.datasets.synthetic import Synthetic
    from bench.models.base import ModelContext
    from bench.registry import MODELS, load_builtin_components

    load_builtin_components()
    cls = MODELS.get(name)
    loads = [
        cls(cls.Params(**params)).load(ModelContext(dataset=Synthetic(), device=torch.device("cpu"))) for _ in range(2)
    ]
    first, second = (m.module.state_dict() for m in loads)
    assert all(torch.equal(first[k], second[k]) for k in first)
