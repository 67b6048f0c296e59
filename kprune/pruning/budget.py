"""The search's budget, decided here only: what it counts and how much the kept units may cost.

``flops`` (the paper): the encoder's FLOPs at the sample's average length, cut by the
reduction R. ``latency``: the latency on a runtime predicted by a latency table
(``kprune.pruning.latency_table``), the target given as a speed-up over the dense model or in
milliseconds; the table comes from ``latency.table`` (a file) or is measured on this machine
once and cached (``cache_folder``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from kprune.config import PruneConfig
from kprune.errors import KPruneError
from kprune.pruning.flops import FlopsModel
from kprune.pruning.latency_table import LatencyCost, LatencyTable, cached_table
from kprune.pruning.masks import Masks


def cache_folder() -> Path:
    """Where measured latency tables are kept: $KPRUNE_CACHE/latency, else the user's cache
    folder ($XDG_CACHE_HOME or ~/.cache)/kprune/latency."""
    root = os.environ.get("KPRUNE_CACHE")
    if root:
        return Path(root) / "latency"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "kprune" / "latency"


@dataclass(frozen=True)
class Budget:
    """What the search charges (``cost``) and how much the kept units may cost (``amount``:
    FLOPs, or ms above the empty model's latency)."""

    cost: FlopsModel | LatencyCost
    amount: float
    target_ms: float | None = None  # a latency budget's target

    @property
    def table(self) -> LatencyTable | None:
        return self.cost.table if isinstance(self.cost, LatencyCost) else None

    def fields(self, masks: Masks) -> dict[str, Any]:
        """The report's record of a latency budget (empty for FLOPs)."""
        table = self.table
        if table is None:
            return {}
        return {
            "latency_budget": {
                "runtime": table.runtime,
                "target_ms": round(self.target_ms, 4),
                "predicted_ms": round(table.predict_ms(masks), 4),
                "dense_predicted_ms": round(table.predicted_dense_ms, 4),
                "dense_measured_ms": round(table.dense_ms, 4),
                "empty_ms": round(table.base_ms, 4),
                "table_key": table.key,
            }
        }


def with_table(config: PruneConfig, path: str | None) -> PruneConfig:
    """``config`` reading its latency table from ``path`` (the latency stage's output) when
    its budget is latency; unchanged otherwise (the FLOPs budget reads no table)."""
    if path and config.search.budget == "latency":
        return config.replace(latency_table=str(path))
    return config


def latency_table(config: PruneConfig, model: nn.Module | None) -> LatencyTable:
    """The latency table a run's budget reads: the ``latency.table`` file, or the cached (or
    now measured) table of ``model``'s shape on the configured runtime."""
    lat = config.latency
    if lat.table:
        return LatencyTable.load(lat.table)
    if model is None:
        raise KPruneError(
            "a latency budget without the model needs a measured table: pass --latency-table "
            "FILE (kprune latency TEACHER --out FILE)"
        )
    return cached_table(model, lat.resolved(), cache_folder(), progress=True)


def search_budget(
    config: PruneConfig,
    flops: FlopsModel | None,
    dims: tuple[int, int, int, int, int],
    model: nn.Module | None = None,
    table: LatencyTable | None = None,
) -> Budget:
    """The budget of a run of ``config`` on a model of ``dims`` (layers, heads, head size,
    hidden, neurons): FLOPs by ``flops`` or latency by its table (``table``, or the one
    ``latency_table`` finds). A table of another shape, or a target it cannot reach, is one
    line."""
    layers, heads, _, _, neurons = dims
    q = config.search
    if q.budget == "flops":
        return Budget(flops, flops.budget(q.reduction, layers, heads, neurons))
    table = table or latency_table(config, model)
    if (table.layers, table.heads, table.neurons) != (layers, heads, neurons):
        raise KPruneError(
            f"the latency table is for {table.layers} layers of {table.heads} heads and "
            f"{table.neurons} neurons, the model has {layers} of {heads} and {neurons}; "
            "measure one for this model (kprune latency MODEL --out FILE)"
        )
    cost = LatencyCost(table)
    target = table.target_ms(q.speedup, q.latency_ms)
    return Budget(cost, cost.budget(target), target)
