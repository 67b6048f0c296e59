"""Model-family adapters; ``get_adapter(model)`` picks one or names the supported families."""

from __future__ import annotations

from torch import nn

from kprune.errors import KPruneError
from kprune.models.adapters.base import Adapter, EmptyAttention, LayerView
from kprune.models.adapters.families import (
    BertAdapter,
    DistilBertAdapter,
    MPNetAdapter,
    RobertaAdapter,
)

ADAPTERS: tuple[Adapter, ...] = (
    BertAdapter(),
    RobertaAdapter(),
    DistilBertAdapter(),
    MPNetAdapter(),
)


def supported_families() -> list[str]:
    return sorted({t for a in ADAPTERS for t in a.model_types})


def adapter_for_type(model_type: str) -> Adapter:
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    raise KPruneError(
        f"unsupported architecture '{model_type}'; supported families: "
        f"{', '.join(supported_families())} (encoder models only)"
    )


def get_adapter(model: nn.Module) -> Adapter:
    """The adapter for an HF model, by its config's model_type."""
    model_type = getattr(getattr(model, "config", None), "model_type", None) or "unknown"
    adapter = adapter_for_type(model_type)
    adapter.head_type(model)  # rejects unsupported heads early
    return adapter


__all__ = [
    "ADAPTERS",
    "Adapter",
    "EmptyAttention",
    "LayerView",
    "adapter_for_type",
    "get_adapter",
    "supported_families",
]
