"""The adapter protocol: where a model family keeps its attention, FFN and LayerNorms.

Everything else in kprune reaches model internals through an adapter, so a new family is a
short file that fills in these accessors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from kprune.errors import KPruneError
from kprune.models.pruned_modeling import EmptyAttention  # noqa: F401  (the one definition)

HEAD_TYPES = ("seq", "qa")


@dataclass(frozen=True)
class LayerView:
    """The parts of one encoder layer that pruning touches."""

    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    attn_out: nn.Linear  # W_O: its input is the heads' context (unit mask applied there)
    attn_ln: nn.LayerNorm
    ffn_in: nn.Linear
    ffn_out: nn.Linear  # W_2: its input is the neurons' activations
    ffn_ln: nn.LayerNorm
    act: Callable[[torch.Tensor], torch.Tensor]
    # the layer's additive attention-score bias for a length T, (1, kept heads, T, T), where
    # the family has one (MPNet's relative positions); None: none
    position_bias: Callable[[int], torch.Tensor] | None = None


class Adapter:
    """Base class; subclasses name their modules. ``model`` is an HF task model."""

    family: str = ""
    model_types: tuple[str, ...] = ()

    def backbone(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def layers(self, model: nn.Module) -> list[nn.Module]:
        raise NotImplementedError

    def view(self, layer: nn.Module) -> LayerView:
        raise NotImplementedError

    def views(self, model: nn.Module) -> list[LayerView]:
        """Every layer's view, as the functional forward needs them (with the position bias
        of a family that has one)."""
        return [
            replace(self.view(layer), position_bias=self.position_bias(model, layer))
            for layer in self.layers(model)
        ]

    def position_bias(
        self, model: nn.Module, layer: nn.Module
    ) -> Callable[[int], torch.Tensor] | None:
        """The additive bias ``layer``'s kept heads add to their attention scores at length
        T, (1, heads, T, T); None for a family without one."""
        return None

    def embed(self, model: nn.Module, input_ids: torch.Tensor, token_type_ids: torch.Tensor):
        raise NotImplementedError

    def seq_head(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def set_num_heads(self, layer: nn.Module, n: int) -> None:
        """Update the attention module's head-count attributes after surgery."""
        raise NotImplementedError

    def keep_heads(self, layer: nn.Module, kept: torch.Tensor) -> None:
        """After surgery kept the heads of indices ``kept`` (of the layer's current heads):
        the head count, and whatever else a family keys by head."""
        self.set_num_heads(layer, len(kept))

    def empty_attention(self, layer: nn.Module) -> None:
        """Replace a layer's attention by EmptyAttention (every head pruned)."""
        raise NotImplementedError

    def has_heads(self, layer: nn.Module) -> bool:
        """False once every head of the layer was pruned (its attention is EmptyAttention)."""
        raise NotImplementedError

    def ffn(self, layer: nn.Module) -> tuple[nn.Linear, nn.Linear]:
        """The FFN's two linear maps (W_1, W_2): present even when the attention is empty."""
        raise NotImplementedError

    def matrices(self, layer: nn.Module) -> dict[str, nn.Linear]:
        """The layer's linear maps by role (q, k, v, attn_out, ffn_in, ffn_out); without the
        attention's when every head was pruned."""
        if not self.has_heads(layer):
            return dict(zip(("ffn_in", "ffn_out"), self.ffn(layer), strict=True))
        v = self.view(layer)
        return {
            "q": v.q,
            "k": v.k,
            "v": v.v,
            "attn_out": v.attn_out,
            "ffn_in": v.ffn_in,
            "ffn_out": v.ffn_out,
        }

    # shared logic -------------------------------------------------------------------
    def dims(self, model: nn.Module) -> tuple[int, int, int, int, int]:
        """(layers, heads, head_dim, hidden, ffn) of the unpruned model."""
        c = model.config
        layers = len(self.layers(model))
        heads = getattr(c, "num_attention_heads", None) or c.n_heads
        hidden = getattr(c, "hidden_size", None) or c.dim
        ffn = getattr(c, "intermediate_size", None) or c.hidden_dim
        return layers, heads, hidden // heads, hidden, ffn

    def head_type(self, model: nn.Module) -> str:
        name = type(model).__name__
        if name.endswith("ForSequenceClassification"):
            return "seq"
        if name.endswith("ForQuestionAnswering"):
            return "qa"
        raise KPruneError(
            f"model head {name} is not supported; use a *ForSequenceClassification or "
            "*ForQuestionAnswering checkpoint"
        )

    def logits(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """Task output from the last hidden states: (B, C) or, for QA, (B, T, 2)."""
        if self.head_type(model) == "qa":
            return model.qa_outputs(hidden)
        return self.seq_head(model, hidden)
