"""The generic registry: decorators, lazy imports, did-you-mean suggestions."""

from __future__ import annotations

import sys

import pytest

from bench.component import Component, Params
from bench.errors import ConfigError
from bench.registry import EXPLAINERS, Registry, load_builtin_components


def test_decorator_registers_and_names_the_class() -> None:
    reg: Registry = Registry("widget")

    @reg.register("spinner")
    class Spinner(Component):
        """Spins."""

    assert reg.get("spinner") is Spinner and Spinner.name == "spinner"
    assert "spinner" in reg and reg.names() == ["spinner"]
    with pytest.raises(ValueError, match="already registered"):
        reg.register("spinner")(Spinner)


def test_lazy_registration_imports_on_first_use() -> None:
    reg: Registry = Registry("widget")
    sys.modules.pop("tests._lazy_component", None)
    reg.register_lazy("lazy", "tests._lazy_component:Lazy")
    assert "tests._lazy_component" not in sys.modules
    cls = reg.get("lazy")
    assert "tests._lazy_component" in sys.modules and cls.name == "lazy"
    with pytest.raises(ValueError, match="module:attr"):
        reg.register_lazy("bad", "no_colon")


def test_unknown_names_get_suggestions() -> None:
    load_builtin_components()
    assert EXPLAINERS.suggest("gradcm")[0] == "gradcam"
    assert "integrated_gradients" in EXPLAINERS.suggest("integrated")
    with pytest.raises(ConfigError) as info:
        EXPLAINERS.get("salency", where="s.yaml:3", field="explainers[0].name")
    text = str(info.value)
    assert text.startswith("s.yaml:3: field `explainers[0].name`: unknown explainer 'salency'")
    assert "'saliency'" in text and "xbench list" in text
    with pytest.raises(ConfigError, match="run `xbench list`"):
        EXPLAINERS.get("zzzzzzzz")


def test_every_builtin_component_loads_and_describes_itself() -> None:
    from bench.registry import REGISTRIES

    load_builtin_components()
    for kind, registry in REGISTRIES.items():
        assert registry.names(), kind
        for name in registry.names():
            cls = registry.get(name)
            assert cls.name == name
            assert cls.describe(), f"{kind} {name} has no docstring"
            assert issubclass(cls.Params, Params)
            if not any(f.is_required() for f in cls.Params.model_fields.values()):
                cls.Params()  # components without required params must work with their defaults
