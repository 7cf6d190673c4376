"""`quantus:<Metric>`: any per-sample Quantus metric run as is on the cell's batch (a pass-through).

``quantus_metric(name)`` builds an xbench metric class for the Quantus class
``name`` (``quantus:IROF``, ``quantus:PointingGame``, ...). Its params are the
Quantus constructor's keyword arguments (``init``), extra ``__call__`` keyword
arguments (``call``), the direction of the score (``higher_is_better``: a
default for common metrics, required for the others) and ``softmax``. Keys are
checked against the Quantus signatures when the suite is validated.

How the batch is handed over:

- model: the cell's model (``model.module``, images in [0, 1]); images, targets
  and attributions as numpy, channel first; masks (localisation metrics) as
  ``s_batch`` with 1 = object and 0 = everything else (void included);
- ``explain_func`` calls the cell's explainer (on perturbed inputs, or on the
  randomised model copies of the randomisation metrics) with the sample's seed;
- Quantus is called **once per sample**, with numpy's and torch's global RNGs
  seeded from the sample's seed (and restored afterwards). Quantus draws its
  random numbers from those global RNGs and normalises attributions over the
  whole batch (``normalise_by_max``), so per-sample calls are what makes the
  numbers independent of the batch size and reproducible;
- a result that is a curve (PixelFlipping, RegionPerturbation, Selectivity...)
  is reduced to its trapezoid with unit spacing (Quantus' ``get_auc_score``,
  per sample) and kept as the curve; None or NaN become NaN with the reason;
  samples with an empty mask are NaN ("empty mask") without calling Quantus
  (Quantus 0.6's PointingGame would report them as hits); metrics that return
  something other than one value per sample (ROAD, Continuity: dictionaries)
  fail with an error that says so.

Quantus 0.6 calls ``np.trapz``, which numpy 2.4 removed: importing this module
restores it as ``np.trapezoid``. Quantus 0.6's IROF fails on RGB images (its
superpixel mask has one channel); the pass-through gives it a perturbation
function that broadcasts the mask over the channels.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import quantus
import torch
from pydantic import Field, model_validator
from quantus.functions.perturb_func import baseline_replacement_by_mask
from quantus.helpers.enums import EvaluationCategory
from quantus.metrics.base import Metric as QuantusMetric
from torch import nn

from bench.cards import FAMILIES
from bench.component import Params
from bench.errors import ConfigError
from bench.explainers.base import Explainer
from bench.metrics.base import Metric, MetricInput, Scores
from bench.metrics.removal import check_attribution_shape
from bench.types import Direction, ImageShape, LoadedModel, Passes


def install_trapz_shim() -> None:
    """Quantus 0.6 integrates curves with ``np.trapz``, removed in numpy 2.4: alias it to ``np.trapezoid``."""
    if not hasattr(np, "trapz"):
        setattr(np, "trapz", np.trapezoid)  # noqa: B010  # numpy>=2.4's stubs no longer declare np.trapz


install_trapz_shim()

H, L = Direction.HIGHER, Direction.LOWER
# Which way common Quantus metrics improve (as Quantus reports them: curves reduced to their AUC).
DIRECTIONS: dict[str, Direction] = {
    # faithfulness
    "FaithfulnessCorrelation": H,
    "FaithfulnessEstimate": H,
    "IROF": H,
    "Monotonicity": H,
    "MonotonicityCorrelation": H,
    "Sufficiency": H,
    "PixelFlipping": L,  # AUC of the target score as relevant pixels are flipped
    "Selectivity": L,  # AUC of the target score as relevant patches are removed
    "Infidelity": L,
    # localisation
    "PointingGame": H,
    "AttributionLocalisation": H,
    "TopKIntersection": H,
    "RelevanceRankAccuracy": H,
    "RelevanceMassAccuracy": H,
    "AUC": H,
    "Focus": H,
    # complexity
    "Sparseness": H,
    "Complexity": L,
    "EffectiveComplexity": L,
    # robustness
    "MaxSensitivity": L,
    "AvgSensitivity": L,
    "LocalLipschitzEstimate": L,
    "RelativeInputStability": L,
    "RelativeOutputStability": L,
    "RelativeRepresentationStability": L,
    # randomisation: similarity between original and randomised explanations
    "MPRT": L,
    "SmoothMPRT": L,
    "RandomLogit": L,
    # axiomatic
    "Completeness": H,
    "NonSensitivity": L,
    "InputInvariance": H,
}
RESERVED_CALL = frozenset(
    {"model", "x_batch", "y_batch", "a_batch", "s_batch", "channel_first", "explain_func", "device", "softmax"}
)
RESERVED_INIT = frozenset({"return_aggregate"})  # xbench needs one value per sample
INIT_DEFAULTS: dict[str, Any] = {"disable_warnings": True, "display_progressbar": False}


def default_direction(name: str, init: dict[str, Any]) -> Direction | None:
    """The direction xbench assumes for Quantus metric ``name`` with constructor kwargs ``init``; None: unknown."""
    if name == "RegionPerturbation":  # the curve holds output drops: large early drops are good for MoRF
        return {"morf": H, "lerf": L}.get(init.get("order", "morf"))
    return DIRECTIONS.get(name)


def quantus_classes() -> dict[str, type[QuantusMetric[Any]]]:
    """Every metric class that the installed Quantus exports, by name."""
    return {
        name: obj
        for name, obj in vars(quantus).items()
        if isinstance(obj, type) and issubclass(obj, QuantusMetric) and obj is not QuantusMetric
    }


def _broadcast_mask_replacement(arr: np.ndarray, mask: np.ndarray, **kwargs: Any) -> np.ndarray:
    """Quantus' ``baseline_replacement_by_mask`` with a one-channel mask broadcast over the channels."""
    return baseline_replacement_by_mask(arr=arr, mask=np.broadcast_to(mask, arr.shape), **kwargs)


COMPAT_INIT: dict[str, dict[str, Any]] = {"IROF": {"perturb_func": _broadcast_mask_replacement}}


def _keywords(function: Callable[..., Any]) -> list[str]:
    """Named keyword parameters of ``function`` (without self and ``**kwargs``)."""
    return [
        name
        for name, param in inspect.signature(function).parameters.items()
        if name != "self" and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
    ]


def _check_keys(field: str, given: dict[str, Any], accepted: list[str], reserved: frozenset[str]) -> None:
    taken = sorted(set(given) & reserved)
    if taken:
        raise ValueError(f"{field}: xbench sets {', '.join(taken)} itself")
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        allowed = ", ".join(k for k in accepted if k not in reserved)
        raise ValueError(f"{field}: unknown keyword(s) {', '.join(unknown)}; accepted: {allowed}")


class QuantusParams(Params):
    init: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the Quantus constructor")
    call: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments of the Quantus call (e.g. explain_func_kwargs)"
    )
    higher_is_better: bool | None = Field(
        None, description="direction of the score; default from xbench's table of common metrics, else required"
    )
    softmax: bool | None = Field(
        None, description="score softmax probabilities (true) or logits (false); default: the Quantus metric's own"
    )


class QuantusPassThrough(Metric):
    """Base of the classes ``quantus_metric`` builds: one Quantus metric, called once per sample."""

    Params = QuantusParams
    quantus_name: ClassVar[str] = ""
    quantus_class: ClassVar[type[QuantusMetric[Any]]]

    def __init__(self, params: QuantusParams | None = None):
        super().__init__(params)
        self.directions()  # fails now, with the fix, when the direction is unknown

    def directions(self) -> dict[str, Direction]:
        p = self.params
        direction = default_direction(self.quantus_name, p.init)
        if p.higher_is_better is not None:
            direction = H if p.higher_is_better else L
        if direction is None:
            raise ConfigError(
                f"xbench does not know which way quantus:{self.quantus_name} improves",
                field="params.higher_is_better",
                fix="set params.higher_is_better to true or false",
            )
        return {"": direction}

    def passes(self, image_shape: ImageShape, explainer: Explainer | None = None) -> Passes:
        """Unknown: Quantus does its own passes (the estimate counts none)."""
        return Passes(0, 0)

    def _metric(self) -> QuantusMetric[Any]:
        accepted = _keywords(self.quantus_class.__init__)
        init = {k: v for k, v in INIT_DEFAULTS.items() if k in accepted}
        init.update(COMPAT_INIT.get(self.quantus_name, {}))
        init.update(self.params.init)
        if "return_aggregate" in accepted:
            init["return_aggregate"] = False
        return self.quantus_class(**init)

    def score(self, inp: MetricInput) -> Scores:
        check_attribution_shape(inp)
        n = len(inp.batch)
        arrays = (
            inp.batch.x.detach().cpu().numpy(),
            inp.target.detach().cpu().numpy(),
            inp.attributions.detach().cpu().numpy(),
            object_masks(inp) if "mask" in self.needs else None,
        )
        values = np.full(n, np.nan)
        curves: list[np.ndarray | None] = [None] * n
        reasons: list[str | None] = [None] * n
        for i in range(n):
            values[i], curves[i], reasons[i] = self._score_sample(inp, arrays, i)
        scores = Scores(values={"": torch.as_tensor(values, dtype=torch.float64)}, reasons=reasons)
        if any(c is not None for c in curves):
            scores.curves[""] = padded_curves(curves)
        return scores

    def _score_sample(
        self, inp: MetricInput, arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None], i: int
    ) -> tuple[float, np.ndarray | None, str | None]:
        """(value, curve, NaN reason) of sample ``i``: Quantus called on it alone, its RNGs seeded from the
        sample's seed. Attributions that Quantus refuses to score (all zero, constant, all negative: its
        ``assert_attributions``) give NaN with Quantus' reason rather than an error for the whole batch."""
        x, y, a, masks = arrays
        if masks is not None and not masks[i].any():
            return float("nan"), None, "empty mask"
        extra = dict(self.params.call)
        if self.params.softmax is not None:
            extra["softmax"] = self.params.softmax
        device = inp.model.device
        try:
            with seeded_rngs(inp.seeds[i], device):
                result = self._metric()(
                    model=inp.model.module,
                    x_batch=x[i : i + 1],
                    y_batch=y[i : i + 1],
                    a_batch=a[i : i + 1],
                    s_batch=None if masks is None else masks[i : i + 1],
                    channel_first=True,
                    device=str(device),
                    explain_func=explain_function(inp, inp.seeds[i]),
                    **extra,
                )
        except AssertionError as error:
            if not raised_in(error, "assert_attributions"):
                raise
            return float("nan"), None, f"Quantus refuses the attribution: {error}"
        return per_sample_result(result, self.quantus_name, inp.batch.ids[i])


def raised_in(error: BaseException, function: str) -> bool:
    """Whether ``error`` was raised inside a function called ``function`` (the innermost frame's)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name == function


def object_masks(inp: MetricInput) -> np.ndarray:
    """(N, 1, H, W) float32 masks with 1 = object, 0 = background or void; ValueError naming the
    samples when the batch has no masks or masks of another size than the attributions."""
    mask = inp.batch.mask
    ids = ", ".join(inp.batch.ids)
    if mask is None:
        raise ValueError(f"this metric needs masks and the batch has none (samples {ids})")
    if tuple(mask.shape[-2:]) != tuple(inp.attributions.shape[-2:]):
        raise ValueError(
            f"masks of size {tuple(mask.shape[-2:])} do not match attributions of size "
            f"{tuple(inp.attributions.shape[-2:])} for samples {ids}"
        )
    return (mask == 1).detach().cpu().numpy().astype(np.float32)


def explain_function(inp: MetricInput, seed: int) -> Callable[..., np.ndarray] | None:
    """Quantus' ``explain_func(model, inputs, targets, **kwargs)`` backed by the cell's explainer."""
    explainer = inp.explainer
    if explainer is None:
        return None

    def explain(model: Any, inputs: np.ndarray, targets: Any, **_kwargs: Any) -> np.ndarray:
        module = model.get_model() if hasattr(model, "get_model") else model
        if not isinstance(module, nn.Module):
            raise TypeError(f"quantus passed a {type(module).__name__} where xbench expects a torch module")
        loaded = inp.model if module is inp.model.module else LoadedModel(module, inp.model.spec, inp.model.info)
        device = inp.model.device
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=device)
        target = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=device).reshape(-1)
        target = target.expand(len(x)) if len(target) == 1 else target
        return explainer.explain(loaded, x, target, [seed] * len(x)).cpu().numpy()

    return explain


@contextmanager
def seeded_rngs(seed: int, device: torch.device) -> Iterator[None]:
    """numpy's and torch's global RNGs seeded from ``seed`` inside, restored afterwards."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield
    finally:
        np.random.set_state(state)


def per_sample_result(result: Any, name: str, sample_id: str) -> tuple[float, np.ndarray | None, str | None]:
    """(value, curve or None, NaN reason) from what Quantus returned for one sample."""
    if isinstance(result, dict) or not isinstance(result, (list, tuple, np.ndarray)) or len(result) != 1:
        raise ValueError(
            f"quantus:{name} returned {type(result).__name__} rather than one value per sample for sample "
            f"{sample_id}; xbench can pass through per-sample metrics only"
        )
    item = result[0]
    if item is None:
        return float("nan"), None, "Quantus returned None"
    if np.ndim(item) == 0:
        value = float(item)
        return value, None, "Quantus returned NaN" if value != value else None
    curve = np.asarray(item, dtype=np.float64).ravel()
    value = float(np.trapezoid(curve, dx=1))
    return value, curve, "Quantus returned NaN" if value != value else None


def padded_curves(curves: list[np.ndarray | None]) -> torch.Tensor:
    """(N, K) curves padded with NaN to the longest (a missing curve is all NaN)."""
    width = max(len(c) for c in curves if c is not None)
    out = torch.full((len(curves), width), float("nan"), dtype=torch.float64)
    for i, curve in enumerate(curves):
        if curve is not None:
            out[i, : len(curve)] = torch.from_numpy(curve)
    return out


def _summary(cls: type) -> str:
    """The first non-empty line of a Quantus class docstring."""
    lines = [line.strip() for line in (inspect.getdoc(cls) or "").splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else cls.__name__


@functools.cache
def quantus_metric(name: str) -> type[Metric]:
    """The xbench metric class for the Quantus metric class ``name``; ConfigError with close matches if unknown."""
    classes = quantus_classes()
    if name not in classes:
        close = difflib.get_close_matches(name, list(classes), n=3, cutoff=0.5)
        close += [c for c in classes if c.lower() == name.lower() and c not in close]
        hint = f"did you mean {' or '.join('quantus:' + c for c in close)}? " if close else ""
        raise ConfigError(
            f"Quantus {quantus.__version__} has no metric {name!r}",
            field="metrics",
            fix=hint + "Quantus metrics: " + ", ".join(sorted(classes)),
        )
    qcls = classes[name]
    init_keys, call_keys = _keywords(qcls.__init__), _keywords(qcls.__call__)

    def known_keys_and_direction(params: QuantusParams) -> QuantusParams:
        _check_keys("init", params.init, init_keys, RESERVED_INIT)
        _check_keys("call", params.call, call_keys, RESERVED_CALL)
        if params.higher_is_better is None and default_direction(name, params.init) is None:
            raise ValueError(
                f"xbench does not know which way quantus:{name} improves: set higher_is_better to true or false"
            )
        return params

    params_class = type(
        f"Quantus{name}Params",
        (QuantusParams,),
        {"__module__": __name__, "_checked": model_validator(mode="after")(known_keys_and_direction)},
    )
    category = getattr(qcls, "evaluation_category", None)
    localisation = category == EvaluationCategory.LOCALISATION
    family = category.value.lower() if category is not None and category.value.lower() in FAMILIES else "other"
    return type(
        f"Quantus{name}",
        (QuantusPassThrough,),
        {
            "__doc__": f"Quantus {name} as is (pass-through, one call per sample): {_summary(qcls)}.",
            "__module__": __name__,
            "Params": params_class,
            "quantus_name": name,
            "quantus_class": qcls,
            "needs": frozenset({"mask"}) if localisation else frozenset(),
            "family": family,
            "reference": f"quantus.{name}",
        },
    )
