"""Unstructured magnitude sparsity of an encoder's matrices (SparseBERT's pruning half).

The pruned matrices are each layer's query, key, value, attention output and both FFN
weights; embeddings, biases, LayerNorms, pooler and task head are never pruned. Within every
matrix the weights of largest |w| are kept, the same fraction in each. The target grows on a
cubic schedule, s_t = s_f (1 - (1 - t/T)^3), and is raised at a fixed number of evenly spaced
steps; a pruned weight is held at zero after every optimizer step and never comes back.
"""

from __future__ import annotations

import torch
from torch import nn

from kprune.errors import KPruneError
from kprune.models.adapters import get_adapter


def cubic_sparsity(step: int, total: int, final: float, initial: float = 0.0) -> float:
    """The schedule's target at ``step`` of ``total``: s_f + (s_i - s_f)(1 - t/T)^3."""
    t = min(max(step, 0), total) / max(total, 1)
    return final + (initial - final) * (1.0 - t) ** 3


def update_steps(total: int, updates: int) -> list[int]:
    """The ``updates`` steps (1..total, evenly spaced, distinct) at which the mask is raised;
    the last one is ``total``, where the target is reached."""
    if updates < 1:
        raise KPruneError(f"sparsify.mask_updates must be >= 1, got {updates}")
    n = min(updates, max(total, 1))
    return sorted({max(1, round(i * total / n)) for i in range(1, n + 1)})


def prunable_matrices(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights that unstructured pruning zeroes, by name (``layer.3.ffn_in``); a
    structurally pruned layer without heads or neurons has none of its own."""
    adapter = get_adapter(model)
    out: dict[str, nn.Parameter] = {}
    for i, layer in enumerate(adapter.layers(model)):
        for name, module in adapter.matrices(layer).items():
            if module.weight.numel():
                out[f"layer.{i}.{name}"] = module.weight
    return out


def magnitude_mask(weight: torch.Tensor, sparsity: float, previous: torch.Tensor | None = None):
    """Keep-mask of the round((1 - s) * n) weights of largest |w| (among those ``previous``
    kept: a pruned weight never regrows)."""
    n = weight.numel()
    keep = n - round(sparsity * n)
    score = weight.detach().abs().flatten()
    if previous is not None:
        keep = min(keep, int(previous.sum()))
        score = torch.where(previous.flatten(), score, torch.full_like(score, -1.0))
    mask = torch.zeros(n, dtype=torch.bool, device=weight.device)
    if keep > 0:
        mask[torch.topk(score, keep, sorted=False).indices] = True
    return mask.view_as(weight)


class WeightMasks:
    """The keep-masks of a model's prunable matrices, raised by ``update`` and enforced by
    ``apply`` (call it after every optimizer step)."""

    def __init__(self, model: nn.Module) -> None:
        self.weights = prunable_matrices(model)
        if not self.weights:
            raise KPruneError("the model has no prunable matrices (every unit was removed?)")
        self.masks = {k: torch.ones_like(w, dtype=torch.bool) for k, w in self.weights.items()}
        self.sparsity = 0.0

    @torch.no_grad()
    def update(self, sparsity: float) -> None:
        """Raise every matrix to ``sparsity`` by magnitude, then zero what was cut."""
        for name, w in self.weights.items():
            self.masks[name] = magnitude_mask(w, sparsity, self.masks[name])
        self.sparsity = sparsity
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for name, w in self.weights.items():
            w.mul_(self.masks[name])

    def report(self) -> dict:
        """Per matrix: its size and the fraction of its weights that are zero."""
        per = {
            k: {"params": w.numel(), "sparsity": round(1 - int((w != 0).sum()) / w.numel(), 6)}
            for k, w in self.weights.items()
        }
        total = sum(v["params"] for v in per.values())
        nonzero = sum(int((w != 0).sum()) for w in self.weights.values())
        return {
            "matrices": per,
            "params": total,
            "nonzero": nonzero,
            "sparsity": 1 - nonzero / total,
        }


def matrix_nonzero(model: nn.Module) -> tuple[int, int]:
    """(nonzero, total) weights of the encoder's prunable matrices: the size that both
    structured and unstructured pruning shrink, comparable across methods."""
    return count_nonzero(prunable_matrices(model).values())


def count_nonzero(weights) -> tuple[int, int]:
    """(nonzero, total) entries of these tensors."""
    weights = list(weights)
    return sum(int((w != 0).sum()) for w in weights), sum(w.numel() for w in weights)
