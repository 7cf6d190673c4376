"""One generic registry for datasets, models, explainers and metrics.

Components register either eagerly with a decorator::

    @EXPLAINERS.register("my_method")
    class MyMethod(Explainer): ...

or lazily by import path, so that ``xbench validate`` and ``xbench list`` do not
import heavy optional dependencies until a component is actually needed::

    EXPLAINERS.register_lazy("saliency", "bench.explainers.gradient:Saliency")

Third-party packages can add components through the ``xbench.plugins`` entry
point group, or by naming modules in ``$XBENCH_PLUGINS``: each is a module that
is imported (and registers its components with the decorators) the first time
any registry is asked for names. (Suite files cannot name code to import.)
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from bench.errors import ConfigError

if TYPE_CHECKING:  # annotations only: the registries must not import the components they list
    from bench.datasets.base import Dataset
    from bench.explainers.base import Explainer
    from bench.metrics.base import Metric
    from bench.models.base import ModelSource

T = TypeVar("T")

_PLUGINS_LOADED = False


def _load_plugins() -> None:
    """Import, once, every module advertised under the ``xbench.plugins`` entry point group and
    every module named in ``$XBENCH_PLUGINS`` (comma separated; also seen by Ray workers)."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for ep in entry_points(group="xbench.plugins"):
        ep.load()
    for module in filter(None, (m.strip() for m in os.environ.get("XBENCH_PLUGINS", "").split(","))):
        importlib.import_module(module)


class Registry(Generic[T]):
    """Maps component names to classes, importing lazily registered ones on first use."""

    def __init__(self, kind: str):
        self.kind = kind  # "dataset", "model", "explainer", "metric": used in messages
        self._classes: dict[str, type[T]] = {}
        self._lazy: dict[str, str] = {}
        self._prefixes: dict[str, str] = {}  # "quantus:" -> "module:factory" building a class per name

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: register ``cls`` under ``name`` and set ``cls.name``."""

        def decorate(cls: type[T]) -> type[T]:
            self._check_free(name)
            cls.name = name  # type: ignore[attr-defined]
            self._classes[name] = cls
            return cls

        return decorate

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``"package.module:ClassName"`` under ``name`` without importing it."""
        self._check_free(name)
        if ":" not in target:
            raise ValueError(f"lazy target must look like 'module:attr', got {target!r}")
        self._lazy[name] = target

    def register_prefix(self, prefix: str, factory: str) -> None:
        """Names starting with ``prefix`` (e.g. ``quantus:IROF``) are built on demand by
        ``factory(name_without_prefix) -> class`` ("module:function", imported lazily); the
        factory raises ConfigError for names it does not know."""
        self._prefixes[prefix] = factory

    def _check_free(self, name: str) -> None:
        if name in self._classes or name in self._lazy:
            raise ValueError(f"{self.kind} {name!r} is already registered")

    def names(self) -> list[str]:
        """Registered names (names built on demand from a prefix are not listed)."""
        _load_plugins()
        return sorted(set(self._classes) | set(self._lazy))

    def prefixes(self) -> list[str]:
        return sorted(self._prefixes)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def suggest(self, name: str) -> list[str]:
        """Registered names close to ``name`` (for did-you-mean messages)."""
        names = self.names()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        lowered = [n for n in names if name.lower() in n.lower() and n not in close]
        return close + lowered[: 3 - len(close)]

    def get(self, name: str, *, where: str | None = None, field: str | None = None) -> type[T]:
        """The class registered as ``name``; a ConfigError with suggestions when unknown."""
        _load_plugins()
        if name in self._classes:
            return self._classes[name]
        if name in self._lazy:
            module_name, attr = self._lazy[name].split(":")
            cls = cast("type[T]", getattr(importlib.import_module(module_name), attr))
            cls.name = name  # type: ignore[attr-defined]
            self._classes[name] = cls
            del self._lazy[name]
            return cls
        for prefix, factory in self._prefixes.items():
            if name.startswith(prefix):
                module_name, attr = factory.split(":")
                built = cast("type[T]", getattr(importlib.import_module(module_name), attr)(name[len(prefix) :]))
                built.name = name  # type: ignore[attr-defined]
                return built
        hints = self.suggest(name)
        fix = f"did you mean {' or '.join(repr(h) for h in hints)}?" if hints else ""
        fix += f" Run `xbench list` to see every {self.kind}" if fix else f"run `xbench list` to see every {self.kind}"
        raise ConfigError(f"unknown {self.kind} {name!r}", where=where, field=field, fix=fix)


DATASETS: Registry[Dataset] = Registry("dataset")
MODELS: Registry[ModelSource] = Registry("model")
EXPLAINERS: Registry[Explainer] = Registry("explainer")
METRICS: Registry[Metric] = Registry("metric")

REGISTRIES: dict[str, Registry[Any]] = {
    "datasets": DATASETS,
    "models": MODELS,
    "explainers": EXPLAINERS,
    "metrics": METRICS,
}


def load_builtin_components() -> None:
    """Import the package modules that declare the built-in lazy registrations."""
    for module in ("bench.datasets", "bench.models", "bench.explainers", "bench.metrics"):
        importlib.import_module(module)
