"""xbench: a quantitative benchmark suite for image explainers."""

__version__ = "0.1.0"
