"""The optional parts of kprune and the one-line refusal when one is not installed.

The core (pruning, SparseBERT, save/load) needs torch and transformers only; ONNX export and
the repository's pipeline (DVC stages, Prefect flows, MLflow, plots) come as extras.
"""

from __future__ import annotations

import importlib
import importlib.util

from kprune.errors import KPruneError

ONNX = "onnx"  # onnx, onnxscript, onnxruntime
PIPELINE = "pipeline"  # prefect, prefect-dask, dvc, mlflow, matplotlib


def missing_message(extra: str, name: str, purpose: str) -> str:
    return (
        f"{purpose} needs {name}, which is not installed; "
        f"install it with: pip install 'kprune[{extra}]'"
    )


def first_missing(*modules: str) -> str | None:
    """The first of ``modules`` that cannot be found (nothing is imported)."""
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ImportError:
            return name
    return None


def require(extra: str, *modules: str, purpose: str) -> None:
    """Import ``modules``; when one is missing, say which extra installs it."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise KPruneError(missing_message(extra, name, purpose)) from None
