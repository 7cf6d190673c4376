"""Deletion and insertion on a linear model, where the exact curve is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.metrics.base import MetricInput
from bench.metrics.faithfulness import Deletion, Insertion
from bench.metrics.removal import normalised_auc, perturbation_curves, step_counts
from bench.perturb import BaselineFields, gaussian_blur, make_baseline, pixel_ranks
from tests.helpers import batch_of, linear_model


def _setup(n: int = 3, size: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    w = torch.randn(3, size, size, generator=g)
    attr = (x * w).sum(1, keepdim=True)  # each pixel's exact contribution to the score
    return x, w, attr


def _expected_curves(attr: torch.Tensor, steps: int, insertion: bool) -> np.ndarray:
    """Reference written from the definition, one image at a time."""
    out = []
    for a in attr.flatten(1).numpy().astype(np.float64):
        order = np.argsort(-a, kind="stable")
        counts = np.round(np.arange(steps + 1) * len(a) / steps).astype(int)
        total = a.sum()
        taken = np.array([a[order[:c]].sum() for c in counts])
        out.append(taken if insertion else total - taken)
    return np.array(out)


@pytest.mark.parametrize("insertion", [False, True])
@pytest.mark.parametrize("steps", [1, 5, 36])
def test_linear_model_logit_curve_is_exact(insertion: bool, steps: int) -> None:
    x, w, attr = _setup()
    model = linear_model(w)
    curves = perturbation_curves(
        model,
        x,
        torch.zeros_like(x),
        attr,
        torch.zeros(3, dtype=torch.long),
        steps=steps,
        insertion=insertion,
        output="logit",
        forward_batch=7,
    )
    np.testing.assert_allclose(curves.numpy(), _expected_curves(attr, steps, insertion), rtol=1e-4, atol=1e-4)


def test_probability_output_is_the_softmax_of_the_exact_logits() -> None:
    x, w, attr = _setup()
    batch = batch_of(x)
    scores = Deletion(Deletion.Params(steps=12, output="probability")).score(
        MetricInput(model=linear_model(w), batch=batch, attributions=attr, seeds=[0, 1, 2])
    )
    expected = 1 / (1 + np.exp(-_expected_curves(attr, 12, False)))  # softmax([s, 0])[0]
    np.testing.assert_allclose(scores.curves[""].numpy(), expected, rtol=1e-5, atol=1e-6)
    auc = np.trapezoid(expected, dx=1 / 12, axis=1)
    np.testing.assert_allclose(scores.values[""].numpy(), auc, rtol=1e-5)


def test_insertion_beats_reverse_order() -> None:
    """Inserting the true contributions first gives the highest insertion AUC; reversed, the lowest."""
    x, w, attr = _setup(n=4, size=8, seed=3)
    model, batch = linear_model(w), batch_of(x)
    params = Insertion.Params(steps=16, output="logit", baseline="zero")

    def auc(a: torch.Tensor) -> np.ndarray:
        inp = MetricInput(model=model, batch=batch, attributions=a, seeds=[0] * 4)
        return Insertion(params).score(inp).values[""].numpy()

    best, worst = auc(attr), auc(-attr)
    rand = auc(torch.rand(attr.shape, generator=torch.Generator().manual_seed(0)))
    assert (best > rand).all() and (rand > worst).all()


def test_auc_is_the_normalised_trapezoid() -> None:
    line = torch.linspace(1, 0, 11)[None]
    assert normalised_auc(line).item() == pytest.approx(0.5)
    assert normalised_auc(torch.ones(1, 5)).item() == pytest.approx(1.0)
    assert normalised_auc(torch.tensor([[0.0, 1.0]])).item() == pytest.approx(0.5)


def test_forward_batch_does_not_change_results() -> None:
    x, w, attr = _setup(n=5, size=7)
    args = (linear_model(w), x, torch.zeros_like(x), attr, torch.zeros(5, dtype=torch.long))
    a = perturbation_curves(*args, steps=9, insertion=False, output="probability", forward_batch=1)
    b = perturbation_curves(*args, steps=9, insertion=False, output="probability", forward_batch=1000)
    torch.testing.assert_close(a, b)


def test_step_counts_and_ranks() -> None:
    assert step_counts(10, 4, torch.device("cpu")).tolist() == [0, 2, 5, 8, 10]  # round half to even
    attr = torch.tensor([[[[0.5, 0.9], [0.5, 0.1]]]])
    assert pixel_ranks(attr).tolist() == [[1, 0, 2, 3]]  # ties break by position


def test_baselines() -> None:
    x = torch.rand(2, 3, 16, 16)
    assert make_baseline(x, BaselineFields(baseline="zero")).abs().sum() == 0
    mean = make_baseline(x, BaselineFields(baseline="mean"))
    torch.testing.assert_close(mean[:, :, 3, 4], x.mean(dim=(2, 3)))
    const = make_baseline(x, BaselineFields(baseline="constant", baseline_value=0.25))
    assert torch.all(const == 0.25)
    blur = make_baseline(x, BaselineFields(baseline="blur", blur_sigma=3.0))
    assert blur.shape == x.shape and blur.std() < x.std()
    torch.testing.assert_close(blur.mean(), x.mean(), atol=0.02, rtol=0)
    noise = make_baseline(x, BaselineFields(baseline="noise"), seeds=[7, 8])
    again = make_baseline(x[1:], BaselineFields(baseline="noise"), seeds=[8])
    torch.testing.assert_close(noise[1:], again)  # per-sample seeds: independent of the batch
    with pytest.raises(ValueError, match="odd"):
        BaselineFields(blur_kernel=4)


@pytest.mark.parametrize(("kernel", "sigma", "channels"), [(11, 5.0, 3), (3, 0.5, 1), (7, 2.0, 3)])
def test_native_blur_equals_torchvision(kernel: int, sigma: float, channels: int) -> None:
    """The blur baseline (and Sobel's smoothing) no longer imports torchvision: same numbers."""
    tf = pytest.importorskip("torchvision.transforms.functional")
    x = torch.rand(4, channels, 19, 23, generator=torch.Generator().manual_seed(kernel))
    expected = tf.gaussian_blur(x, [kernel, kernel], [sigma, sigma])
    torch.testing.assert_close(gaussian_blur(x, kernel, sigma), expected, rtol=0, atol=0)


def test_blur_baseline_under_bf16_autocast() -> None:
    """precision: bf16 runs metrics under autocast: the blur baseline stays in the images' dtype (it was
    bf16, and insertion failed mixing it with the float32 images)."""
    x = torch.rand(2, 3, 16, 16)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        blur = make_baseline(x, BaselineFields(baseline="blur", blur_sigma=2.0))
    assert blur.dtype == torch.float32
    torch.testing.assert_close(blur, make_baseline(x, BaselineFields(baseline="blur", blur_sigma=2.0)))
