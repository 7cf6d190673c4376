"""Model parameter randomisation and random logit: Quantus on identical randomisations and
off-classes, the untouched model, batch invariance and the defined edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.functional.randomisation import off_classes, randomisable_layers
from bench.metrics.base import MetricInput
from bench.metrics.randomisation import ModelParameterRandomisation, RandomLogit
from bench.metrics.similarity import UNDEFINED, prepare_maps
from bench.metrics.stability import NON_FINITE
from bench.registry import EXPLAINERS, load_builtin_components
from tests.test_stability import Zeros, cnn_input, cnn_model, quantus, quantus_explain_func, subset

load_builtin_components()

MPRT = ModelParameterRandomisation


@pytest.fixture(scope="module")
def saliency_input() -> MetricInput:
    return cnn_input(cnn_model(), EXPLAINERS.get("saliency")(), n=4, size=16)


def quantus_ssim_2d(height: int, width: int):
    """Quantus' ssim applied to the 2-D maps (Quantus itself hands it the flattened maps)."""
    from quantus.functions.similarity_func import ssim

    def similarity_func(a: np.ndarray, b: np.ndarray, batched: bool = False, **kwargs) -> np.ndarray:
        # an array: MPRT calls .tolist() on it (Quantus' own batched ssim returns a list and crashes there)
        return np.array([ssim(x.reshape(height, width), y.reshape(height, width)) for x, y in zip(a, b, strict=True)])

    return similarity_func


def quantus_call(inp: MetricInput, metric, a_batch: np.ndarray, batch_size: int):
    return metric(
        model=inp.model.module,
        x_batch=inp.batch.x.numpy(),
        y_batch=inp.batch.target.numpy(),
        a_batch=a_batch,
        explain_func=quantus_explain_func(inp.explainer, inp.model.spec, inp.seeds),
        device="cpu",
        channel_first=True,
        softmax=False,
        batch_size=batch_size,
    )


# ---------------------------------------------------------------- model parameter randomisation


@pytest.mark.parametrize(
    ("mode", "order", "similarity"),
    [
        ("cascading", "top_down", "spearman"),
        ("independent", "independent", "spearman"),
        ("cascading", "top_down", "ssim"),
    ],
)
def test_model_randomisation_matches_quantus_layer_by_layer(
    saliency_input: MetricInput, mode: str, order: str, similarity: str
) -> None:
    q, inp = quantus(), saliency_input
    ours = MPRT(MPRT.Params(mode=mode, similarity=similarity, seed=42)).score(inp)
    h, w = inp.attributions.shape[-2:]
    func = q.similarity_func.correlation_spearman if similarity == "spearman" else quantus_ssim_2d(h, w)
    # batches of one image make Quantus' batch-wide normalisation per sample (the given maps are already normalised)
    theirs = quantus_call(
        inp,
        q.MPRT(
            similarity_func=func,
            layer_order=order,
            seed=42,
            abs=True,
            normalise=True,
            disable_warnings=True,
            display_progressbar=False,
        ),
        prepare_maps(inp.attributions, abs=True, normalise=True).numpy(),
        batch_size=1 if similarity == "ssim" else len(inp.seeds),
    )
    names = [name for name, _ in randomisable_layers(inp.model.module)]
    assert set(theirs) == {"original", *names} and ours.curves[""].shape == (4, len(names))
    for j, name in enumerate(names):
        np.testing.assert_allclose(ours.curves[""][:, j].numpy(), theirs[name], rtol=0, atol=1e-4, err_msg=name)
    torch.testing.assert_close(ours.values[""], ours.curves[""].mean(1))


def test_randomisation_leaves_the_model_and_the_random_state_alone(saliency_input: MetricInput) -> None:
    before = {k: v.clone() for k, v in saliency_input.model.module.state_dict().items()}
    rng = torch.get_rng_state()
    MPRT(MPRT.Params(mode="independent", max_layers=2)).score(saliency_input)
    assert torch.equal(rng, torch.get_rng_state())
    after = saliency_input.model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad for p in saliency_input.model.module.parameters())


def test_cascading_and_independent_agree_on_the_top_layer(saliency_input: MetricInput) -> None:
    cascading = MPRT(MPRT.Params(mode="cascading", max_layers=3)).score(saliency_input).curves[""]
    independent = MPRT(MPRT.Params(mode="independent", max_layers=3)).score(saliency_input).curves[""]
    assert cascading.shape == (4, 3)
    torch.testing.assert_close(cascading[:, 0], independent[:, 0])
    assert not torch.allclose(cascading[:, 2], independent[:, 2])


def test_model_randomisation_is_batch_invariant_with_hog() -> None:
    inp = cnn_input(cnn_model(), EXPLAINERS.get("saliency")(), n=4, size=24)
    metric = MPRT(MPRT.Params(similarity="hog", max_layers=2, explain_batch=3))
    whole = metric.score(inp)
    halves = [metric.score(subset(inp, s)) for s in (slice(0, 2), slice(2, 4))]
    torch.testing.assert_close(whole.curves[""], torch.cat([h.curves[""] for h in halves]))
    assert torch.isfinite(whole.values[""]).all()


def test_model_randomisation_edge_cases(saliency_input: MetricInput) -> None:
    zeros = cnn_input(cnn_model(), Zeros())
    scores = MPRT(MPRT.Params(max_layers=2)).score(zeros)
    assert scores.values[""].isnan().all() and scores.reasons == [UNDEFINED["spearman"]] * 4

    broken = cnn_model()
    with torch.no_grad():
        broken.module.net[0][0].weight[0, 0, 0, 0] = torch.nan  # the first conv: never randomised with max_layers=1
    inp = MetricInput(**{**saliency_input.__dict__, "model": broken})
    scores = MPRT(MPRT.Params(max_layers=1)).score(inp)
    assert scores.values[""].isnan().all() and scores.reasons == [NON_FINITE] * 4

    with pytest.raises(ValueError, match="needs the cell's explainer"):
        MPRT().score(MetricInput(**{**saliency_input.__dict__, "explainer": None}))


# ---------------------------------------------------------------- random logit


def test_off_classes_are_seeded_uniform_and_never_the_target() -> None:
    seeds = list(range(2000))
    target = torch.tensor(seeds) % 5
    other = off_classes(seeds, target, 5)
    assert (other != target).all() and other.min() == 0 and other.max() == 4
    counts = torch.bincount(other[target == 2], minlength=5).tolist()
    assert counts[2] == 0 and min(c for i, c in enumerate(counts) if i != 2) > 70  # 400 draws over 4 classes
    assert torch.equal(off_classes(seeds[7:9], target[7:9], 5), other[7:9])


@pytest.mark.parametrize("similarity", ["spearman", "ssim"])
def test_random_logit_matches_quantus_with_the_same_off_classes(
    saliency_input: MetricInput, similarity: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    q, inp = quantus(), saliency_input
    ours = RandomLogit(RandomLogit.Params(similarity=similarity)).score(inp).values[""]
    other = off_classes(list(inp.seeds), inp.batch.target, 4)
    index = (other - (other > inp.batch.target).long()).numpy()  # position among the other classes
    drawn: list[int] = []

    def randint(low: int, high: int, size: int) -> np.ndarray:
        out = index[len(drawn) : len(drawn) + size]
        drawn.extend(out.tolist())
        return out

    monkeypatch.setattr(np.random, "randint", randint)
    h, w = inp.attributions.shape[-2:]
    func = q.similarity_func.correlation_spearman if similarity == "spearman" else quantus_ssim_2d(h, w)
    theirs = quantus_call(
        inp,
        q.RandomLogit(
            similarity_func=func, num_classes=4, normalise=True, disable_warnings=True, display_progressbar=False
        ),
        prepare_maps(inp.attributions, abs=False, normalise=True).numpy(),
        batch_size=1,
    )
    assert drawn == index.tolist()
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-4)


def test_random_logit_batch_invariance_and_edge_cases(saliency_input: MetricInput) -> None:
    metric = RandomLogit(RandomLogit.Params(explain_batch=3))
    whole = metric.score(saliency_input).values[""]
    halves = torch.cat([metric.score(subset(saliency_input, s)).values[""] for s in (slice(0, 2), slice(2, 4))])
    torch.testing.assert_close(whole, halves)

    single = cnn_input(cnn_model(num_classes=1), EXPLAINERS.get("saliency")(), n=2)
    scores = metric.score(single)
    assert scores.values[""].isnan().all()
    assert scores.reasons == ["the model has a single class: no other class to explain"] * 2

    zeros = cnn_input(cnn_model(), Zeros())
    scores = metric.score(zeros)
    assert scores.values[""].isnan().all() and scores.reasons == [UNDEFINED["ssim"]] * 4

    broken = cnn_model()
    with torch.no_grad():
        broken.module.net[0][0].weight[0, 0, 0, 0] = torch.nan  # NaN logits, NaN gradients
    scores = metric.score(MetricInput(**{**saliency_input.__dict__, "model": broken}))
    assert scores.values[""].isnan().all() and scores.reasons == [NON_FINITE] * 4
    with pytest.raises(ValueError, match="do not match the images"):
        metric.score(MetricInput(**{**saliency_input.__dict__, "attributions": torch.rand(4, 1, 8, 8)}))


def test_params() -> None:
    with pytest.raises(ValueError):
        MPRT.Params(mode="bottom_up")
    with pytest.raises(ValueError):
        RandomLogit.Params(similarity="cosine")
    assert MPRT(MPRT.Params(max_layers=4)).passes((3, 32, 32)).forward == 4
    assert RandomLogit().passes((3, 32, 32)).forward == 1
