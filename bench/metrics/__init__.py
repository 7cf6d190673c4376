"""Metrics: lazily registered."""

from bench.registry import METRICS

METRICS.register_lazy("deletion", "bench.metrics.faithfulness:Deletion")
METRICS.register_lazy("insertion", "bench.metrics.faithfulness:Insertion")
METRICS.register_lazy("iou", "bench.metrics.localisation:IoU")
METRICS.register_lazy("runtime", "bench.metrics.runtime:Runtime")
