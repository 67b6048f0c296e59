"""Physical surgery: remove pruned heads and neurons from the weights, update the modules.

Pruned heads leave their Q/K/V rows and their output-projection columns; pruned neurons
leave their FFN rows and columns. A sublayer with every unit pruned keeps only its output
bias, so it computes LayerNorm(X + b).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from kprune.models.adapters import get_adapter
from kprune.pruning.masks import Masks


def shrink_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping ``keep`` indices of its outputs (dim 0) or inputs (dim 1)."""
    keep = keep.to(linear.weight.device)
    weight = linear.weight.index_select(dim, keep).detach().clone()
    has_bias = linear.bias is not None
    out_f, in_f = weight.shape
    with warnings.catch_warnings():  # a fully pruned sublayer has zero-element weights
        warnings.simplefilter("ignore", UserWarning)
        new = nn.Linear(in_f, out_f, bias=has_bias, device=weight.device, dtype=weight.dtype)
    new.weight.data.copy_(weight)
    if has_bias:
        bias = linear.bias if dim == 1 else linear.bias.index_select(0, keep)
        new.bias.data.copy_(bias.detach())
    return new


def _set(parent: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for name, child in parent.named_children():
        if child is old:
            setattr(parent, name, new)
            return
        _set(child, old, new)


@torch.no_grad()
def prune_model(model: nn.Module, masks: Masks) -> nn.Module:
    """Shrink ``model`` in place to the units kept by ``masks``; returns it."""
    adapter = get_adapter(model)
    _, _, head_dim, _, _ = adapter.dims(model)
    for i, layer in enumerate(adapter.layers(model)):
        view = adapter.view(layer)
        heads = torch.nonzero(masks.heads[i]).flatten()
        if len(heads) == 0:
            new_out = shrink_linear(view.attn_out, heads, dim=1)
            _set(layer, view.attn_out, new_out)
            adapter.empty_attention(layer)
        elif len(heads) < view.q.out_features // head_dim:
            dims = (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()
            for lin in (view.q, view.k, view.v):
                _set(layer, lin, shrink_linear(lin, dims, dim=0))
            _set(layer, view.attn_out, shrink_linear(view.attn_out, dims, dim=1))
            adapter.keep_heads(layer, heads)
        neurons = torch.nonzero(masks.neurons[i]).flatten()
        if len(neurons) < view.ffn_in.out_features:
            _set(layer, view.ffn_in, shrink_linear(view.ffn_in, neurons, dim=0))
            _set(layer, view.ffn_out, shrink_linear(view.ffn_out, neurons, dim=1))
    return model
