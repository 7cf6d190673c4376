"""Reading a user's label map (YAML or CSV) into a ``LabelMap``, with errors that name the file and line.

YAML::

    label_space: imagenet1k          # optional: only models of this label space (names checked early)
    classes:
      elephant: [African elephant, Indian elephant, tusker]
      zebra: zebra                   # one model class
      cat: [281, 282, 283, 284, 285] # output indices (YAML integers)
      giraffe: {classes: [], reason: "ImageNet-1k has no giraffe"}

CSV: one ``dataset_class,model_class[,reason]`` row per pair (an optional header
row), a class repeated on several rows for several model classes, an empty
``model_class`` for a class without counterpart, and digits for an output index.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from bench.datasets.label_maps import Entry, LabelMap
from bench.errors import ConfigError, DataError

FIELD = "label_map"
FIX = "see docs/label_maps.md for the YAML and CSV formats"
HEADER = ("dataset_class", "model_class")


def label_map_field() -> Any:
    """The ``label_map`` param shared by every dataset with labels."""
    return Field(
        None,
        description="YAML or CSV file mapping each dataset class to model classes (names or output indices) "
        "for target: mapped; replaces the built-in map (docs/label_maps.md)",
    )


def read_label_map(path: str | Path) -> LabelMap:
    """The map in ``path`` (YAML for .yaml/.yml, else CSV); cached while the file is unchanged."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"label map {str(path)!r} does not exist (resolved to {path.resolve()})",
            field=FIELD,
            fix="point label_map at a YAML or CSV file (paths are relative to the directory you run xbench from)",
        )
    stat = path.stat()
    return _read_cached(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=32)
def _read_cached(path: str, _mtime: int, _size: int) -> LabelMap:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the label map {path}: {exc}", field=FIELD, fix=FIX) from exc
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        return _from_yaml(path, text)
    return _from_csv(path, text)


def _fail(path: str, where: str, problem: str, fix: str = FIX) -> ConfigError:
    return ConfigError(f"{path}{', ' + where if where else ''}: {problem}", field=FIELD, fix=fix)


# ---------------------------------------------------------------- YAML


def _from_yaml(path: str, text: str) -> LabelMap:
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise _fail(path, where, f"not valid YAML ({getattr(exc, 'problem', None) or exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("classes"), dict):
        raise _fail(path, "", "expected a mapping with `classes:` (dataset class -> model classes)")
    unknown = sorted(set(data) - {"classes", "label_space"})
    if unknown:
        raise _fail(path, "", f"unknown keys {unknown}", fix="use only `classes` and `label_space`")
    label_space = data.get("label_space")
    if label_space is not None and not isinstance(label_space, str):
        raise _fail(path, "", "label_space must be a name such as imagenet1k")
    lines = _key_lines(root, "classes")
    entries = {}
    for name, value in data["classes"].items():
        where = f"line {lines.get(str(name), '?')}"
        entries[str(name)] = _yaml_entry(path, where, value)
    if not entries:
        raise _fail(path, "", "`classes:` is empty")
    return LabelMap(entries, source=path, label_space=label_space or None)


def _key_lines(root: Any, section: str) -> dict[str, int]:
    """Line number (1-based) of every key under the top-level ``section`` mapping."""
    for key, value in getattr(root, "value", []):
        if getattr(key, "value", None) == section and isinstance(value, yaml.MappingNode):
            return {str(k.value): k.start_mark.line + 1 for k, _ in value.value}
    return {}


def _yaml_entry(path: str, where: str, value: Any) -> Entry:
    """One class's entry: a name or index, a list of them, or ``{classes: [...], reason: ...}``."""
    reason = None
    if isinstance(value, dict):
        extra = sorted(set(value) - {"classes", "reason"})
        if extra or "classes" not in value:
            raise _fail(path, where, "a mapping entry needs `classes:` (and optionally `reason:`)")
        value, reason = value["classes"], value.get("reason")
    if value is None:
        value = []
    members = value if isinstance(value, list) else [value]
    for member in members:
        if isinstance(member, bool) or not isinstance(member, str | int):
            raise _fail(path, where, f"{member!r} is neither a class name nor an output index")
        if isinstance(member, int) and member < 0:
            raise _fail(path, where, f"output index {member} is negative")
    if len(set(members)) != len(members):
        raise _fail(path, where, "a model class is listed twice")
    return Entry(tuple(members), None if reason is None else str(reason), where)


# ---------------------------------------------------------------- CSV


def _from_csv(path: str, text: str) -> LabelMap:
    rows: dict[str, list[str | int]] = {}
    first_line: dict[str, int] = {}
    reasons: dict[str, str] = {}
    empty: set[str] = set()
    try:
        reader = csv.reader(text.splitlines())
        for row in reader:
            cells = [cell.strip() for cell in row]
            line = reader.line_num
            if not any(cells) or cells[0].startswith("#"):
                continue
            if not first_line and tuple(c.lower() for c in cells[:2]) == HEADER:
                continue
            if len(cells) < 2 or len(cells) > 3 or not cells[0]:
                raise _fail(path, f"line {line}", f"expected `dataset_class,model_class[,reason]`, found {row!r}")
            cls, member = cells[0], cells[1]
            first_line.setdefault(cls, line)
            rows.setdefault(cls, [])
            if len(cells) == 3 and cells[2]:
                reasons[cls] = cells[2]
            if not member:
                empty.add(cls)
                continue
            value: str | int = int(member) if member.isdigit() else member
            if value in rows[cls]:
                raise _fail(path, f"line {line}", f"{member!r} is listed twice for {cls!r}")
            rows[cls].append(value)
    except csv.Error as exc:
        raise _fail(path, "", f"not a valid CSV file ({exc})") from exc
    both = sorted(cls for cls in empty if rows[cls])
    if both:
        raise _fail(path, f"line {first_line[both[0]]}", f"{both[0]!r} has an empty row and model classes")
    if not rows:
        raise _fail(path, "", "the file maps no class")
    entries = {cls: Entry(tuple(m), reasons.get(cls), f"line {first_line[cls]}") for cls, m in rows.items()}
    return LabelMap(entries, source=path)
