"""A functional forward of one sublayer, reading weights from an adapter's LayerView.

Used by the pruning loop so it can start at any sublayer from cached inputs, put unit masks
(with gradients) at the output-projection inputs, and see the units' activations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kprune.models.adapters import LayerView


def attention_context(
    view: LayerView, x: torch.Tensor, attend: torch.Tensor, head_dim: int
) -> torch.Tensor:
    """Heads' context vectors, concatenated: (B, T, H*dh). ``attend``: (B, 1, 1, T) bool.
    A family's position bias (``view.position_bias``) is added to the scaled scores."""
    b, t, _ = x.shape
    q = view.q(x).view(b, t, -1, head_dim).transpose(1, 2)  # (B, H, T, dh)
    k = view.k(x).view(b, t, -1, head_dim).transpose(1, 2)
    v = view.v(x).view(b, t, -1, head_dim).transpose(1, 2)
    mask = attend
    if view.position_bias is not None:
        bias = view.position_bias(t).to(q.dtype)
        mask = torch.where(attend, bias, torch.finfo(q.dtype).min)
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return ctx.transpose(1, 2).reshape(b, t, -1)


def sublayer(
    view: LayerView,
    is_mha: bool,
    x: torch.Tensor,
    attend: torch.Tensor,
    head_dim: int,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(units' input to the output projection, pre-LayerNorm output X + W u + b).

    ``mask`` multiplies the units' input to the projection: (k,) or per example (B, 1, k).
    """
    units = unit_inputs(view, is_mha, x, attend, head_dim)
    proj = view.attn_out if is_mha else view.ffn_out
    z = units if mask is None else units * mask
    return units, proj(z) + x


def unit_inputs(
    view: LayerView, is_mha: bool, x: torch.Tensor, attend: torch.Tensor, head_dim: int
) -> torch.Tensor:
    """The units' input to the sublayer's output projection: heads' contexts or neurons'
    activations, (B, T, k)."""
    if is_mha:
        return attention_context(view, x, attend, head_dim)
    return view.act(view.ffn_in(x))


def layer_norm(view: LayerView, is_mha: bool, y: torch.Tensor) -> torch.Tensor:
    return (view.attn_ln if is_mha else view.ffn_ln)(y)


def advance(
    view: LayerView, is_mha: bool, x: torch.Tensor, attend: torch.Tensor, head_dim: int
) -> torch.Tensor:
    """The sublayer's output after its LayerNorm: the next sublayer's input."""
    return layer_norm(view, is_mha, sublayer(view, is_mha, x, attend, head_dim)[1])
