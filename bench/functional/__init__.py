"""Every metric's core as a plain function on tensors (the style of ``torchmetrics.functional``).

    >>> import torch
    >>> from bench import functional as F
    >>> attributions = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])
    >>> F.pointing_game(attributions, torch.tensor([[[[0, 1], [0, 0]]]], dtype=torch.uint8)).value
    tensor([1.])

Each function returns ``bench.metrics.base.Scores``: ``.value`` is the main value per sample (N,),
``.values`` every output, ``.curves`` the curves, ``.reasons`` why a value is NaN (or why a sample gives
no answer) and ``.degenerate`` which samples gave no answer. The metric classes registered in
``bench.metrics`` are thin wrappers that turn their params into these arguments, so the numbers are the
same. Functions that need a model take any callable from (N, C, H, W) images in [0, 1] to (N, K) logits;
those that explain again take ``explain(model, x, target, seeds) -> (N, 1, H, W)`` (an explainer's
``explain``). Submodules are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    # faithfulness
    "deletion": "faithfulness",
    "insertion": "faithfulness",
    "faithfulness_correlation": "faithfulness",
    "pixel_flipping": "faithfulness",
    "region_perturbation": "regions",
    "irof": "regions",
    "road": "imputation",
    # localisation
    "iou": "localisation",
    "iou_sweep": "localisation",
    "pointing_game": "localisation",
    "energy_pointing_game": "localisation",
    "relevance_rank_accuracy": "localisation",
    "pixel_auroc": "localisation",
    # robustness
    "max_sensitivity": "robustness",
    "avg_sensitivity": "robustness",
    "local_lipschitz": "robustness",
    "consistency": "robustness",
    # randomisation
    "model_randomisation": "randomisation",
    "random_logit": "randomisation",
    # complexity
    "sparseness": "complexity",
    "entropy": "complexity",
    # agreement between explainers
    "agreement": "comparison",
}
SUBMODULES = tuple(sorted(set(_WHERE.values())))
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
