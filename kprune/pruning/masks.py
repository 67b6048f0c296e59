"""Unit masks [L, H] and [L, N], applied to an HF model by forward pre-hooks.

A mask multiplies a unit's contribution at the input of its sublayer's output projection
(W_O for a head's context dims, W_2 for a neuron's activation), so no support from the
model library is needed. The hooks live inside a context manager and are always removed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kprune.atomic import write_json
from kprune.models.adapters import get_adapter


@dataclass
class Masks:
    heads: torch.Tensor  # [L, H] float 0/1
    neurons: torch.Tensor  # [L, N] float 0/1

    @classmethod
    def ones(cls, layers: int, heads: int, neurons: int) -> Masks:
        return cls(torch.ones(layers, heads), torch.ones(layers, neurons))

    def clone(self) -> Masks:
        return Masks(self.heads.clone(), self.neurons.clone())

    def kept_per_layer(self) -> dict[str, list[int]]:
        return {
            "heads": self.heads.sum(1).int().tolist(),
            "neurons": self.neurons.sum(1).int().tolist(),
        }

    def to_dict(self) -> dict[str, list[list[int]]]:
        """Indices of kept heads and neurons per layer."""
        return {
            "heads": [torch.nonzero(r).flatten().tolist() for r in self.heads],
            "neurons": [torch.nonzero(r).flatten().tolist() for r in self.neurons],
        }

    @classmethod
    def from_dict(cls, kept: dict, heads: int, neurons: int) -> Masks:
        h = torch.zeros(len(kept["heads"]), heads)
        n = torch.zeros(len(kept["neurons"]), neurons)
        for i, idx in enumerate(kept["heads"]):
            h[i, idx] = 1
        for i, idx in enumerate(kept["neurons"]):
            n[i, idx] = 1
        return cls(h, n)


def save_masks(path, masks: Masks, info: dict) -> None:
    """A masks file (JSON, written atomically): the kept units' indices per layer, the
    sublayer widths and ``info`` (how they were chosen)."""
    heads, neurons = masks.heads.shape[1], masks.neurons.shape[1]
    write_json(path, {**info, "kept": masks.to_dict(), "heads": heads, "neurons": neurons})


def load_masks(path) -> tuple[Masks, dict]:
    """The masks of a masks file and the rest of what it says."""
    f = json.loads(Path(path).read_text())
    return Masks.from_dict(f.pop("kept"), f.pop("heads"), f.pop("neurons")), f


@contextmanager
def apply_masks(model: nn.Module, masks: Masks) -> Iterator[nn.Module]:
    """Run ``model`` with units masked; the hooks are removed on exit."""
    adapter = get_adapter(model)
    _, _, head_dim, _, _ = adapter.dims(model)
    handles = []

    def scale(mask: torch.Tensor):
        def hook(_module, args):
            return (args[0] * mask.to(args[0].device, args[0].dtype), *args[1:])

        return hook

    try:
        for i, layer in enumerate(adapter.layers(model)):
            view = adapter.view(layer)
            dim_mask = masks.heads[i].repeat_interleave(head_dim)
            handles.append(view.attn_out.register_forward_pre_hook(scale(dim_mask)))
            handles.append(view.ffn_out.register_forward_pre_hook(scale(masks.neurons[i])))
        yield model
    finally:
        for h in handles:
            h.remove()
