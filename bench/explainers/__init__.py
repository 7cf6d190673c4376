"""Explainers: lazily registered so that listing them does not import captum."""

from bench.registry import EXPLAINERS

EXPLAINERS.register_lazy("saliency", "bench.explainers.gradient:Saliency")
EXPLAINERS.register_lazy("integrated_gradients", "bench.explainers.gradient:IntegratedGradients")
EXPLAINERS.register_lazy("gradcam", "bench.explainers.cam:GradCAM")
EXPLAINERS.register_lazy("random", "bench.explainers.controls:RandomAttribution")
