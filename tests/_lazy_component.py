"""A component module for the lazy-import test (imported only through the registry)."""

from bench.component import Component


class Lazy(Component):
    """Loaded lazily."""
