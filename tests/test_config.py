"""Suite validation: every bad input ends in one clear paragraph (file, field, fix) and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from bench.config import load_suite
from bench.errors import ConfigError, XbenchError
from tests.conftest import tiny_suite, write_suite


def _cli_error(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def test_quickstart_suite_is_valid() -> None:
    suite = load_suite(Path(__file__).resolve().parents[1] / "suites" / "quickstart.yaml")
    assert set(suite.explainers) == {"saliency", "integrated_gradients", "gradcam", "random"}
    assert set(suite.metrics) == {"deletion", "insertion", "iou", "runtime"}
    assert suite.config.samples == 200


def test_bare_names_and_defaults(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, tiny_suite()))
    assert suite.explainers["saliency"].params.reduce == "max_abs"
    assert suite.metrics["deletion"].params.steps == 8
    assert suite.output_dir == Path("runs") / "suite=tiny" / "run=latest"


def test_malformed_yaml_names_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 0\ndatasets: [synthetic\nmodels: [small_cnn]\n")
    code, err = _cli_error(capsys, "validate", str(path))
    assert code == 2
    assert f"{path}:3:" in err and "malformed YAML" in err and "Fix:" in err
    assert "Traceback" not in err


def test_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_suite(path)


def test_unknown_top_level_key_suggests_the_right_one(tmp_path: Path) -> None:
    suite = tiny_suite()
    suite["samplez"] = suite.pop("samples")
    with pytest.raises(ConfigError) as info:
        load_suite(write_suite(tmp_path, suite))
    text = str(info.value)
    assert "field `samplez`" in text and "did you mean 'samples'" in text and "suite.yaml:" in text


def test_unknown_param_key_lists_allowed_keys(tmp_path: Path) -> None:
    suite = tiny_suite(explainers=[{"name": "integrated_gradients", "params": {"n_stepz": 5}}])
    with pytest.raises(ConfigError) as info:
        load_suite(write_suite(tmp_path, suite))
    text = str(info.value)
    assert "explainers[0].params.n_stepz" in text
    assert "did you mean 'n_steps'" in text and "internal_batch_size" in text


def test_unknown_component_name_suggests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_suite(write_suite(tmp_path, tiny_suite(explainers=["gradcm"])))
    text = str(info.value)
    assert "unknown explainer 'gradcm'" in text and "'gradcam'" in text and "explainers[0].name" in text


def test_wrong_param_type_names_field_and_value(tmp_path: Path) -> None:
    suite = tiny_suite(explainers=[{"name": "integrated_gradients", "params": {"n_steps": "ten"}}])
    path = write_suite(tmp_path, suite)
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    text = str(info.value)
    assert "explainers[0].params.n_steps" in text and "'ten'" in text and "integer" in text
    line = path.read_text().splitlines().index("    n_steps: ten") + 1
    assert f"suite.yaml:{line}" in text


def test_wrong_literal_and_range(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="device"):
        load_suite(write_suite(tmp_path, tiny_suite(device="tpu")))
    with pytest.raises(ConfigError, match="batch_size"):
        load_suite(write_suite(tmp_path, tiny_suite(batch_size=0)))
    bad_metric = [{"name": "iou", "params": {"threshold": "topk", "value": 0}}]
    with pytest.raises(ConfigError, match="percentage"):
        load_suite(write_suite(tmp_path, tiny_suite(metrics=bad_metric)))


def test_missing_required_section(tmp_path: Path) -> None:
    suite = tiny_suite()
    del suite["models"]
    with pytest.raises(ConfigError, match="add `models`"):
        load_suite(write_suite(tmp_path, suite))


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(
        "seed: 0\nseed: 1\ndatasets: [synthetic]\nmodels: [small_cnn]\nexplainers: [random]\nmetrics: [iou]\n"
    )
    with pytest.raises(ConfigError, match="appears twice"):
        load_suite(path)


def test_duplicate_entry_ids_are_refused(tmp_path: Path) -> None:
    suite = tiny_suite(explainers=["saliency", "saliency"])
    with pytest.raises(ConfigError, match="distinct `id`"):
        load_suite(write_suite(tmp_path, suite))
    ok = tiny_suite(explainers=["saliency", {"name": "saliency", "id": "saliency_l2", "params": {"reduce": "l2"}}])
    assert set(load_suite(write_suite(tmp_path, ok)).explainers) == {"saliency", "saliency_l2"}


@pytest.mark.parametrize("bad_id", ["../escape", "/abs", ".hidden", "a/b"])
def test_ids_cannot_escape_the_output_folder(tmp_path: Path, bad_id: str) -> None:
    suite = tiny_suite(explainers=[{"name": "saliency", "id": bad_id}])
    with pytest.raises(ConfigError, match="explainers"):
        load_suite(write_suite(tmp_path, suite))


def test_yaml_tags_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "tag.yaml"
    marker = tmp_path / "pwned"
    path.write_text(f'datasets: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match="tag"):
        load_suite(path)
    assert not marker.exists()


def test_samples_mapping_must_name_datasets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"samples\.cifar"):
        load_suite(write_suite(tmp_path, tiny_suite(samples={"cifar": 10})))


def test_missing_suite_file(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code, err = _cli_error(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert code == 2 and "suite file not found" in err


def test_missing_data_directory_names_suite_line_and_field(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    suite = tiny_suite(datasets=[{"name": "imagefolder", "params": {"root": str(tmp_path / "absent")}}])
    path = write_suite(tmp_path, suite)
    code, err = _cli_error(capsys, "validate", "--strict", str(path))
    assert code == 2
    assert "datasets[0].params.root" in err and "does not exist" in err and f"{path}:" in err
    assert "Traceback" not in err
    code, err = _cli_error(capsys, "run", str(path))
    assert code == 2 and "datasets[0].params.root" in err


def test_validate_reports_missing_data_without_failing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    suite = tiny_suite(datasets=[{"name": "imagefolder", "params": {"root": str(tmp_path / "absent")}}],
                       models=[{"name": "cifar_resnet",
                               "params": {"checkpoint": str(tmp_path / "nope.th")}}])  # fmt: skip
    path = write_suite(tmp_path, suite)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("not available on this machine") == 2 and "nope.th" in out and "absent" in out


def test_unwritable_output_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    path = write_suite(tmp_path, tiny_suite(output=str(blocker / "run")))
    code, err = _cli_error(capsys, "run", str(path))
    assert code == 2 and "field `output`" in err and "cannot write" in err
    code, err = _cli_error(capsys, "run", str(path), "--output", str(blocker / "x"))
    assert code == 2 and "--output" in err
    assert blocker.read_text() == "not a folder"


def test_validate_does_not_leave_the_output_folder_behind(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "deep" / "run"
    assert main(["validate", str(write_suite(tmp_path, tiny_suite(output=str(out))))]) == 0
    assert not (tmp_path / "deep").exists()
    text = capsys.readouterr().out
    assert "3 cells" in text and "48 explained images" in text


def test_debug_flag_shows_the_traceback(tmp_path: Path) -> None:
    path = write_suite(tmp_path, tiny_suite(explainers=["gradcm"]))
    with pytest.raises(XbenchError):
        main(["--debug", "validate", str(path)])


def test_exclude_rules(tmp_path: Path) -> None:
    from bench.plan import build_plan

    suite = tiny_suite(
        exclude=[{"explainer": "rand*"}, {"explainer": "gradcam", "metric": "iou"}],
    )
    cells = build_plan(load_suite(write_suite(tmp_path, suite)))
    assert [c.explainer for c in cells] == ["saliency", "gradcam"]
    assert "iou" not in cells[1].metrics and "iou" in cells[0].metrics
    with pytest.raises(ConfigError, match="at least one"):
        load_suite(write_suite(tmp_path, tiny_suite(exclude=[{}])))


def test_unknown_key_that_looks_like_a_type_tag_is_named(tmp_path: Path) -> None:
    """Found by the fuzz test: a key spelled like one of pydantic's union tags ("none", "int") crashed
    the error renderer instead of being reported."""
    suite = tiny_suite()
    suite["none"] = None
    with pytest.raises(ConfigError) as info:
        load_suite(write_suite(tmp_path, suite))
    assert "unknown key 'none'" in str(info.value) and "did you mean" not in str(info.value)
