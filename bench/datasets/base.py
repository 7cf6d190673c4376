"""The dataset contract and deterministic, class-stratified sampling."""

from __future__ import annotations

from abc import abstractmethod
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, ClassVar

from bench.component import Component
from bench.seeding import stable_hash
from bench.types import Batch, SampleRef


class Dataset(Component):
    """A labelled image dataset with optional ground-truth masks.

    Subclasses read their data lazily: ``index`` lists sample ids and labels
    cheaply; ``load`` reads the images (and masks) of a few samples.
    """

    has_masks: ClassVar[bool] = False
    variable_size: ClassVar[bool] = False  # images differ in size: load() resizes to the model's input

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

    def class_sets(self, label_space: str) -> list[tuple[int, ...]] | None:
        """For each class of this dataset, the output indices of a model of ``label_space``
        (e.g. "imagenet1k") that depict it; None when no mapping exists. An empty tuple
        means the class has no counterpart there (VOC's person in ImageNet)."""
        from bench.datasets.label_maps import class_sets

        return class_sets(self.classes, label_space)

    def content_identity(self) -> dict[str, Any]:
        """What defines the data itself (not which split a benchmark reads): keys model caches."""
        params = self.params.model_dump(mode="json")
        params.pop("split", None)
        return {"name": self.name, "version": self.version, "params": params}


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
