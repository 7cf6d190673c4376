"""What every registered component (dataset, model, explainer, metric) shares.

A component is a class with a registry ``name``, an integer ``version`` that is
bumped whenever its numbers change for the same params, and a ``Params`` pydantic
model (unknown keys forbidden) that the suite's ``params`` mapping is validated
against when the suite is loaded, before any data or model is touched.
"""

from __future__ import annotations

import inspect
from types import UnionType
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict


def type_name(annotation: Any) -> str:
    """A short readable form of a type annotation: ``int | None``, ``zero|mean|blur``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin in (Union, UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


class Params(BaseModel):
    """Base for component parameter models: strict about unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    """For components that take no parameters."""


ParamsModel = Params  # the base class, for annotations inside Component (whose ``Params`` is a class attribute)


class Component:
    """Base class of registered components; subclasses set ``Params`` and ``version``."""

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    Params: ClassVar[type[Params]] = NoParams

    def __init__(self, params: ParamsModel | None = None):
        self.params: Any = params if params is not None else self.Params()

    @classmethod
    def describe(cls) -> str:
        """The first line of the class docstring: the one-liner `xbench list` prints."""
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @classmethod
    def param_summary(cls) -> list[tuple[str, str, Any, str]]:
        """(name, type, default, description) of every parameter, for `xbench list`."""
        rows = []
        for field_name, field in cls.Params.model_fields.items():
            default = "(required)" if field.is_required() else field.get_default(call_default_factory=True)
            rows.append((field_name, type_name(field.annotation), default, field.description or ""))
        return rows

    def identity(self) -> dict[str, Any]:
        """Name, version and fully resolved params: what makes results of this component comparable."""
        return {"name": self.name, "version": self.version, "params": self.params.model_dump(mode="json")}
