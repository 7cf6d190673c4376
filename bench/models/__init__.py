"""Models: lazily registered sources of classifiers."""

from bench.registry import MODELS

MODELS.register_lazy("small_cnn", "bench.models.small_cnn:SmallCNN")
