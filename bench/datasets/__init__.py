"""Datasets: lazily registered so that listing them imports nothing heavy."""

from bench.registry import DATASETS

DATASETS.register_lazy("synthetic", "bench.datasets.synthetic:Synthetic")
DATASETS.register_lazy("imagefolder", "bench.datasets.imagefolder:ImageFolder")
