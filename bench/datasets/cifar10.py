"""`cifar10`: the CIFAR-10 pickles in torchvision's layout (``root/cifar-10-batches-py/``).

The batch files are Python pickles, and a pickle can run any code it names. They
are therefore read with a restricted unpickler that builds only what CIFAR
pickles contain (dicts, lists, bytes, ints and NumPy arrays) and refuses every
other global with a DataError naming the file.
"""

from __future__ import annotations

import pickle
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from bench.component import Params
from bench.datasets.base import Dataset
from bench.datasets.image_io import resize
from bench.datasets.label_map_files import label_map_field
from bench.datasets.label_maps import CIFAR10_MAP, LabelMap
from bench.errors import DataError
from bench.types import Batch, ImageShape, SampleRef

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BASE_FOLDER = "cifar-10-batches-py"
SPLIT_FILES = {
    "train": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"),
    "test": ("test_batch",),
}
META_FILE = "batches.meta"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
SIDE = 32
PIXELS = 3 * SIDE * SIDE  # one row of b"data": the R, G and B planes, each 32 rows of 32

# What a broken or hostile pickle can raise while it is read, besides our own DataError.
_UNPICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    MemoryError,
)


def _numpy_multiarray() -> Any:
    """NumPy's multiarray module under its NumPy 2 name, or its NumPy 1 name (no deprecation warning)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy < 1.26
        from numpy.core import multiarray as legacy

        return legacy
    return multiarray


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, restricted to latin-1 (no other codec runs)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


# The only globals a CIFAR pickle may name: NumPy array and scalar reconstruction, and
# the bytes encoder of protocol-2 pickles written by Python 3. Both module spellings
# of NumPy's multiarray occur (pickles written by NumPy 1 and NumPy 2).
_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_multiarray()._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_multiarray()._reconstruct,
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_multiarray().scalar,
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_multiarray().scalar,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
    ("codecs", "encode"): lambda: _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``_ALLOWED``; anything else is a DataError."""

    def __init__(self, file: Any, path: Path):
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        resolve = _ALLOWED.get((module, name))
        if resolve is None:
            raise DataError(
                f"{self.path} is not a CIFAR-10 batch file: its pickle asks for {module}.{name}, "
                "which CIFAR data never contains (it was not run)",
                field="root",
                fix=f"replace the file with one from {URL}",
            )
        return resolve()


def read_pickle(path: Path) -> Any:
    """The object pickled in ``path``, read with the restricted unpickler; DataError when it cannot be read."""
    try:
        with path.open("rb") as handle:
            return RestrictedUnpickler(handle, path).load()
    except OSError as exc:
        raise DataError(f"cannot open {path}: {exc.strerror or exc}", field="root") from exc
    except _UNPICKLE_ERRORS as exc:
        raise DataError(
            f"{path} is truncated or corrupt: {type(exc).__name__}: {exc}",
            field="root",
            fix=f"download it again from {URL} and extract it into params.root",
        ) from exc


def _entry(record: Any, key: str, path: Path) -> Any:
    """``record[key]`` for a dict with bytes keys (as Python 2 wrote them) or str keys; DataError when absent."""
    if isinstance(record, dict):
        for k in (key.encode(), key):
            if k in record:
                return record[k]
    found = sorted(map(str, record)) if isinstance(record, dict) else type(record).__name__
    raise DataError(
        f"{path} has no {key!r} entry (found {found})", field="root", fix=f"replace it with a copy from {URL}"
    )


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one CIFAR-10 batch file, shapes checked."""
    record = read_pickle(path)
    data = _entry(record, "data", path)
    labels = _entry(record, "labels", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        shape = getattr(data, "shape", type(data).__name__)
        raise DataError(
            f"{path}: 'data' must be a uint8 array of shape (N, {PIXELS}), found {shape} "
            f"{getattr(data, 'dtype', '')}".rstrip(),
            field="root",
            fix=f"replace it with a copy from {URL}",
        )
    try:
        label_array = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"{path}: 'labels' are not integers ({exc})", field="root") from exc
    if label_array.shape != (len(data),):
        raise DataError(
            f"{path}: {len(data)} images but 'labels' has shape {label_array.shape}",
            field="root",
            fix=f"replace it with a copy from {URL}",
        )
    if len(label_array) and (label_array.min() < 0 or label_array.max() >= len(CLASSES)):
        raise DataError(f"{path}: labels outside 0..{len(CLASSES) - 1}", field="root")
    return data.reshape(-1, 3, SIDE, SIDE), label_array


def read_label_names(path: Path) -> tuple[str, ...]:
    """The ``label_names`` of batches.meta, decoded."""
    names = _entry(read_pickle(path), "label_names", path)
    if not isinstance(names, list | tuple) or not all(isinstance(n, bytes | str) for n in names):
        raise DataError(f"{path}: 'label_names' is not a list of names", field="root")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)


@dataclass(frozen=True)
class _SplitData:
    """A decoded split: images (N, 3, 32, 32) uint8 and labels (N,) int64, batch files concatenated in order."""

    images: np.ndarray
    labels: np.ndarray


class CIFAR10Params(Params):
    root: str = Field(description=f"folder that contains {BASE_FOLDER}/ (torchvision's layout)")
    split: Literal["train", "test"] = Field("test", description="split the benchmark samples from")
    download: bool = Field(False, description=f"fetch the data with torchvision into root when it is missing ({URL})")
    label_map: str | None = label_map_field()


class CIFAR10(Dataset):
    """CIFAR-10 from the original Python pickles (10 classes, 32x32, 50000 train / 10000 test)."""

    Params = CIFAR10Params
    version = 1

    def __init__(self, params: CIFAR10Params | None = None):
        super().__init__(params)
        self._cache: dict[str, _SplitData] = {}
        self._meta_checked = False

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASSES

    @property
    def folder(self) -> Path:
        return Path(self.params.root) / BASE_FOLDER

    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def image_shape(self) -> ImageShape:
        return (3, 32, 32)

    def builtin_label_map(self) -> LabelMap:
        return CIFAR10_MAP

    def content_identity(self) -> dict[str, Any]:
        """Whether the data was downloaded by xbench does not change it."""
        identity = super().content_identity()
        identity["params"].pop("download", None)
        return identity

    def _missing(self) -> list[Path]:
        """Batch files that are not on disk, those of the benchmark split first."""
        order = sorted(SPLIT_FILES, key=lambda split: split != self.params.split)
        files = [name for split in order for name in SPLIT_FILES[split]]
        return [self.folder / name for name in files if not (self.folder / name).is_file()]

    def check(self) -> None:
        """Every batch file exists (downloading them first when ``download`` is set); batches.meta names match."""
        missing = self._missing()
        if missing and self.params.download:
            self._download()
            missing = self._missing()
        if missing:
            raise DataError(
                f"CIFAR-10 file {missing[0]} does not exist (resolved to {missing[0].resolve()})"
                + (f"; {len(missing) - 1} more batch files are missing too" if len(missing) > 1 else ""),
                field="root",
                fix=f"download {URL} and extract it into {self.params.root} (it creates {BASE_FOLDER}/), "
                "or set download: true",
            )
        self._check_meta()
        self.check_label_map()

    def _download(self) -> None:
        """Fetch and extract the archive with torchvision (which verifies its MD5 checksums)."""
        import torchvision.datasets

        try:
            torchvision.datasets.CIFAR10(self.params.root, train=self.params.split == "train", download=True)
        except (OSError, RuntimeError, ValueError, EOFError, tarfile.TarError) as exc:
            raise DataError(
                f"the CIFAR-10 download into {self.params.root} failed: {type(exc).__name__}: {exc}",
                field="root",
                fix=f"download {URL} yourself and extract it into {self.params.root} "
                f"so that {self.folder / 'test_batch'} exists",
            ) from exc

    def _check_meta(self) -> None:
        """batches.meta, when present, must name the classes in the standard order (labels are positions)."""
        path = self.folder / META_FILE
        if self._meta_checked or not path.is_file():
            return
        names = read_label_names(path)
        if names != CLASSES:
            raise DataError(
                f"{path} names the classes {list(names)}, not CIFAR-10's {list(CLASSES)}",
                field="root",
                fix=f"point root at the CIFAR-10 data from {URL} (CIFAR-100 is a different dataset)",
            )
        self._meta_checked = True

    def _split(self, split: str) -> _SplitData:
        """The decoded split, read once per instance (index and every load share it)."""
        if split not in SPLIT_FILES:
            raise DataError(f"CIFAR-10 has no split {split!r}", field="split", fix="use train or test")
        if split not in self._cache:
            self._check_meta()
            parts = [read_batch(self.folder / name) for name in SPLIT_FILES[split]]
            images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
            labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
            self._cache[split] = _SplitData(images, labels)
        return self._cache[split]

    def index(self, split: str) -> list[SampleRef]:
        """Every image as ``<split>/<index:05d>``, its position in the split (batch files in order)."""
        labels = self._split(split).labels.tolist()
        return [SampleRef(f"{split}/{i:05d}", label) for i, label in enumerate(labels)]

    def _position(self, sample_id: str, split: str, count: int) -> int:
        prefix, _, number = sample_id.partition("/")
        if prefix != split or not number.isdigit() or int(number) >= count:
            raise DataError(
                f"{sample_id!r} is not a sample of CIFAR-10's {split} split ({split}/00000..{split}/{count - 1:05d})"
            )
        return int(number)

    def load(self, refs: Sequence[SampleRef], split: str, image_size: tuple[int, int] | None = None) -> Batch:
        """Images as float32 byte/255 (exact), labels from the batch files; resized when ``image_size`` is given."""
        data = self._split(split)
        positions = np.array([self._position(r.id, split, len(data.labels)) for r in refs], dtype=np.int64)
        x = torch.from_numpy(data.images[positions]).float().div_(255.0)
        x = resize(x, image_size)
        labels = torch.from_numpy(data.labels[positions].copy())
        return Batch(x=x, label=labels, ids=[r.id for r in refs])
