"""Label maps: which outputs of a model depict each class of a dataset.

A model trained on ImageNet-1k has no "dog" output but 118 dog breeds, and no
"person" output at all. To explain and score such a model on another dataset's
images, each dataset class maps to the *set* of model outputs that depict it
(the runner explains the highest-scoring output inside the set, and counts a
prediction correct when the top-1 output lies inside it).

A ``LabelMap`` holds such a mapping as written: dataset class -> model class
names or output indices, with the reason why a class has no counterpart. The
built-in VOC, CIFAR-10 and COCO -> ImageNet-1k tables are instances of it (see
``bench.datasets.label_tables``), and so is a user's YAML or CSV file (see
``bench.datasets.label_map_files`` and docs/label_maps.md). ``resolve`` turns a
map into output indices for one model (a ``ClassMap``), checking every name and
that no output belongs to two dataset classes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bench.datasets import label_tables as tables
from bench.datasets.imagenet import (
    IMAGENET1K,
    IMAGENET_CATEGORIES,
    VOCABULARIES,
    imagenet_index,
    imagenet_span,
)
from bench.errors import ConfigError

__all__ = [
    "CIFAR10_IMAGENET",
    "CIFAR10_MAP",
    "CIFAR10_NAMES",
    "COCO_IMAGENET",
    "COCO_MAP",
    "COCO_NAMES",
    "IMAGENET1K",
    "IMAGENET_CATEGORIES",
    "VOC_IMAGENET",
    "VOC_MAP",
    "VOC_NAMES",
    "ClassMap",
    "Entry",
    "LabelMap",
    "builtin_map",
    "class_key",
    "class_sets",
    "imagenet_index",
    "imagenet_span",
    "inverse",
    "resolve",
]

VOC_NAMES = tables.VOC_NAMES
CIFAR10_NAMES = tables.CIFAR10_NAMES
COCO_NAMES = tables.COCO_NAMES


def class_key(name: str) -> str:
    """A class name as the tables match it: lower case without spaces, "/", "-" or "_" ("tv/monitor")."""
    return re.sub(r"[\s/_-]", "", name.lower())


def resolve(names: Sequence[str]) -> tuple[int, ...]:
    """The sorted ImageNet-1k indices of ``names``; a KeyError for a name that does not exist."""
    indices = [imagenet_index(name) for name in names]
    if len(set(indices)) != len(indices):
        raise ValueError(f"a class name is listed twice in {list(names)}")
    return tuple(sorted(indices))


def inverse(sets: Sequence[tuple[int, ...]]) -> dict[int, int]:
    """Model output index -> position of the set that holds it (to map predictions back to dataset classes).

    Indices in no set are absent. An index in two sets would make the mapping
    ambiguous, so it is an error.
    """
    back: dict[int, int] = {}
    for position, indices in enumerate(sets):
        for index in indices:
            if index in back:
                raise ValueError(f"output index {index} is in the sets of classes {back[index]} and {position}")
            back[index] = position
    return back


@dataclass(frozen=True)
class Entry:
    """One dataset class of a map: model classes by name (str) or output index (int), and why it has none."""

    members: tuple[str | int, ...]
    reason: str | None = None  # why the class has no counterpart (members empty)
    where: str = ""  # "line 12" of the map's file, for messages


@dataclass(frozen=True)
class ClassMap:
    """A map resolved for one model: per dataset class (label order) the output indices and, for a
    class without any, the reason."""

    sets: list[tuple[int, ...]]
    reasons: list[str | None]
    source: str


@dataclass(frozen=True)
class LabelMap:
    """Dataset class -> model classes, as written (by name or output index).

    ``label_space`` restricts the map to models of that label space (and names
    resolve in its vocabulary when xbench knows it, e.g. imagenet1k); None means
    any model, whose own class names the names are resolved against.
    """

    entries: Mapping[str, Entry]
    source: str  # "the built-in Pascal VOC map" or the file's path
    label_space: str | None = None
    _keys: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_keys", {class_key(name): name for name in self.entries})

    def lookup(self, dataset_class: str) -> Entry | None:
        """The entry of ``dataset_class``: by exact name, else ignoring case, spaces, "/", "-" and "_"."""
        if dataset_class in self.entries:
            return self.entries[dataset_class]
        name = self._keys.get(class_key(dataset_class))
        return None if name is None else self.entries[name]

    def covers(self, classes: Sequence[str]) -> bool:
        """Whether every one of ``classes`` has an entry."""
        return bool(classes) and all(self.lookup(c) is not None for c in classes)

    def applies_to(self, label_space: str, class_names: Sequence[str]) -> bool:
        """Whether this map can serve a model of ``label_space`` with ``class_names``."""
        if self.label_space is not None:
            return label_space == self.label_space
        return len(class_names) > 0

    def resolve(self, classes: Sequence[str], class_names: Sequence[str], num_outputs: int) -> ClassMap:
        """Output indices for each of ``classes`` on a model with ``class_names`` (``num_outputs`` outputs).

        Names resolve in the map's label space's vocabulary when xbench knows it,
        else in the model's class names. A dataset class missing from the map has
        no counterpart (its samples are reported with the reason). ConfigError,
        naming the map and the entry, for an unknown name, an index out of range,
        or an output in two classes' sets.
        """
        vocabulary = VOCABULARIES.get(self.label_space or "", tuple(class_names))
        position = {name: i for i, name in enumerate(vocabulary)}
        sets: list[tuple[int, ...]] = []
        reasons: list[str | None] = []
        for dataset_class in classes:
            entry = self.lookup(dataset_class)
            if entry is None:
                sets.append(())
                reasons.append(f"{dataset_class!r} is not listed in {self.source}")
                continue
            indices = sorted({self._index(m, entry, dataset_class, position, num_outputs) for m in entry.members})
            sets.append(tuple(indices))
            reasons.append(None if indices else (entry.reason or f"{self.source} maps it to no class"))
        self._check_disjoint(classes, sets)
        return ClassMap(sets=sets, reasons=reasons, source=self.source)

    def _index(self, member: str | int, entry: Entry, cls: str, position: dict[str, int], outputs: int) -> int:
        """The output index of one member; ConfigError naming the map and entry when it does not exist."""
        where = f"{self.source}{', ' + entry.where if entry.where else ''} (class {cls!r})"
        if isinstance(member, int):
            if 0 <= member < outputs:
                return member
            raise ConfigError(
                f"{where}: output index {member} is out of range; the model has {outputs} outputs",
                field="label_map",
                fix=f"use indices 0..{outputs - 1} or class names",
            )
        if member in position:
            return position[member]
        import difflib

        close = difflib.get_close_matches(member, list(position), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        space = self.label_space or "the model's classes"
        raise ConfigError(
            f"{where}: {member!r} is not a class name of {space}{hint}",
            field="label_map",
            fix="write the model's class names exactly (ImageNet-1k: bench/datasets/imagenet_classes.txt) "
            "or output indices",
        )

    def _check_disjoint(self, classes: Sequence[str], sets: Sequence[tuple[int, ...]]) -> None:
        try:
            inverse(sets)
        except ValueError:
            seen: dict[int, str] = {}
            for cls, members in zip(classes, sets, strict=True):
                for index in members:
                    if index in seen:
                        raise ConfigError(
                            f"{self.source}: output {index} is in the sets of both {seen[index]!r} and {cls!r}",
                            field="label_map",
                            fix="give every model class to at most one dataset class",
                        ) from None
                    seen[index] = cls


def _builtin(names: Mapping[str, tuple[str, ...]], reasons: Mapping[str, str], title: str) -> LabelMap:
    entries = {cls: Entry(members, reasons.get(cls)) for cls, members in names.items()}
    return LabelMap(entries, source=f"the built-in {title} map", label_space=IMAGENET1K)


VOC_MAP = _builtin(VOC_NAMES, tables.VOC_REASONS, "Pascal VOC -> ImageNet-1k")
CIFAR10_MAP = _builtin(CIFAR10_NAMES, tables.CIFAR10_REASONS, "CIFAR-10 -> ImageNet-1k")
COCO_MAP = _builtin(COCO_NAMES, tables.COCO_REASONS, "COCO -> ImageNet-1k")
#: The built-in maps, in the order ``builtin_map`` tries them.
BUILTIN_MAPS: tuple[LabelMap, ...] = (VOC_MAP, CIFAR10_MAP, COCO_MAP)


def _resolve_table(names: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[int, ...]]:
    table = {cls: resolve(members) for cls, members in names.items()}
    inverse(list(table.values()))  # the sets of one vocabulary must be disjoint
    return table


#: Dataset class -> sorted ImageNet-1k indices, resolved (and checked) at import.
VOC_IMAGENET: dict[str, tuple[int, ...]] = _resolve_table(VOC_NAMES)
CIFAR10_IMAGENET: dict[str, tuple[int, ...]] = _resolve_table(CIFAR10_NAMES)
COCO_IMAGENET: dict[str, tuple[int, ...]] = _resolve_table(COCO_NAMES)


def builtin_map(classes: Sequence[str], label_space: str = IMAGENET1K) -> LabelMap | None:
    """The first built-in map of ``label_space`` that has every one of ``classes`` (a subset is fine)."""
    return next((m for m in BUILTIN_MAPS if m.label_space == label_space and m.covers(classes)), None)


def class_sets(classes: Sequence[str], label_space: str) -> list[tuple[int, ...]] | None:
    """For each of ``classes``, the indices of ``label_space`` outputs that depict it (built-in maps).

    Every class must come from one known vocabulary (VOC, CIFAR-10 or COCO; a
    subset is fine); otherwise, and for unknown label spaces, None. An empty
    tuple means the class has no counterpart (VOC's person, CIFAR-10's deer).
    """
    found = builtin_map(classes, label_space)
    vocabulary = VOCABULARIES.get(label_space, ())
    return None if found is None else found.resolve(classes, vocabulary, len(vocabulary)).sets
