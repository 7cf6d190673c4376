"""Metrics: lazily registered; `quantus:<MetricName>` runs any Quantus metric on the same batch."""

from bench.registry import METRICS

_BUILTIN = {
    # faithfulness
    "deletion": "faithfulness:Deletion",
    "insertion": "faithfulness:Insertion",
    "faithfulness_correlation": "faithfulness:FaithfulnessCorrelation",
    "pixel_flipping": "faithfulness:PixelFlipping",
    "region_perturbation": "faithfulness:RegionPerturbation",
    "irof": "faithfulness:IROF",
    "road": "road:ROAD",
    # localisation
    "iou": "localisation:IoU",
    "iou_sweep": "localisation:IoUSweep",
    "pointing_game": "localisation:PointingGame",
    "energy_pointing_game": "localisation:EnergyPointingGame",
    "relevance_rank_accuracy": "localisation:RelevanceRankAccuracy",
    "pixel_auroc": "localisation:PixelAUROC",
    # stability and robustness
    "max_sensitivity": "stability:MaxSensitivity",
    "avg_sensitivity": "stability:AvgSensitivity",
    "local_lipschitz": "stability:LocalLipschitz",
    "consistency": "stability:Consistency",
    # randomisation sanity checks
    "model_randomisation": "randomisation:ModelParameterRandomisation",
    "random_logit": "randomisation:RandomLogit",
    # complexity
    "sparseness": "complexity:Sparseness",
    "entropy": "complexity:Entropy",
    # agreement between methods
    "agreement": "agreement:Agreement",
    # cost
    "runtime": "runtime:Runtime",
}

for _name, _target in _BUILTIN.items():
    METRICS.register_lazy(_name, f"bench.metrics.{_target}")
METRICS.register_prefix("quantus:", "bench.metrics.quantus_:quantus_metric")
