"""`imagelist`: images in one folder, labels in a CSV of ``file,label`` lines (e.g. Kaggle's trainLabels.csv)."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from bench.component import Params
from bench.datasets.base import Dataset
from bench.datasets.image_io import first_image_shape, load_image_batch
from bench.datasets.imagefolder import unique_class_names
from bench.datasets.label_map_files import label_map_field
from bench.errors import DataError
from bench.types import Batch, ImageShape, SampleRef


class ImageListParams(Params):
    root: str = Field(description="folder that the CSV's file names are relative to (the benchmark split)")
    labels_csv: str = Field(description="CSV with one `file,label` row per image (an optional header row)")
    classes: list[str] = Field(
        description="class names in label order (a list, or one comma-separated string); CSV labels must be among them"
    )
    header: bool | None = Field(
        None,
        description="whether the CSV's first row is a header; default: detected (its label is no class and "
        "its file does not exist)",
    )
    image_size: tuple[int, int] | None = Field(None, description="resize every image to (H, W); default: as stored")
    train_root: str | None = Field(None, description="image folder of the train split (with train_labels_csv)")
    train_labels_csv: str | None = Field(None, description="CSV of the train split (with train_root)")
    label_map: str | None = label_map_field()

    @field_validator("classes", mode="before")
    @classmethod
    def _split_string(cls, value: Any) -> Any:
        """Accept ``"cat,dog"`` as well as ``[cat, dog]``: long class lists read better on one line."""
        if isinstance(value, str):
            return [name.strip() for name in value.split(",")]
        return value

    validate_classes = field_validator("classes")(unique_class_names)

    @model_validator(mode="after")
    def _train_pair(self) -> ImageListParams:
        if (self.train_root is None) != (self.train_labels_csv is None):
            raise ValueError("give train_root and train_labels_csv together (or neither)")
        return self


@dataclass(frozen=True)
class _Source:
    """Where one split lives, and the param names to blame when it is wrong."""

    root: Path
    csv: Path
    root_field: str
    csv_field: str


class ImageList(Dataset):
    """Labelled images in one folder with a `file,label` CSV (no masks); unreadable files are skipped."""

    Params = ImageListParams
    version = 1

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.params.classes)

    @property
    def eval_split(self) -> str:
        return "test"

    def splits(self) -> tuple[str, ...]:
        return ("train", "test") if self.params.train_root else ("test",)

    def _source(self, split: str) -> _Source:
        p = self.params
        if split == "train":
            if p.train_root is None or p.train_labels_csv is None:
                raise DataError(
                    "this imagelist dataset has no train split",
                    field="train_root",
                    fix="set params.train_root and params.train_labels_csv",
                )
            return _Source(Path(p.train_root), Path(p.train_labels_csv), "train_root", "train_labels_csv")
        return _Source(Path(p.root), Path(p.labels_csv), "root", "labels_csv")

    def check(self) -> None:
        """The folders and CSVs exist and every CSV row names a known class (reads the CSVs, not the images)."""
        for split in self.splits():
            source = self._source(split)
            if not source.root.is_dir():
                raise DataError(
                    f"image folder {str(source.root)!r} does not exist (resolved to {source.root.resolve()})",
                    field=source.root_field,
                    fix="point it at the folder that the CSV's file names are relative to (paths are relative to "
                    "the directory you run xbench from)",
                )
            if not source.csv.is_file():
                raise DataError(
                    f"labels file {str(source.csv)!r} does not exist (resolved to {source.csv.resolve()})",
                    field=source.csv_field,
                    fix="point it at a CSV with one `file,label` row per image",
                )
            if not self.index(split):
                raise DataError(
                    f"labels file {source.csv} lists no images",
                    field=source.csv_field,
                    fix="write one `file,label` row per image",
                )
        self.check_label_map()

    def index(self, split: str) -> list[SampleRef]:
        """Every CSV row in file order; the id is the file name as written in the CSV."""
        source = self._source(split)
        label_of = {name: i for i, name in enumerate(self.classes)}
        refs: list[SampleRef] = []
        seen: dict[str, int] = {}
        for line, name, label in self._rows(source):
            if label not in label_of:
                raise DataError(
                    f"{source.csv}, line {line}: label {label!r} of {name!r} is not one of the classes",
                    field="classes",
                    fix=f"add it to params.classes, or correct the CSV (classes: {', '.join(self.classes)})",
                )
            if name in seen:
                raise DataError(
                    f"{source.csv}, line {line}: {name!r} is listed again (first on line {seen[name]})",
                    field=source.csv_field,
                    fix="list every image once",
                )
            seen[name] = line
            refs.append(SampleRef(name, label_of[label]))
        return refs

    def _rows(self, source: _Source) -> Iterator[tuple[int, str, str]]:
        """(line number, file name, label) of every data row of the CSV; blank lines and the header left out."""
        try:
            with source.csv.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle)
                first = True
                for row in reader:
                    cells = [cell.strip() for cell in row]
                    if not any(cells):
                        continue
                    if first:
                        first = False
                        if self._is_header(cells, source.root):
                            continue
                    if len(cells) < 2 or not cells[0] or not cells[1]:
                        raise DataError(
                            f"{source.csv}, line {reader.line_num}: expected `file,label`, found {','.join(row)!r}",
                            field=source.csv_field,
                            fix="write one `file,label` row per image",
                        )
                    yield reader.line_num, cells[0], cells[1]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(
                f"cannot read the labels file {source.csv}: {exc}",
                field=source.csv_field,
                fix="give a UTF-8 CSV with one `file,label` row per image",
            ) from exc

    def _is_header(self, cells: list[str], root: Path) -> bool:
        """Whether the CSV's first row is a header: as configured, else when its label is no class and its
        file does not exist (a data row with an unknown label then still fails loudly)."""
        if self.params.header is not None:
            header: bool = self.params.header
            return header
        name, label = cells[0], (cells[1] if len(cells) > 1 else "")
        return label not in self.classes and not (name and (root / name).is_file())

    def image_shape(self) -> ImageShape | None:
        """``image_size``, else the stored size of the first image (reads one file header)."""
        if self.params.image_size is not None:
            return (3, *self.params.image_size)
        try:
            refs = self.index(self.eval_split)
        except (OSError, DataError):
            return None
        return first_image_shape(refs, self._source(self.eval_split).root)

    def load(self, refs: Sequence[SampleRef], split: str, image_size: tuple[int, int] | None = None) -> Batch:
        """The images of ``refs``; unreadable ones are left out and listed in ``Batch.skipped``."""
        root = self._source(split).root
        size = image_size or self.params.image_size
        return load_image_batch(refs, [root / ref.id for ref in refs], size, where=root)
