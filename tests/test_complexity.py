"""Sparseness (Gini) and entropy: analytic values, edge cases, batch invariance, and
cross-checks against quantus.Sparseness and quantus.Complexity on identical inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import quantus
import torch

from bench.functional.complexity import gini
from bench.metrics.base import Metric, MetricInput, Scores
from bench.metrics.complexity import Entropy, Sparseness
from bench.models.base import prepare
from bench.models.small_cnn import build_small_cnn
from bench.registry import METRICS, load_builtin_components
from bench.types import LoadedModel, ModelSpec
from tests.helpers import batch_of, linear_model

if not hasattr(np, "trapz"):  # Quantus 0.6 still calls np.trapz, which numpy 2.4 removed
    np.trapz = np.trapezoid

QUIET = {"disable_warnings": True, "display_progressbar": False}


def _score(cls: type[Metric], attr: torch.Tensor, model: LoadedModel | None = None) -> Scores:
    n, size = attr.shape[0], attr.shape[-2:]
    model = model or linear_model(torch.zeros(3, *size))
    inp = MetricInput(model=model, batch=batch_of(torch.zeros(n, 3, *size)), attributions=attr, seeds=[0] * n)
    return cls().score(inp)


def _main(cls: type[Metric], attr: torch.Tensor) -> list[float]:
    return _score(cls, attr).values[""].tolist()


def _one_hot(size: int, value: float = 1.0) -> torch.Tensor:
    t = torch.zeros(1, 1, size, size)
    t[..., size // 3, size // 2] = value
    return t


def test_analytic_values() -> None:
    n = 64
    assert _main(Sparseness, _one_hot(8)) == pytest.approx([(n - 1) / n])
    assert _main(Sparseness, torch.full((1, 1, 8, 8), 0.3)) == pytest.approx([0.0], abs=1e-12)
    assert _main(Entropy, _one_hot(8)) == pytest.approx([0.0], abs=1e-12)
    assert _main(Entropy, torch.full((1, 1, 8, 8), 0.3)) == pytest.approx([math.log(n)])
    half = torch.tensor([[[[0.0, 0.0], [2.0, 2.0]]]])
    # sorted (0, 0, 2, 2), weights 2i - n - 1 = (-3, -1, 1, 3): (2 + 6) / (4 * 4) = 1/2
    assert _main(Sparseness, half) == pytest.approx([0.5])
    assert _main(Entropy, half) == pytest.approx([math.log(2)])
    assert gini(torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)).item() == pytest.approx(
        sum(abs(a - b) for a in (1, 2, 3, 4) for b in (1, 2, 3, 4)) / (2 * 4 * 10)  # mean absolute difference form
    )


def test_sign_and_scale_do_not_matter() -> None:
    attr = torch.randn(3, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    for cls in (Sparseness, Entropy):
        base = _main(cls, attr)
        assert _main(cls, -attr) == pytest.approx(base, abs=1e-12)
        assert _main(cls, 1e-3 * attr) == pytest.approx(base, abs=1e-6)  # float32 rounding of the scaled map


def test_sparser_maps_score_as_sparser() -> None:
    g = torch.Generator().manual_seed(1)
    diffuse = torch.rand(1, 1, 16, 16, generator=g) + 1
    peaked = diffuse.clone()
    peaked[..., 4:6, 4:6] += 50
    assert _main(Sparseness, peaked)[0] > _main(Sparseness, diffuse)[0]
    assert _main(Entropy, peaked)[0] < _main(Entropy, diffuse)[0]


@pytest.mark.parametrize("cls", [Sparseness, Entropy])
def test_all_zero_attribution_is_nan_with_a_reason(cls: type[Metric]) -> None:
    attr = torch.rand(3, 1, 6, 6)
    attr[1] = 0.0
    scores = _score(cls, attr)
    values = scores.values[""]
    assert not values[[0, 2]].isnan().any() and values[1].isnan()
    assert scores.reasons == [None, "all-zero attribution", None]


class _NaNModel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 2), float("nan"))


@pytest.mark.parametrize("cls", [Sparseness, Entropy])
def test_batch_invariance_and_no_model_dependence(cls: type[Metric]) -> None:
    attr = torch.randn(8, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    attr[2] = 0.0
    whole = _score(cls, attr)
    halves = torch.cat([_score(cls, attr[i : i + 4]).values[""] for i in (0, 4)])
    torch.testing.assert_close(whole.values[""], halves, rtol=0, atol=0, equal_nan=True)
    nan_model = LoadedModel(module=_NaNModel(), spec=ModelSpec(num_classes=2))
    torch.testing.assert_close(_score(cls, attr, nan_model).values[""], whole.values[""], equal_nan=True)


def test_registered_names() -> None:
    load_builtin_components()
    assert METRICS.get("sparseness") is Sparseness and METRICS.get("entropy") is Entropy
    assert Sparseness.describe() and Entropy.describe()


# ---------------------------------------------------------------- cross-checks on identical inputs


@pytest.fixture(scope="module")
def real_inputs() -> tuple[LoadedModel, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A small CNN, images, targets, and attributions: saliency, signed noise, and sparse maps."""
    torch.manual_seed(0)
    model = prepare(build_small_cnn((8, 16), 4), ModelSpec(num_classes=4), torch.device("cpu"))
    g = torch.Generator().manual_seed(3)
    x = torch.rand(12, 3, 32, 32, generator=g)
    target = torch.arange(12) % 4
    xg = x.clone().requires_grad_(True)
    model(xg).gather(1, target[:, None]).sum().backward()
    saliency = xg.grad.abs().amax(1, keepdim=True)
    signed = torch.randn(4, 1, 32, 32, generator=g)
    sparse = torch.zeros(4, 1, 32, 32)
    sparse[:, :, 10:14, 3:9] = torch.rand(4, 1, 4, 6, generator=g) + 0.5  # 24 non-zero pixels of 1024
    return model, x, target, torch.cat([saliency[:4], signed, sparse])


def _pair(cls: type[Metric], metric, inputs) -> tuple[np.ndarray, np.ndarray]:
    model, x, target, a = inputs
    batch = batch_of(x)
    batch.target = target
    ours = cls().score(MetricInput(model=model, batch=batch, attributions=a, seeds=list(range(len(x)))))
    theirs = metric(
        model=model.module,
        x_batch=x.numpy(),
        y_batch=target.numpy(),
        a_batch=a.numpy().copy(),  # Quantus modifies a_batch in place (a += 1e-7)
        device="cpu",
        channel_first=True,
    )
    return ours.values[""].numpy(), np.asarray(theirs, dtype=np.float64)


def test_sparseness_matches_quantus(real_inputs) -> None:
    per_sample = quantus.Sparseness(normalise_func_kwargs={"normalise_axes": [1, 2, 3]}, **QUIET)
    ours, theirs = _pair(Sparseness, per_sample, real_inputs)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
    # Quantus' default normalises by the max of the whole batch, then adds 1e-7 to every value:
    # G_quantus = G * S / (S + 1e-7 n) with S the sum of the batch-normalised map, exactly
    ours, theirs = _pair(Sparseness, quantus.Sparseness(**QUIET), real_inputs)
    a = real_inputs[3].flatten(1).abs().double()
    s = (a / a.max()).sum(1).numpy()
    np.testing.assert_allclose(ours * s / (s + 1e-7 * a.shape[1]), theirs, rtol=0, atol=1e-6)
    assert np.abs(ours - theirs).max() > 1e-4  # the weak saliency maps are visibly off in Quantus


def test_entropy_matches_quantus_complexity(real_inputs) -> None:
    ours, theirs = _pair(Entropy, quantus.Complexity(**QUIET), real_inputs)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
