"""ViT explainers on a tiny torchvision VisionTransformer, against slow references written from the papers.

The references run their own explicit float64 forward of the ViT (one sample and
one head at a time), so they check the attention recording as well as the rules.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import VisionTransformer

from bench.errors import ConfigError
from bench.explainers.transformer import (
    AttentionRollout,
    TransformerAttribution,
    explicit_attention,
    record_attention,
)
from bench.models.base import prepare
from bench.models.small_cnn import build_small_cnn
from bench.types import LoadedModel, ModelSpec, Passes

SPEC = ModelSpec(
    num_classes=4,
    cam_format="tokens",
    token_grid=(4, 4),
    prefix_tokens=1,
    target_layer="net.encoder.layers.encoder_layer_1.ln_1",
)


def _tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    net = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    net.heads = torch.nn.Sequential(torch.nn.Linear(32, 4))  # torchvision zero-initialises the head: all logits 0
    return net


@pytest.fixture(scope="module")
def vit() -> LoadedModel:
    return prepare(_tiny_vit(), SPEC, torch.device("cpu"))


def _images(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _reference_forward(net: VisionTransformer, image: torch.Tensor) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
    """Logits (classes,) of one image and every layer's per-head attention (T, T), explicitly in float64."""
    z = net._process_input(image[None])[0]
    z = torch.cat([net.class_token[0], z]) + net.encoder.pos_embedding[0]
    attentions = []
    for block in net.encoder.layers:
        mha, heads = block.self_attention, block.self_attention.num_heads
        h = block.ln_1(z)
        q, k, v = (h @ w.T + b for w, b in zip(mha.in_proj_weight.chunk(3), mha.in_proj_bias.chunk(3), strict=True))
        d = q.shape[1] // heads
        layer, outs = [], []
        for i in range(heads):
            cols = slice(i * d, (i + 1) * d)
            a = torch.softmax(q[:, cols] @ k[:, cols].T / d**0.5, dim=1)
            layer.append(a)
            outs.append(a @ v[:, cols])
        attentions.append(layer)
        z = z + torch.cat(outs, 1) @ mha.out_proj.weight.T + mha.out_proj.bias
        z = z + block.mlp(block.ln_2(z))
    return net.heads(net.encoder.ln(z)[0]), attentions


def _to_map(row: torch.Tensor) -> torch.Tensor:
    return F.interpolate(row[1:].reshape(1, 1, 4, 4).float(), size=(32, 32), mode="bilinear", align_corners=False)[0]


def _reference_rollout(net: VisionTransformer, x: torch.Tensor, fusion: str, discard: float) -> torch.Tensor:
    """Abnar & Zuidema: Ã_l = normalise(fuse(A_l) + I), rollout = Ã_L ... Ã_1, map = its class-token row."""
    net = copy.deepcopy(net).double()
    maps = []
    for image in x.double():
        with torch.no_grad():
            _, attentions = _reference_forward(net, image)
        rollout = torch.eye(17, dtype=torch.float64)
        for layer in attentions:
            stacked = torch.stack(layer)
            a = {"mean": stacked.mean(0), "max": stacked.amax(0), "min": stacked.amin(0)}[fusion]
            order = [i for i in torch.argsort(a.flatten()).tolist() if i != 0]  # ascending; (0, 0) kept
            a = a.flatten().clone()
            a[order[: int(289 * discard)]] = 0
            a = a.view(17, 17) + torch.eye(17, dtype=torch.float64)
            rollout = (a / a.sum(1, keepdim=True)) @ rollout
        maps.append(_to_map(rollout[0]))
    return torch.stack(maps)


def _reference_attribution(net: VisionTransformer, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Chefer et al. 2021 (generic), eqs. 5-6: Ā = E_h[(∇A ⊙ A)+], R ← R + Ā R from R = I; map = R[0, patches]."""
    net = copy.deepcopy(net).double()
    maps = []
    for image, t in zip(x.double(), target.tolist(), strict=True):
        logits, attentions = _reference_forward(net, image.requires_grad_(True))
        flat = [a for layer in attentions for a in layer]
        grads = torch.autograd.grad(logits[t], flat)
        relevance = torch.eye(17, dtype=torch.float64)
        for layer in range(len(attentions)):
            heads = range(layer * 2, layer * 2 + 2)
            a_bar = torch.stack([(grads[i] * flat[i]).clamp(min=0) for i in heads]).mean(0)
            relevance = relevance + a_bar @ relevance
        maps.append(_to_map(relevance[0].detach()))
    return torch.stack(maps)


@pytest.mark.parametrize("grad", [False, True])
def test_recording_keeps_the_logits_and_restores_the_model(vit: LoadedModel, grad: bool) -> None:
    x = _images()
    net = vit.module.net
    with torch.set_grad_enabled(grad):
        expected = vit(x)
        with record_attention(net) as attentions:
            got = vit(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert len(attentions) == 2 and attentions[0].shape == (4, 2, 17, 17)
    torch.testing.assert_close(attentions[1].sum(-1), torch.ones(4, 2, 17))
    assert all(a.requires_grad == grad for a in attentions)
    assert all("forward" not in block.self_attention.__dict__ for block in net.encoder.layers)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kdim", [None, 24])
def test_explicit_attention_equals_multihead_attention(batch_first: bool, kdim: int | None) -> None:
    """Also the paths ViT does not take: sequence-first inputs, separate key/value sizes."""
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=batch_first, kdim=kdim, vdim=kdim).eval()
    query = torch.randn(3, 5, 32) if batch_first else torch.randn(5, 3, 32)
    kv = query if kdim is None else torch.randn(3, 7, 24) if batch_first else torch.randn(7, 3, 24)
    expected, weights = mha(query, kv, kv, average_attn_weights=False)
    records: list[torch.Tensor] = []
    got, got_weights = explicit_attention(mha, records, query, kv, kv, average_attn_weights=False)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_weights, weights, rtol=0, atol=1e-6)
    assert records[0] is got_weights and records[0].shape == (3, 4, 5, 5 if kdim is None else 7)


def test_recording_restores_the_forward_after_an_exception(vit: LoadedModel) -> None:
    net = vit.module.net
    with pytest.raises(RuntimeError, match="boom"), record_attention(net):
        raise RuntimeError("boom")
    assert all("forward" not in block.self_attention.__dict__ for block in net.encoder.layers)


def test_recorded_attention_matches_the_explicit_forward(vit: LoadedModel) -> None:
    x = _images(2)
    with torch.no_grad(), record_attention(vit.module.net) as attentions:
        vit(x)
    net = copy.deepcopy(vit.module.net).double()
    with torch.no_grad():
        _, reference = _reference_forward(net, x[1].double())
    torch.testing.assert_close(attentions[1][1], torch.stack(reference[1]).float(), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("fusion", "discard"), [("mean", 0.0), ("max", 0.0), ("min", 0.5), ("mean", 0.9)])
def test_rollout_matches_the_paper(vit: LoadedModel, fusion: str, discard: float) -> None:
    x = _images(3)
    rollout = AttentionRollout(AttentionRollout.Params(head_fusion=fusion, discard_ratio=discard))
    got = rollout.explain(vit, x, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(got, _reference_rollout(vit.module.net, x, fusion, discard), rtol=0, atol=1e-5)


def test_transformer_attribution_matches_the_paper(vit: LoadedModel) -> None:
    x, target = _images(3), torch.tensor([0, 2, 3])
    got = TransformerAttribution().explain(vit, x, target)
    expected = _reference_attribution(vit.module.net, x, target)
    assert expected.abs().max() > 1e-3, "the reference map must not be trivially zero"
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("explainer", [AttentionRollout(), TransformerAttribution()])
def test_contract_and_batch_invariance(vit: LoadedModel, explainer) -> None:
    x, target = _images(6), torch.tensor([0, 1, 2, 3, 0, 1])
    x_copy = x.clone()
    before = {k: v.clone() for k, v in vit.module.state_dict().items()}
    whole = explainer.explain(vit, x, target)
    assert whole.shape == (6, 1, 32, 32) and whole.dtype == torch.float32 and not whole.requires_grad
    assert torch.isfinite(whole).all() and torch.equal(x, x_copy)
    assert not vit.module.training and all(torch.equal(before[k], v) for k, v in vit.module.state_dict().items())
    assert all(not p.requires_grad and p.grad is None for p in vit.module.parameters())
    assert all("forward" not in m.__dict__ for m in vit.module.modules())
    halves = torch.cat([explainer.explain(vit, x[i : i + 3], target[i : i + 3]) for i in (0, 3)])
    torch.testing.assert_close(whole, halves, rtol=1e-5, atol=1e-6)


def test_only_the_attribution_depends_on_the_target(vit: LoadedModel) -> None:
    x = _images(3)
    first, last = torch.zeros(3, dtype=torch.long), torch.full((3,), 3)
    rollout = AttentionRollout()
    torch.testing.assert_close(rollout.explain(vit, x, first), rollout.explain(vit, x, last), rtol=0, atol=0)
    attribution = TransformerAttribution()
    a, b = attribution.explain(vit, x, first), attribution.explain(vit, x, last)
    assert ((a - b).flatten(1).abs().amax(1) > 1e-3).all()


def test_resized_input_and_spec_without_token_grid() -> None:
    """The map covers the image given to the model, even when the model resizes it to the ViT's input."""
    model = prepare(_tiny_vit(), ModelSpec(num_classes=4, input_size=(32, 32)), torch.device("cpu"))
    x = F.interpolate(_images(2), size=(48, 48), mode="bilinear", align_corners=False)
    out = TransformerAttribution().explain(model, x, torch.tensor([1, 2]))
    assert out.shape == (2, 1, 48, 48) and torch.isfinite(out).all()


def test_cnns_are_skipped_with_a_reason(vit: LoadedModel) -> None:
    cnn = prepare(build_small_cnn((4,), num_classes=4), ModelSpec(num_classes=4), torch.device("cpu"))
    for explainer in (AttentionRollout(), TransformerAttribution()):
        assert explainer.supports(vit) is None
        assert "VisionTransformer" in explainer.supports(cnn)
        assert "vit" in explainer.requires
        with pytest.raises(ConfigError, match="VisionTransformer"):
            explainer.explain(cnn, torch.rand(1, 3, 8, 8), torch.zeros(1, dtype=torch.long))
    assert AttentionRollout().passes((3, 32, 32)) == Passes(1, 0)
    assert TransformerAttribution().passes((3, 32, 32)) == Passes(1, 1)
