"""The dataset contract and deterministic, class-stratified sampling."""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench.component import Component
from bench.seeding import stable_hash
from bench.types import Batch, ImageShape, ModelSpec, SampleRef

if TYPE_CHECKING:
    from bench.datasets.label_maps import ClassMap, LabelMap


class Dataset(Component):
    """A labelled image dataset with optional ground-truth masks.

    Subclasses read their data lazily: ``index`` lists sample ids and labels
    cheaply; ``load`` reads the images (and masks) of a few samples.
    """

    has_masks: ClassVar[bool] = False
    variable_size: ClassVar[bool] = False  # images differ in size: load() resizes to the model's input
    # Params left out of content_identity() while at their default: added after results were stored,
    # so that adding them did not change the identity (cell ids, model caches) of existing results.
    identity_defaults: ClassVar[dict[str, Any]] = {"label_map": None}

    @property
    @abstractmethod
    def classes(self) -> tuple[str, ...]:
        """Class names in label order."""

    @property
    def eval_split(self) -> str:
        """The split that benchmarks sample from (the ``split`` param where there is one)."""
        return getattr(self.params, "split", "test")

    def check(self) -> None:
        """Raise a DataError naming the missing path when the data is not on disk. Cheap."""

    def splits(self) -> tuple[str, ...]:
        """Splits that exist (``train`` is what models are trained on)."""
        return ("test",)

    @abstractmethod
    def index(self, split: str) -> list[SampleRef]:
        """Every sample of ``split`` in a fixed order."""

    @abstractmethod
    def load(self, refs: Sequence[SampleRef], split: str, image_size: tuple[int, int] | None = None) -> Batch:
        """Images (and masks) of ``refs`` as a CPU Batch; resized to ``image_size`` when given."""

    def image_shape(self) -> ImageShape | None:
        """The (C, H, W) of every image ``load`` returns when it is not asked to resize, found cheaply (no
        image is decoded): for pass estimates. None when it is not known before a model is: images of
        ``variable_size`` datasets are resized to the model's input size."""
        return None

    def index_problems(self, split: str) -> list[tuple[str, str]]:
        """(image id, "<file>: <problem>") of images that ``index(split)`` left out because their files
        cannot be used (they give no samples, so ``load`` cannot report them in ``Batch.skipped``)."""
        return []

    # ------------------------------------------------------------ label maps

    def label_map(self) -> LabelMap | None:
        """The map from this dataset's classes to model classes: the ``label_map`` file when given,
        else the built-in map for these classes (None when there is none)."""
        from bench.datasets.label_map_files import read_label_map

        path = getattr(self.params, "label_map", None)
        return read_label_map(path) if path else self.builtin_label_map()

    def builtin_label_map(self) -> LabelMap | None:
        """The built-in map whose vocabulary (VOC, CIFAR-10, COCO) holds every class of this dataset."""
        from bench.datasets.label_maps import builtin_map

        return builtin_map(self.classes)

    def class_map(self, spec: ModelSpec) -> ClassMap | None:
        """For each class of this dataset, the outputs of the model ``spec`` that depict it and why a
        class has none; None when no map serves this model (ConfigError for a map that does not fit)."""
        found = self.label_map()
        if found is None or not found.applies_to(spec.label_space, spec.class_names):
            return None
        return found.resolve(self.classes, spec.class_names, spec.num_classes)

    def class_sets(self, label_space: str) -> list[tuple[int, ...]] | None:
        """For each class of this dataset, the output indices of a model of ``label_space``
        (e.g. "imagenet1k") that depict it; None when no mapping exists. An empty tuple
        means the class has no counterpart there (VOC's person in ImageNet)."""
        from bench.datasets.imagenet import VOCABULARIES

        names = VOCABULARIES.get(label_space, ())
        found = self.class_map(ModelSpec(num_classes=len(names), class_names=names, label_space=label_space))
        return None if found is None else found.sets

    def check_label_map(self) -> None:
        """Read the ``label_map`` file (syntax, structure) and, when it names a label space whose
        classes xbench knows (imagenet1k), resolve every name: `xbench validate` then catches typos."""
        from bench.datasets.imagenet import VOCABULARIES

        if not getattr(self.params, "label_map", None):
            return
        found = self.label_map()
        if found is not None and found.label_space in VOCABULARIES:
            names = VOCABULARIES[found.label_space]
            found.resolve(self.classes, names, len(names))

    def content_identity(self) -> dict[str, Any]:
        """What defines the data itself (not which split a benchmark reads): keys model caches.

        A label map changes what is explained, so it is part of it (by the file's content)."""
        params = self.params.model_dump(mode="json")
        params.pop("split", None)
        for key, default in self.identity_defaults.items():
            if key in params and params[key] == default:
                params.pop(key)
        if params.get("label_map"):
            params["label_map"] = _file_digest(params["label_map"])
        return {"name": self.name, "version": self.version, "params": params}


def _file_digest(path: str) -> str:
    """``sha256:<hex>`` of a file's bytes, or the path itself when it cannot be read (check() says why)."""
    try:
        return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return path


def stratified_sample(refs: Sequence[SampleRef], n: int | None, seed: int) -> list[SampleRef]:
    """``n`` samples spread as evenly as possible over classes, the same for a seed everywhere.

    Within each class, samples are ordered by a SHA-256 hash of (seed, id) and
    taken round-robin across classes (so batches mix classes). Growing ``n`` only
    adds samples, and the choice never depends on the platform, NumPy's RNG, or
    the order of ``refs``.
    """
    if n is None or n >= len(refs):
        return sorted(refs, key=lambda r: r.id)
    by_class: dict[int, list[SampleRef]] = defaultdict(list)
    for ref in refs:
        by_class[ref.label].append(ref)
    queues = {
        label: sorted(items, key=lambda r: stable_hash("sample-order", seed, r.id))
        for label, items in sorted(by_class.items())
    }
    chosen: list[SampleRef] = []
    depth = 0
    while len(chosen) < n:
        for label in sorted(queues):
            if depth < len(queues[label]) and len(chosen) < n:
                chosen.append(queues[label][depth])
        depth += 1
    return chosen
