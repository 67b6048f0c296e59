"""FLOPs accounting (pure arithmetic): what the pruning budget counts.

With l the task's average sequence length, d the hidden size and d_h the head size:
a head costs 8*l*d*d_h + 4*l^2*d_h (Q, K, V, O projections plus attention scores and mix),
a neuron 4*l*d (its two FFN matmuls). Embeddings, LayerNorms, biases, softmax and the
classifier are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kprune.config import SearchConfig
from kprune.models.adapters import get_adapter


@dataclass(frozen=True)
class FlopsModel:
    seq_len: float
    hidden: int
    head_dim: int

    @property
    def head(self) -> float:
        l, d, dh = self.seq_len, self.hidden, self.head_dim
        return 8 * l * d * dh + 4 * l * l * dh

    @property
    def neuron(self) -> float:
        return 4 * self.seq_len * self.hidden

    def of_masks(self, head_mask: torch.Tensor, neuron_mask: torch.Tensor) -> float:
        """FLOPs of the units kept by boolean/0-1 masks of shape [L, H] and [L, N]."""
        return float(head_mask.sum()) * self.head + float(neuron_mask.sum()) * self.neuron

    def of_counts(self, heads: int, neurons: int) -> float:
        return heads * self.head + neurons * self.neuron

    def whole(self, masks) -> float:
        """FLOPs of every unit the masks' shapes hold (the dense model)."""
        return self.of_counts(masks.heads.numel(), masks.neurons.numel())

    def kept(self, masks) -> float:
        """The fraction of the dense model's FLOPs that ``masks`` keep."""
        return self.of_masks(masks.heads, masks.neurons) / self.whole(masks)

    def budget(self, reduction: float, layers: int, heads: int, neurons: int) -> float:
        """The pruning budget, computed here only: the FLOPs that a model of ``layers`` layers
        of ``heads`` heads and ``neurons`` neurons may keep after removing the fraction
        ``reduction`` of them (its bounds are checked by the search section, the one place
        they are written)."""
        SearchConfig(reduction=reduction)
        return (1 - reduction) * self.of_counts(layers * heads, layers * neurons)


def flops_of(model, data) -> FlopsModel:
    """The FLOPs model of ``model`` at the average length of sample ``data``."""
    _, _, head_dim, hidden, _ = get_adapter(model).dims(model)
    return FlopsModel(float(data.meta["avg_len"]), hidden, head_dim)
