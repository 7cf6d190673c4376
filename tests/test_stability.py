"""Sensitivity, local Lipschitz and consistency: analytic cases, Quantus on identical perturbations,
batch invariance, seeded determinism and the defined edge cases."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch
from scipy import stats

from bench.explainers.base import Explainer
from bench.functional.robustness import row_noise
from bench.metrics.base import Metric, MetricInput
from bench.metrics.similarity import UNDEFINED, prepare_maps
from bench.metrics.stability import (
    NON_FINITE,
    AvgSensitivity,
    Consistency,
    LocalLipschitz,
    MaxSensitivity,
)
from bench.models.base import prepare
from bench.models.small_cnn import build_small_cnn
from bench.registry import EXPLAINERS, load_builtin_components
from bench.seeding import per_sample_rand, stable_hash
from bench.types import LoadedModel, ModelSpec
from tests.helpers import batch_of, linear_model

load_builtin_components()

SEEDS = [11, 12, 13, 14]


class ChannelSum(Explainer):
    """Test explainer: the sum of the channels, a(x) = sum_c x_c (linear, so its changes are known)."""

    def attribute(self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]):
        return x.sum(1, keepdim=True)


class NoisyChannelSum(Explainer):
    """Test explainer: the channel sum plus seeded noise, rounded to quarters (so that ranks tie)."""

    deterministic = False

    def attribute(self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]):
        noise = per_sample_rand(seeds, (1, *x.shape[-2:]), "noisy-sum", device=x.device, normal=True)
        return ((x.sum(1, keepdim=True) + 0.5 * noise) * 4).round() / 4


class Zeros(Explainer):
    """Test explainer: all-zero attributions."""

    def attribute(self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]):
        return torch.zeros_like(x[:, :1])


def cnn_model(num_classes: int = 4) -> LoadedModel:
    """A small random CNN (the explainer-test architecture), deterministic weights."""
    torch.manual_seed(0)
    net = build_small_cnn((8, 16), num_classes=num_classes)
    spec = ModelSpec(num_classes=num_classes, target_layer="net.0", mean=(0.5,) * 3, std=(0.25,) * 3)
    return prepare(net, spec, torch.device("cpu"))


def cnn_input(model: LoadedModel, explainer: Explainer, n: int = 4, size: int = 16) -> MetricInput:
    """Random images, targets 0..3, and the explainer's attributions: a MetricInput as the runner builds it."""
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(5))
    batch = batch_of(x)
    batch.target = torch.arange(n) % model.spec.num_classes
    seeds = [stable_hash("test", i) for i in range(n)]
    attr = explainer.explain(model, x, batch.target, seeds)
    return MetricInput(model=model, batch=batch, attributions=attr, seeds=seeds, explainer=explainer)


def subset(inp: MetricInput, index: slice) -> MetricInput:
    return MetricInput(
        model=inp.model,
        batch=inp.batch.select(index),
        attributions=inp.attributions[index],
        seeds=list(inp.seeds)[index],
        explainer=inp.explainer,
    )


def quantus():
    """Quantus with the numpy 2 shim (np.trapz was removed; Quantus 0.6 still calls it)."""
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid
    import quantus as q

    return q


def quantus_explain_func(explainer: Explainer, spec: ModelSpec, seeds: Sequence[int] | None = None) -> Callable:
    """Our explainer as a Quantus ``explain_func``: whatever nn.Module Quantus passes, wrapped as a LoadedModel."""

    def explain(model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs) -> np.ndarray:
        x, t = torch.as_tensor(inputs), torch.as_tensor(targets)
        return explainer.explain(LoadedModel(module=model, spec=spec), x, t, seeds or list(range(len(x)))).numpy()

    return explain


class ReplayNoise:
    """A Quantus ``perturb_func`` that adds our per-row noise: call c perturbs step c % n of batch c // n."""

    def __init__(self, noise: torch.Tensor, batch_size: int):
        self.noise, self.batch_size, self.calls = noise.numpy(), batch_size, 0  # noise: (N, n_samples, F)

    def __call__(self, arr: np.ndarray, indices: np.ndarray, **kwargs) -> np.ndarray:
        steps = self.noise.shape[1]
        batch, step = divmod(self.calls, steps)
        self.calls += 1
        start = batch * self.batch_size
        return arr + self.noise[start : start + len(arr), step]


def metric_noise(seeds: Sequence[int], n_samples: int, shape: Sequence[int], salt: str, normal: bool, scale: float):
    """The noise the metric adds, as (N, n_samples, C*H*W), computed exactly as the metric does (float32)."""
    n = len(seeds)
    sample, repeat = torch.arange(n).repeat_interleave(n_samples), torch.arange(n_samples).repeat(n)
    return (scale * row_noise(seeds, sample, repeat, shape, salt, normal)).view(n, n_samples, -1)


# ---------------------------------------------------------------- analytic cases


def test_sensitivity_and_lipschitz_of_a_linear_explainer_are_exact() -> None:
    """a(x) = sum_c x_c: a(x') - a(x) = sum_c noise_c, so every ratio follows from the replayed noise."""
    model, explainer = cnn_model(), ChannelSum()
    inp = cnn_input(model, explainer)
    n, shape = 6, inp.batch.x.shape[1:]
    a = inp.attributions.flatten(1).double()

    uniform = metric_noise(inp.seeds, n, shape, "sensitivity", False, 0.05).double().view(4, n, 3, -1)
    sens = uniform.sum(2).norm(dim=2) / a.norm(dim=1, keepdim=True)
    p = MaxSensitivity.Params(n_samples=n, radius=0.05, explain_batch=5)
    torch.testing.assert_close(MaxSensitivity(p).score(inp).values[""], sens.amax(1), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(AvgSensitivity(p).score(inp).values[""], sens.mean(1), rtol=1e-5, atol=1e-7)

    gauss = metric_noise(inp.seeds, n, shape, "local-lipschitz", True, 0.1).double().view(4, n, 3, -1)
    lip = gauss.sum(2).norm(dim=2) / gauss.flatten(2).norm(dim=2)
    p = LocalLipschitz.Params(n_samples=n, perturb_std=0.1, normalise=False, explain_batch=7)
    torch.testing.assert_close(LocalLipschitz(p).score(inp).values[""], lip.amax(1), rtol=1e-5, atol=1e-7)


def test_a_model_independent_gradient_is_perfectly_stable() -> None:
    """Saliency of a linear model is |w| whatever the input: sensitivity and Lipschitz estimate are 0."""
    g = torch.Generator().manual_seed(0)
    model = linear_model(torch.randn(3, 8, 8, generator=g))
    x = torch.rand(3, 3, 8, 8, generator=g)
    saliency = EXPLAINERS.get("saliency")()
    attr = saliency.explain(model, x, torch.zeros(3, dtype=torch.long))
    inp = MetricInput(model=model, batch=batch_of(x), attributions=attr, seeds=[1, 2, 3], explainer=saliency)
    for metric in (MaxSensitivity(), AvgSensitivity(), LocalLipschitz()):
        assert metric.score(inp).values[""].tolist() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------- Quantus on identical perturbations


@pytest.fixture(scope="module")
def saliency_input() -> MetricInput:
    return cnn_input(cnn_model(), EXPLAINERS.get("saliency")())


@pytest.mark.parametrize(
    ("ours", "theirs", "abs", "normalise"),
    [("max", "MaxSensitivity", False, False), ("avg", "AvgSensitivity", True, True)],
)
def test_sensitivity_matches_quantus(saliency_input: MetricInput, ours: str, theirs: str, abs: bool, normalise: bool):
    q, inp, n = quantus(), saliency_input, 4
    metric = (MaxSensitivity if ours == "max" else AvgSensitivity)(
        MaxSensitivity.Params(n_samples=n, radius=0.05, abs=abs, normalise=normalise)
    )
    expected = metric.score(inp).values[""].numpy()
    noise = metric_noise(inp.seeds, n, inp.batch.x.shape[1:], "sensitivity", False, 0.05)
    # Quantus normalises by the maximum over a batch: batches of one image make it per sample, and
    # maps that are already normalised are left as they are by its whole-array normalisation.
    batch_size = 1 if normalise else len(noise)
    replay = ReplayNoise(noise, batch_size)
    result = getattr(q, theirs)(
        nr_samples=n,
        perturb_func=replay,
        abs=abs,
        normalise=normalise,
        disable_warnings=True,
        display_progressbar=False,
    )(
        model=inp.model.module,
        x_batch=inp.batch.x.numpy(),
        y_batch=inp.batch.target.numpy(),
        a_batch=prepare_maps(inp.attributions, abs, normalise).numpy(),
        explain_func=quantus_explain_func(inp.explainer, inp.model.spec, inp.seeds),
        device="cpu",
        channel_first=True,
        softmax=False,
        batch_size=batch_size,
    )
    assert replay.calls == n * len(noise) // batch_size  # every perturbation was replayed
    np.testing.assert_allclose(expected, np.asarray(result), rtol=0, atol=1e-4)


@pytest.mark.parametrize("normalise", [False, True])
def test_local_lipschitz_matches_quantus(saliency_input: MetricInput, normalise: bool) -> None:
    q, inp, n = quantus(), saliency_input, 4
    p = LocalLipschitz.Params(n_samples=n, perturb_std=0.1, normalise=normalise)
    expected = LocalLipschitz(p).score(inp).values[""].numpy()
    noise = metric_noise(inp.seeds, n, inp.batch.x.shape[1:], "local-lipschitz", True, 0.1)
    batch_size = 1 if normalise else len(noise)
    replay = ReplayNoise(noise, batch_size)
    result = q.LocalLipschitzEstimate(
        nr_samples=n,
        perturb_func=replay,
        normalise=normalise,
        abs=False,
        disable_warnings=True,
        display_progressbar=False,
    )(
        model=inp.model.module,
        x_batch=inp.batch.x.numpy(),
        y_batch=inp.batch.target.numpy(),
        a_batch=prepare_maps(inp.attributions, False, normalise).numpy(),
        explain_func=quantus_explain_func(inp.explainer, inp.model.spec, inp.seeds),
        device="cpu",
        channel_first=True,
        softmax=False,
        batch_size=batch_size,
    )
    assert replay.calls == n * len(noise) // batch_size  # every perturbation was replayed
    np.testing.assert_allclose(expected, np.asarray(result), rtol=0, atol=1e-4)


# ---------------------------------------------------------------- batching and seeds


@pytest.mark.parametrize(
    "metric",
    [
        MaxSensitivity(MaxSensitivity.Params(n_samples=3)),
        AvgSensitivity(AvgSensitivity.Params(n_samples=3, explain_batch=2)),
        LocalLipschitz(LocalLipschitz.Params(n_samples=3, explain_batch=5)),
    ],
    ids=["max", "avg", "lipschitz"],
)
def test_batch_invariance_and_seeded_determinism(saliency_input: MetricInput, metric: Metric) -> None:
    whole = metric.score(saliency_input).values[""]
    halves = torch.cat([metric.score(subset(saliency_input, s)).values[""] for s in (slice(0, 2), slice(2, 4))])
    torch.testing.assert_close(whole, halves, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(whole, metric.score(saliency_input).values[""], rtol=0, atol=0)
    one_by_one = type(metric)(metric.params.model_copy(update={"explain_batch": 1}))
    torch.testing.assert_close(whole, one_by_one.score(saliency_input).values[""], rtol=1e-5, atol=1e-7)
    other = MetricInput(**{**saliency_input.__dict__, "seeds": [s + 1 for s in saliency_input.seeds]})
    assert not torch.allclose(whole, metric.score(other).values[""])


def test_consistency_is_invariant_to_batching_and_chunking() -> None:
    inp = cnn_input(cnn_model(), NoisyChannelSum(), n=4, size=8)
    metric = Consistency(Consistency.Params(n_reruns=3, explain_batch=5))
    whole = metric.score(inp).values
    halves = [metric.score(subset(inp, s)).values for s in (slice(0, 2), slice(2, 4))]
    for key in ("", "topk"):
        torch.testing.assert_close(whole[key], torch.cat([h[key] for h in halves]), rtol=1e-6, atol=1e-9)
    big = Consistency(Consistency.Params(n_reruns=3, explain_batch=64)).score(inp).values
    torch.testing.assert_close(whole[""], big[""], rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------- consistency against a slow reference


def test_consistency_matches_a_pairwise_reference() -> None:
    """All pairs of the original and the reruns (seeds stable_hash(seed, "rerun", k)), with scipy's Spearman."""
    model, explainer = cnn_model(), NoisyChannelSum()
    inp = cnn_input(model, explainer, n=3, size=10)
    reruns, k_percent = 3, 7.0
    scores = Consistency(Consistency.Params(n_reruns=reruns, k_percent=k_percent, explain_batch=4)).score(inp)
    k = int(np.ceil(100 * k_percent / 100))
    for i, seed in enumerate(inp.seeds):
        x, t = inp.batch.x[i : i + 1], inp.batch.target[i : i + 1]
        runs = [inp.attributions[i].flatten().numpy().astype(np.float64)]
        runs += [
            explainer.explain(model, x, t, [stable_hash(seed, "rerun", j)]).flatten().numpy().astype(np.float64)
            for j in range(1, reruns + 1)
        ]
        pairs = list(itertools.combinations(runs, 2))
        rho = np.mean([stats.spearmanr(a, b)[0] for a, b in pairs])
        tops = [set(np.argsort(-a, kind="stable")[:k].tolist()) for a in runs]
        overlap = np.mean([len(a & b) / k for a, b in itertools.combinations(tops, 2)])
        assert scores.values[""][i].item() == pytest.approx(rho, abs=1e-9)
        assert scores.values["topk"][i].item() == pytest.approx(overlap, abs=1e-12)
    assert 0.2 < scores.values[""].mean() < 0.99  # noisy but related runs


# ---------------------------------------------------------------- edge cases


def test_deterministic_explainers_get_nan_with_a_reason(saliency_input: MetricInput) -> None:
    scores = Consistency().score(saliency_input)
    assert scores.values[""].isnan().all() and scores.values["topk"].isnan().all()
    assert scores.reasons == ["deterministic explainer: consistency is trivially 1"] * 4


def test_constant_runs_make_the_spearman_consistency_nan() -> None:
    inp = cnn_input(cnn_model(), NoisyChannelSum(), n=3, size=8)
    inp.attributions[1] = 0.0  # a constant original run
    scores = Consistency(Consistency.Params(n_reruns=2)).score(inp)
    assert scores.values[""].isnan().tolist() == [False, True, False]
    assert scores.reasons == [None, UNDEFINED["spearman"], None]
    assert torch.isfinite(scores.values["topk"]).all()  # the top-k overlap stays defined (ties break by position)

    class FlatStochastic(Zeros):
        deterministic = False

    flat = cnn_input(cnn_model(), NoisyChannelSum(), n=2, size=8)
    flat.explainer = FlatStochastic()  # constant reruns
    assert Consistency(Consistency.Params(n_reruns=1)).score(flat).values[""].isnan().all()


def test_zero_attributions_make_sensitivity_nan_but_not_lipschitz() -> None:
    inp = cnn_input(cnn_model(), Zeros())
    for metric in (MaxSensitivity(MaxSensitivity.Params(n_samples=2)), AvgSensitivity()):
        scores = metric.score(inp)
        assert scores.values[""].isnan().all()
        assert scores.reasons == ["zero attribution: sensitivity is relative to its norm"] * 4
    scores = LocalLipschitz(LocalLipschitz.Params(n_samples=2)).score(inp)
    assert scores.values[""].tolist() == [0.0] * 4 and scores.reasons == [None] * 4


def test_nan_model_outputs_give_nan_with_a_reason() -> None:
    weight = torch.ones(3, 8, 8)
    weight[0, 0, 0] = torch.nan
    model = linear_model(weight)
    x = torch.rand(2, 3, 8, 8)
    inp = MetricInput(
        model=model,
        batch=batch_of(x),
        attributions=torch.rand(2, 1, 8, 8),
        seeds=[1, 2],
        explainer=EXPLAINERS.get("saliency")(),
    )
    for metric in (
        MaxSensitivity(MaxSensitivity.Params(n_samples=2)),
        LocalLipschitz(LocalLipschitz.Params(n_samples=2)),
    ):
        scores = metric.score(inp)
        assert scores.values[""].isnan().all() and scores.reasons == [NON_FINITE] * 2


def test_non_finite_reruns_make_consistency_nan_with_a_reason() -> None:
    class NaNReruns(NoisyChannelSum):
        def attribute(self, model, x, target, seeds):
            return torch.full_like(x[:, :1], torch.nan)

    inp = cnn_input(cnn_model(), NoisyChannelSum(), n=2, size=8)
    inp.explainer = NaNReruns()
    scores = Consistency(Consistency.Params(n_reruns=2)).score(inp)
    assert scores.values[""].isnan().all() and scores.values["topk"].isnan().all()
    assert scores.reasons == [NON_FINITE] * 2


def test_mismatched_attributions_and_a_missing_explainer_raise(saliency_input: MetricInput) -> None:
    wrong = MetricInput(**{**saliency_input.__dict__, "attributions": torch.rand(4, 1, 8, 8)})
    with pytest.raises(ValueError, match="s0, s1, s2, s3"):
        MaxSensitivity().score(wrong)
    missing = MetricInput(**{**saliency_input.__dict__, "explainer": None})
    for metric in (MaxSensitivity(), LocalLipschitz(), Consistency()):
        with pytest.raises(ValueError, match="needs the cell's explainer"):
            metric.score(missing)


def test_params_have_bounds_and_passes() -> None:
    with pytest.raises(ValueError):
        MaxSensitivity.Params(radius=0)
    with pytest.raises(ValueError):
        Consistency.Params(k_percent=0)
    with pytest.raises(ValueError):
        LocalLipschitz.Params(unknown=1)
    assert MaxSensitivity(MaxSensitivity.Params(n_samples=7)).passes((3, 32, 32)).forward == 7
    assert Consistency().passes((3, 32, 32)).backward == 3
