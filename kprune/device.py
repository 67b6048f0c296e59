"""Device choice: ``auto`` takes a GPU when one is present."""

from __future__ import annotations

import torch

from kprune.errors import KPruneError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available, else mps if available, else cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise KPruneError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise KPruneError(
            f"device '{name}' asked for but no CUDA GPU is available; use --device cpu"
        )
    return dev
