"""Vision-transformer explainers built on the attention probabilities of torchvision's ViT.

torchvision's ``EncoderBlock`` calls ``nn.MultiheadAttention`` with
``need_weights=False`` (and the fused kernels never form the probabilities), so
``record_attention`` temporarily swaps each block's attention ``forward`` for an
explicit, numerically equivalent implementation that keeps the probabilities
(N, heads, T, T), with their gradients when autograd is on. Both explainers read
the class token's row of a token-to-token relevance matrix over the patch tokens,
reshape it to the patch grid and upsample it bilinearly to the input.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, ClassVar, Literal, cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.component import Params
from bench.errors import ConfigError
from bench.explainers.base import Explainer
from bench.explainers.cam_layers import upsample_map
from bench.types import ImageShape, LoadedModel, Passes

if TYPE_CHECKING:
    from torchvision.models.vision_transformer import VisionTransformer


def find_vit(module: nn.Module) -> VisionTransformer | None:
    """The first torchvision VisionTransformer inside ``module``, if any (none before torchvision is imported:
    checking does not import it)."""
    if "torchvision.models.vision_transformer" not in sys.modules:
        return None
    from torchvision.models.vision_transformer import VisionTransformer

    return next((m for m in module.modules() if isinstance(m, VisionTransformer)), None)


def project_qkv(
    mha: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-first (N, L, E) inputs -> per-head queries, keys, values (N, heads, L, E / heads).

    Self-attention with a packed projection (ViT) takes one matrix product instead of three.
    """
    heads = mha.num_heads
    if mha._qkv_same_embed_dim and query is key and key is value:
        qkv = F.linear(query, mha.in_proj_weight, mha.in_proj_bias)  # (N, L, 3E)
        # torch's Tensor.unflatten has no annotations
        q, k, v = qkv.unflatten(-1, (3, heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)  # type: ignore[no-untyped-call]
        return q, k, v
    if mha._qkv_same_embed_dim:
        weights = mha.in_proj_weight.chunk(3)
    else:
        weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
    biases = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None, None, None)
    q, k, v = (
        F.linear(z, w, b).unflatten(-1, (heads, -1)).transpose(1, 2)  # type: ignore[no-untyped-call]  # as above
        for z, w, b in zip((query, key, value), weights, biases, strict=True)
    )
    return q, k, v


def explicit_attention(
    mha: nn.MultiheadAttention,
    records: list[torch.Tensor],
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    need_weights: bool = True,
    attn_mask: torch.Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``nn.MultiheadAttention.forward`` written out (same weights, same result) that appends the
    attention probabilities (N, heads, T, S) to ``records``.

    When autograd is on, the recorded tensor gets its gradient after ``backward()``:
    ``retain_grad()``, or ``requires_grad_()`` when nothing before it needs one (frozen
    parameters and a constant input), which makes it a leaf.
    """
    if key_padding_mask is not None or attn_mask is not None or is_causal:
        raise NotImplementedError("attention recording supports unmasked self-attention only (as in ViT)")
    if mha.bias_k is not None or mha.add_zero_attn:
        raise NotImplementedError("attention recording does not support bias_k/bias_v or add_zero_attn")
    if not mha.batch_first and query is key is value:
        query = key = value = query.transpose(0, 1)  # keeps the self-attention fast path below
    elif not mha.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    q, k, v = project_qkv(mha, query, key, value)
    attn = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    if torch.is_grad_enabled() and attn.requires_grad:
        attn.retain_grad()
    elif torch.is_grad_enabled():
        attn.requires_grad_(True)
    records.append(attn)
    out = F.dropout(attn, mha.dropout, training=mha.training) @ v
    out = F.linear(out.transpose(1, 2).flatten(2), mha.out_proj.weight, mha.out_proj.bias)
    if not mha.batch_first:
        out = out.transpose(0, 1)
    weights = (attn.mean(1) if average_attn_weights else attn) if need_weights else None
    return out, weights


@contextmanager
def record_attention(vit: VisionTransformer) -> Iterator[list[torch.Tensor]]:
    """While active, every forward of ``vit`` appends each encoder block's attention
    probabilities (N, heads, T, T), in layer order, to the yielded list. The original
    forwards are restored on exit, also when an exception escapes."""
    from torchvision.models.vision_transformer import EncoderBlock

    records: list[torch.Tensor] = []
    patched: list[nn.MultiheadAttention] = []
    try:
        for block in vit.encoder.layers:
            if isinstance(block, EncoderBlock):
                mha = block.self_attention
                if "forward" in mha.__dict__:
                    raise RuntimeError("the attention forward is already patched (nested record_attention?)")
                mha.forward = partial(explicit_attention, mha, records)
                patched.append(mha)
        yield records
    finally:
        for mha in patched:
            del mha.forward  # the instance attribute: the class's forward shows through again


def cls_patch_map(
    relevance: torch.Tensor, model: LoadedModel, vit: VisionTransformer, size: tuple[int, int]
) -> torch.Tensor:
    """Row of the class token over the patch tokens of (N, T, T) ``relevance`` -> (N, 1, H, W).

    The patch grid is the spec's ``token_grid`` (default: the ViT's image_size / patch_size);
    the tokens before the patches (torchvision: the class token) are counted from the
    matrix, so a spec's ``prefix_tokens`` cannot disagree with the model.
    """
    grid = model.spec.token_grid or (vit.image_size // vit.patch_size,) * 2
    prefix = relevance.shape[-1] - grid[0] * grid[1]
    if prefix < 0:
        raise ConfigError(
            f"the model has {relevance.shape[-1]} tokens, fewer than its token_grid {grid}",
            field="token_grid",
            fix="set the model spec's token_grid to the ViT's patch grid",
        )
    patches = relevance[:, 0, prefix:].reshape(-1, 1, *grid)
    return upsample_map(patches, size, "bilinear")


class _AttentionExplainer(Explainer):
    """Shared by the ViT explainers: the ViT inside the model, or the reason there is none."""

    family = "attention"

    requires: ClassVar[frozenset[str]] = frozenset({"vit"})

    def supports(self, model: LoadedModel) -> str | None:
        if find_vit(model.module) is None:
            return f"{self.name or type(self).__name__} needs a torchvision VisionTransformer; the model has none"
        return None

    def _vit(self, model: LoadedModel) -> VisionTransformer:
        vit = find_vit(model.module)
        if vit is None:
            raise ConfigError(self.supports(model) or "", field="explainer", fix="use it with ViT models only")
        return vit


def fuse_heads(attn: torch.Tensor, how: str) -> torch.Tensor:
    """(N, heads, T, T) -> (N, T, T) by the mean, max or min over heads."""
    if how == "mean":
        return attn.mean(1)
    if how == "max":
        return attn.amax(1)
    if how == "min":
        return attn.amin(1)
    raise ValueError(f"unknown head fusion {how!r}")


def discard_lowest(fused: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the lowest ``ratio`` of each sample's (T, T) entries, never the class token's self-attention."""
    flat = fused.flatten(1)
    ranked = flat.clone()
    ranked[:, 0] = torch.inf  # entry (0, 0) is never among the lowest
    lowest = ranked.topk(int(flat.shape[1] * ratio), dim=1, largest=False).indices
    return flat.scatter(1, lowest, 0.0).view_as(fused)


class AttentionRolloutParams(Params):
    head_fusion: Literal["mean", "max", "min"] = Field(
        "mean", description="how a layer's heads are combined (the paper: mean)"
    )
    discard_ratio: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="fraction of each layer's lowest fused attentions set to zero before rollout "
        "(0 = the paper; vit-explain uses 0.9); the class token's self-attention is kept",
    )


class AttentionRollout(_AttentionExplainer):
    """Attention rollout (Abnar & Zuidema 2020): product of head-fused attentions plus identity; class-agnostic.

    Per layer, the heads are fused (mean/max/min), optionally the lowest
    ``discard_ratio`` of the entries are zeroed, the identity is added for the
    residual connection and the rows renormalised; the layers' matrices are
    multiplied from the first to the last. The map ignores ``target``: it shows
    where the class token gathers information from, the same for every class.
    """

    Params = AttentionRolloutParams

    def passes(self, image_shape: ImageShape) -> Passes:
        return Passes(1, 0)

    @torch.no_grad()
    def attribute(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        vit = self._vit(model)
        with record_attention(vit) as attentions:
            model(x)
        eye = torch.eye(attentions[0].shape[-1], device=x.device, dtype=attentions[0].dtype)
        rollout: torch.Tensor | None = None
        for attn in attentions:
            fused = fuse_heads(attn, self.params.head_fusion)
            if self.params.discard_ratio > 0:
                fused = discard_lowest(fused, self.params.discard_ratio)
            fused = fused + eye  # the residual connection
            fused = fused / fused.sum(dim=-1, keepdim=True)
            rollout = fused if rollout is None else fused @ rollout
        assert rollout is not None, "a VisionTransformer has at least one encoder block"
        return cls_patch_map(rollout.float(), model, vit, (x.shape[-2], x.shape[-1]))


class TransformerAttribution(_AttentionExplainer):
    """Gradient-weighted attention relevance (Chefer, Gur & Wolf 2021), class-specific, for ViTs.

    Implements the self-attention rule of "Generic Attention-model Explainability
    for Interpreting Bi-Modal and Encoder-Decoder Transformers" (Chefer, Gur & Wolf,
    ICCV 2021, eqs. 5-6), the authors' simplification of "Transformer
    Interpretability Beyond Attention Visualization" (CVPR 2021): starting from
    R = I, for every block in forward order, Ā = mean over heads of (∇A ⊙ A)⁺ and
    R ← R + Ā R, where ∇A is the gradient of the target logit w.r.t. the block's
    attention probabilities A. The map is R[class token, patches]. The CVPR
    version replaces ∇A ⊙ A by LRP relevances of A, which needs LRP rules for
    every layer type (LayerNorm, GELU, softmax, matmul); the generic rule needs
    only gradients and reported comparable results in the authors' evaluation.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"vit", "gradients"})

    def passes(self, image_shape: ImageShape) -> Passes:
        return Passes(1, 1)

    def attribute(
        self, model: LoadedModel, x: torch.Tensor, target: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        vit = self._vit(model)
        with torch.enable_grad(), record_attention(vit) as attentions:
            logits = model(x.detach())
            # samples are independent: one backward (torch's Tensor.backward has no annotations)
            logits.gather(1, target[:, None]).sum().backward()  # type: ignore[no-untyped-call]
        with torch.no_grad():
            n, t = x.shape[0], attentions[0].shape[-1]
            relevance = torch.eye(t, device=x.device).expand(n, t, t)
            for attn in attentions:
                weighted = (cast(torch.Tensor, attn.grad) * attn).clamp(min=0).mean(1)  # set by the backward above
                relevance = relevance + weighted @ relevance
            return cls_patch_map(relevance.float(), model, vit, (x.shape[-2], x.shape[-1]))
