"""The `timm` model source: offline weights, preprocessing from the pretrained config, CAM layers per family."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import timm
import torch
from pydantic import ValidationError

from bench.cli import main
from bench.datasets.synthetic import Synthetic, SyntheticParams
from bench.errors import ConfigError, DataError
from bench.models.base import ModelContext
from bench.models.timm_models import TimmModel, TimmParams, cam_layer, hf_cache_dir
from bench.store import read_results
from tests.conftest import tiny_suite, write_suite

TINY = Synthetic(SyntheticParams(size=32, train_size=60, test_size=20))


def _ctx() -> ModelContext:
    return ModelContext(dataset=TINY, device=torch.device("cpu"), log=lambda _: None)


def source(**params) -> TimmModel:
    return TimmModel(TimmParams(**params))


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache and torch hub folder of this test only."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "hf"


def put_in_hf_cache(cache: Path, repo_id: str, state: dict[str, torch.Tensor]) -> Path:
    """Write ``state`` where the hub keeps ``repo_id``'s model.safetensors (refs/main -> snapshot)."""
    from safetensors.torch import save_file

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")
    return snapshot / "model.safetensors"


# ---------------------------------------------------------------- weights, offline


def test_missing_pretrained_weights_name_the_file(hf_cache: Path) -> None:
    model = source(arch="test_resnet")
    with pytest.raises(DataError) as err:
        model.check(TINY)
    text = str(err.value)
    expected = hf_cache / "models--timm--test_resnet.r160_in1k" / "snapshots" / "<revision>" / "model.safetensors"
    assert str(expected) in text and "pretrained: false" in text and err.value.field == "pretrained"
    with pytest.raises(DataError):
        model.load(_ctx())


def test_pretrained_weights_come_from_the_local_hf_cache(hf_cache: Path) -> None:
    reference = timm.create_model("test_resnet", num_classes=1000)
    path = put_in_hf_cache(hf_cache, "timm/test_resnet.r160_in1k", reference.state_dict())
    model = source(arch="test_resnet")
    model.check(TINY)
    loaded = model.load(_ctx())
    assert loaded.info["weights_file"] == str(path)
    torch.testing.assert_close(loaded.module.net.fc.weight, reference.fc.weight)
    assert loaded.spec.label_space == "imagenet1k" and loaded.spec.class_names[281] == "tabby"
    # a new head keeps the pretrained body
    five = source(arch="test_resnet", num_classes=5).load(_ctx())
    torch.testing.assert_close(five.module.net.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    assert five.spec.class_names == TINY.classes and five.module.net.fc.out_features == 5


def test_hf_cache_location_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_cache_dir() == tmp_path / "home" / "hub"


def test_checkpoint_and_random_init(tmp_path: Path) -> None:
    net = timm.create_model("test_resnet", num_classes=5)
    path = tmp_path / "ft.pt"
    torch.save({"state_dict": net.state_dict()}, path)
    model = source(arch="test_resnet", checkpoint=str(path), num_classes=5, classes=list("abcde")).load(_ctx())
    torch.testing.assert_close(model.module.net.fc.weight, net.fc.weight)
    assert model.spec.class_names == tuple("abcde") and model.info["weights"] == "checkpoint"
    with pytest.raises(DataError, match=r"unexpected keys|missing keys|shape mismatches"):
        source(arch="test_convnext", checkpoint=str(path), num_classes=5).load(_ctx())
    a = source(arch="test_resnet", pretrained=False, seed=3).build()[0]
    b = source(arch="test_resnet", pretrained=False, seed=3).build()[0]
    torch.testing.assert_close(a.fc.weight, b.fc.weight)  # seeded
    with pytest.raises(ConfigError, match="7 outputs but 5 class names"):
        source(arch="test_resnet", pretrained=False, num_classes=7).load(_ctx())


def test_unknown_arch_and_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="not a timm model; did you mean resnet50"):
        TimmParams(arch="resnet05")
    assert TimmParams(arch="resnet18.a1_in1k").arch == "resnet18.a1_in1k"  # pretrained tags are fine
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ConfigError, match=r"pip install \"xbench\[timm\]\""):
        TimmModel(TimmParams.model_construct(arch="resnet18", pretrained=False, checkpoint=None)).check(TINY)


# ---------------------------------------------------------------- preprocessing and CAM layers


def test_preprocessing_comes_from_the_pretrained_config() -> None:
    model = source(arch="test_vit", pretrained=False).load(_ctx())
    spec = model.spec
    assert spec.input_size == (160, 160) and spec.mean == (0.5, 0.5, 0.5) and spec.interpolation == "bicubic"
    x = torch.rand(2, 3, 32, 32)
    inside = torch.nn.functional.interpolate(x, size=(160, 160), mode="bicubic", align_corners=False)
    torch.testing.assert_close(model(x), model.module.net((inside - 0.5) / 0.5))
    assert source(arch="test_resnet", pretrained=False).load(_ctx()).spec.interpolation == "bilinear"


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("test_resnet", {"target_layer": "net.layer4", "cam_format": "nchw"}),
        ("test_convnext", {"target_layer": "net.stages.3", "cam_format": "nchw"}),
        ("test_efficientnet", {"target_layer": "net.bn2"}),
        ("mobilenetv3_small_050", {"target_layer": "net.blocks.5", "cam_format": "nchw"}),
        ("swin_tiny_patch4_window7_224", {"target_layer": "net.layers.3", "cam_format": "nhwc"}),
        ("test_vit", {"target_layer": "net.blocks.5.norm1", "cam_format": "tokens", "token_grid": (10, 10),
                      "prefix_tokens": 1}),
        ("mixer_s16_224", {"target_layer": "net.blocks.7.norm1", "cam_format": "tokens", "token_grid": (14, 14)}),
    ],
)  # fmt: skip
def test_cam_layer_per_family(arch: str, expected: dict) -> None:
    with torch.device("meta"):
        net = timm.create_model(arch)
    assert cam_layer(net) == expected
    modules = dict(net.named_modules())
    assert expected["target_layer"].removeprefix("net.") in modules


def test_cam_layer_output_has_the_declared_layout() -> None:
    for arch in ("test_resnet", "test_vit", "test_efficientnet"):
        model = source(arch=arch, pretrained=False).load(_ctx())
        seen: list[torch.Size] = []
        layer = model.layer(model.spec.target_layer)
        handle = layer.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out.shape))
        model(torch.rand(1, 3, 32, 32))
        handle.remove()
        if model.spec.cam_format == "tokens":
            h, w = model.spec.token_grid
            assert seen[0][1] == h * w + model.spec.prefix_tokens, arch
        else:
            assert len(seen[0]) == 4 and seen[0][-1] == 160 // 32, arch


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_random_timm_model_runs_through_a_suite(tmp_path: Path) -> None:
    models = [
        {"name": "timm", "id": "resnet", "params": {"arch": "test_resnet", "pretrained": False, "num_classes": 5}},
        {"name": "timm", "id": "vit", "params": {"arch": "test_vit", "pretrained": False, "num_classes": 5}},
    ]
    suite = tiny_suite(models=models, samples=8, explainers=["saliency", "gradcam"], output=str(tmp_path / "run"))
    suite["metrics"] = [{"name": "iou", "params": {"threshold": "mask_size"}}, "runtime"]
    path = write_suite(tmp_path, suite)
    assert main(["validate", str(path)]) == 0
    assert main(["run", str(path), "--no-progress"]) == 0
    df = read_results(tmp_path / "run")
    iou = df[df["metric"] == "iou"]
    assert set(iou["model"]) == {"resnet", "vit"} and set(iou["explainer"]) == {"saliency", "gradcam"}
    assert len(iou) == 2 * 2 * 8 and iou["status"].isin(["ok", "degenerate"]).all()  # random weights: flat CAMs
