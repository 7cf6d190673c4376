"""The `cifar10` loader on fixtures in torchvision's exact on-disk format (Python 2 pickles, protocol 2).

The fixtures are written the way the original files from Toronto were: a Python 2
``cPickle`` of a dict whose keys and byte strings are Python 2 ``str`` (so they load
as bytes with ``encoding="bytes"`` and as str with torchvision's ``encoding="latin1"``),
and ``data`` a uint8 array (N, 3072) holding the R, G and B planes of each image.
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import struct
import subprocess
import urllib.error
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

import bench.datasets.cifar10 as cifar_module
from bench.datasets.base import stratified_sample
from bench.datasets.cifar10 import BASE_FOLDER, CIFAR10, CLASSES, CIFAR10Params
from bench.errors import DataError
from bench.types import SampleRef

TRAIN_SIZES = (4, 3, 5, 2, 6)  # images in data_batch_1..5: uneven, so concatenation order shows
TEST_SIZE = 30


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be changed
    """Protocol 2 as Python 2 wrote it: every str and bytes becomes a Python 2 ``str`` (BINSTRING)."""

    dispatch: ClassVar[dict[type, Any]] = dict(pickle._Pickler.dispatch)

    def save_py2_string(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string


def py2_pickle(obj: Any) -> bytes:
    """``obj`` pickled like CIFAR's files, including NumPy 1's module name for array reconstruction."""
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(
        b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n"
    )


def batch_record(name: str, data: np.ndarray, labels: list[int]) -> dict[bytes, Any]:
    return {
        b"batch_label": name.encode(),
        b"labels": labels,
        b"data": data,
        b"filenames": [f"image_{i}.png".encode() for i in range(len(labels))],
    }


def write_cifar(root: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Write data_batch_1..5, test_batch and batches.meta under root/cifar-10-batches-py; returns what was written."""
    folder = root / BASE_FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written: dict[str, tuple[np.ndarray, list[int]]] = {}
    files = [(f"data_batch_{i + 1}", n) for i, n in enumerate(TRAIN_SIZES)] + [("test_batch", TEST_SIZE)]
    for offset, (name, n) in enumerate(files):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [(i + offset) % 10 for i in range(n)]
        (folder / name).write_bytes(py2_pickle(batch_record(name, data, labels)))
        written[name] = (data, labels)
    meta = {b"num_cases_per_batch": 10000, b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return written


@pytest.fixture
def cifar(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, list[int]]]]:
    root = tmp_path / "data"
    return root, write_cifar(root)


def dataset(root: Path, **params: Any) -> CIFAR10:
    return CIFAR10(CIFAR10Params(root=str(root), **params))


def test_pixels_round_trip_exactly(cifar) -> None:
    root, written = cifar
    data, labels = written["test_batch"]
    ds = dataset(root)
    ds.check()
    batch = ds.load(ds.index("test")[5:9], "test")
    assert batch.x.shape == (4, 3, 32, 32) and batch.x.dtype == torch.float32
    # The green value of row 5, column 9 of test image 7 is byte 1024 + 5 * 32 + 9 of its row.
    byte = int(data[7, 1024 + 5 * 32 + 9])
    assert batch.x[2, 1, 5, 9].item() == np.float32(byte) / np.float32(255)
    expected = torch.from_numpy(data[5:9].reshape(4, 3, 32, 32).astype(np.float32) / np.float32(255))
    assert torch.equal(batch.x, expected)
    assert batch.label.tolist() == labels[5:9] and batch.label.dtype == torch.int64
    assert batch.ids == ["test/00005", "test/00006", "test/00007", "test/00008"]
    assert batch.mask is None and batch.skipped == [] and not ds.has_masks


def test_splits_sizes_ids_and_classes(cifar) -> None:
    root, written = cifar
    ds = dataset(root)
    assert ds.splits() == ("train", "test") and ds.eval_split == "test"
    assert dataset(root, split="train").eval_split == "train"
    assert ds.classes == CLASSES and ds.classes[3] == "cat" and len(ds.classes) == 10
    test, train = ds.index("test"), ds.index("train")
    assert len(test) == TEST_SIZE and len(train) == sum(TRAIN_SIZES) == 20
    assert [r.id for r in test[:2]] == ["test/00000", "test/00001"] and train[-1].id == "train/00019"
    assert [r.label for r in train] == [label for i in range(5) for label in written[f"data_batch_{i + 1}"][1]]
    assert ds.index("test") == dataset(root).index("test")  # deterministic across instances


def test_train_batches_are_concatenated_in_order(cifar) -> None:
    root, written = cifar
    ds = dataset(root, split="train")
    # train/00007 is the first image of data_batch_3 (4 + 3 images come before it).
    batch = ds.load([r for r in ds.index("train") if r.id in ("train/00007", "train/00019")], "train")
    first_of_3 = written["data_batch_3"][0][0]
    last_of_5 = written["data_batch_5"][0][-1]
    assert torch.equal(batch.x[0], torch.from_numpy(first_of_3.reshape(3, 32, 32).astype(np.float32) / 255))
    assert torch.equal(batch.x[1], torch.from_numpy(last_of_5.reshape(3, 32, 32).astype(np.float32) / 255))
    assert batch.label.tolist() == [written["data_batch_3"][1][0], written["data_batch_5"][1][-1]]


def test_stratified_sampling_spreads_over_classes(cifar) -> None:
    root, _ = cifar
    ds = dataset(root)
    refs = stratified_sample(ds.index("test"), 10, seed=3)
    assert sorted(r.label for r in refs) == list(range(10))  # 3 per class available: one of each
    assert refs == stratified_sample(dataset(root).index("test"), 10, seed=3)
    batch = ds.load(refs, "test")
    assert batch.ids == [r.id for r in refs] and batch.label.tolist() == [r.label for r in refs]
    counts = Counter(r.label for r in stratified_sample(ds.index("test"), 20, seed=3))
    assert set(counts.values()) == {2}


def test_resize_on_load(cifar) -> None:
    root, _ = cifar
    ds = dataset(root)
    batch = ds.load(ds.index("test")[:3], "test", image_size=(16, 16))
    assert batch.x.shape == (3, 3, 16, 16) and batch.x.min() >= 0 and batch.x.max() <= 1


def test_matches_torchvision_reference(cifar, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's own CIFAR10 class reads the fixture to the same images, labels and class names."""
    import torchvision.datasets.cifar as tv_cifar

    root, _ = cifar
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)  # fixture MD5s differ
    for split in ("test", "train"):
        reference = tv_cifar.CIFAR10(str(root), train=split == "train", download=False)
        ds = dataset(root, split=split)
        refs = ds.index(split)
        batch = ds.load(refs, split)
        image, label = reference[0]  # a PIL image (HWC) and an int
        assert np.array_equal(np.asarray(image), (batch.x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
        assert label == batch.label[0].item() == refs[0].label
        assert torch.equal(batch.x, torch.from_numpy(reference.data).permute(0, 3, 1, 2).float() / 255)
        assert batch.label.tolist() == list(reference.targets)
        assert tuple(reference.classes) == ds.classes


def test_python3_protocol2_pickles_load_too(tmp_path: Path) -> None:
    """A batch written by ``pickle.dump(..., protocol=2)`` in Python 3 (bytes via codecs.encode) reads the same."""
    root = tmp_path / "data"
    write_cifar(root)
    data = np.random.default_rng(1).integers(0, 256, size=(2, 3072), dtype=np.uint8)
    with (root / BASE_FOLDER / "test_batch").open("wb") as handle:
        pickle.dump(batch_record("test", data, [3, 8]), handle, protocol=2)
    ds = dataset(root)
    batch = ds.load(ds.index("test"), "test")
    assert batch.label.tolist() == [3, 8]
    assert batch.x[1, 2, 31, 31].item() == np.float32(data[1, 3071]) / np.float32(255)
    assert torch.equal(batch.x, torch.from_numpy(data.reshape(2, 3, 32, 32)).float() / 255)


def test_missing_folder_names_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        dataset(tmp_path / "nowhere").check()
    text = str(info.value)
    assert info.value.field == "root"
    assert str(tmp_path / "nowhere" / BASE_FOLDER / "test_batch") in text
    assert "cifar-10-python.tar.gz" in text and "download: true" in text


def test_missing_batch_file_is_named(cifar) -> None:
    root, _ = cifar
    (root / BASE_FOLDER / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        dataset(root).check()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_pickle_is_a_data_error_naming_the_file(cifar, damage: str) -> None:
    root, _ = cifar
    path = root / BASE_FOLDER / "test_batch"
    content = path.read_bytes()
    path.write_bytes({"truncated": content[: len(content) // 2], "garbage": os.urandom(64), "empty": b""}[damage])
    ds = dataset(root)
    ds.check()  # cheap: the files exist
    with pytest.raises(DataError) as info:
        ds.index("test")
    assert str(path) in str(info.value) and info.value.field == "root"


def test_wrong_array_shape_is_a_data_error_naming_the_file(cifar) -> None:
    root, _ = cifar
    path = root / BASE_FOLDER / "data_batch_2"
    path.write_bytes(py2_pickle(batch_record("b2", np.zeros((3, 1024), dtype=np.uint8), [0, 1, 2])))
    with pytest.raises(DataError, match=r"data_batch_2.*\(N, 3072\), found \(3, 1024\)"):
        dataset(root).index("train")
    path.write_bytes(py2_pickle(batch_record("b2", np.zeros((3, 3072), dtype=np.uint8), [0, 1])))
    with pytest.raises(DataError, match=r"data_batch_2: 3 images but 'labels' has shape \(2,\)"):
        dataset(root).index("train")


class _Payload:
    """An object whose unpickling calls ``func(*args)``: what a hostile batch file would contain."""

    def __init__(self, func: Any, args: tuple[Any, ...]):
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, _Payload]:
    return {
        "os.mkdir": _Payload(os.mkdir, (str(marker),)),
        "subprocess.call": _Payload(subprocess.call, (["touch", str(marker)],)),
        "builtins.exec": _Payload(builtins.exec, (f"open({str(marker)!r}, 'w').close()",)),
    }


@pytest.mark.parametrize("payload", ["os.mkdir", "subprocess.call", "builtins.exec"])
def test_pickle_with_a_forbidden_global_is_refused_unrun(cifar, tmp_path: Path, payload: str) -> None:
    root, _ = cifar
    # The payload is live: plain pickle would run it (shown on a second marker).
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_payloads(proof)[payload], protocol=2))
    assert proof.exists()

    marker = tmp_path / "pwned"
    record = batch_record("evil", np.zeros((1, 3072), dtype=np.uint8), [0])
    record[b"data"] = _payloads(marker)[payload]
    path = root / BASE_FOLDER / "test_batch"
    path.write_bytes(pickle.dumps(record, protocol=2))
    with pytest.raises(DataError) as info:
        dataset(root).load([SampleRef("test/00000", 0)], "test")
    assert str(path) in str(info.value) and "was not run" in str(info.value)
    assert not marker.exists()


def test_hostile_meta_file_is_refused_by_check(cifar, tmp_path: Path) -> None:
    root, _ = cifar
    marker = tmp_path / "pwned"
    (root / BASE_FOLDER / "batches.meta").write_bytes(pickle.dumps(_payloads(marker)["os.mkdir"], protocol=2))
    with pytest.raises(DataError, match=r"batches\.meta"):
        dataset(root).check()
    assert not marker.exists()


def test_codecs_other_than_latin1_are_refused(cifar) -> None:
    import codecs

    root, _ = cifar
    path = root / BASE_FOLDER / "test_batch"
    path.write_bytes(pickle.dumps({b"data": _Payload(codecs.encode, ("x" * 10, "zlib")), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match=r"refused codecs\.encode with encoding 'zlib'"):
        dataset(root).index("test")


def test_label_names_must_be_cifar10s(cifar) -> None:
    root, _ = cifar
    meta = {b"label_names": [c.encode() for c in reversed(CLASSES)]}
    (root / BASE_FOLDER / "batches.meta").write_bytes(py2_pickle(meta))
    with pytest.raises(DataError, match="names the classes"):
        dataset(root).check()


def test_decoded_arrays_are_cached(cifar, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = cifar
    calls: list[str] = []
    original = cifar_module.read_batch
    monkeypatch.setattr(cifar_module, "read_batch", lambda path: calls.append(path.name) or original(path))
    ds = dataset(root)
    refs = ds.index("test")
    ds.load(refs[:4], "test")
    ds.load(refs[4:], "test")
    ds.index("test")
    assert calls == ["test_batch"]
    ds.index("train")
    assert calls == ["test_batch", *(f"data_batch_{i}" for i in range(1, 6))]


def test_unknown_sample_id_is_a_data_error(cifar) -> None:
    root, _ = cifar
    ds = dataset(root)
    with pytest.raises(DataError, match="train/00001"):
        ds.load([SampleRef("train/00001", 0)], "test")
    with pytest.raises(DataError, match="test/00030"):
        ds.load([SampleRef("test/00030", 0)], "test")


def test_download_failure_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    calls: list[dict[str, Any]] = []

    def offline(root: str, **kwargs: Any) -> None:
        calls.append({"root": root, **kwargs})
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    root = tmp_path / "empty"
    with pytest.raises(DataError) as info:
        dataset(root, download=True).check()
    text = str(info.value)
    assert "download" in text and "failed" in text and "name resolution" in text
    assert str(root / BASE_FOLDER / "test_batch") in text
    assert calls == [{"root": str(root), "train": False, "download": True}]


def test_download_that_succeeds_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    root = tmp_path / "fresh"
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", lambda root, **kwargs: write_cifar(Path(root)))
    ds = dataset(root, download=True)
    ds.check()
    assert len(ds.index("test")) == TEST_SIZE


def test_missing_data_without_download_does_not_touch_torchvision(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", lambda *a, **k: pytest.fail("download attempted"))
    with pytest.raises(DataError, match="does not exist"):
        dataset(tmp_path).check()


def test_content_identity_ignores_split_and_download(cifar) -> None:
    root, _ = cifar
    assert dataset(root).content_identity() == dataset(root, split="train", download=True).content_identity()
