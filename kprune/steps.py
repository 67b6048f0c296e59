"""The pipeline's steps as library calls: sample -> measure -> search -> prune_tune.

Stages and flows call these; ``kprune.prune`` composes the same pieces in memory.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from kprune import __version__
from kprune.adapters import get_adapter
from kprune.errors import KPruneError
from kprune.evaluation import count_params
from kprune.flops import FlopsModel
from kprune.knowledge import Knowledge, MeasureSpec, measure
from kprune.masks import Masks
from kprune.modeling import frozen
from kprune.pipeline import LoopOptions, run_loop
from kprune.sample import SampleData, materialise
from kprune.scores import knowledge_frame, to_knowledge
from kprune.search import SearchSpec, kpms

log = logging.getLogger(__name__)
MODES = ("iterative", "oneshot")


def _check_reduction(reduction: float) -> None:
    if not 0 <= reduction < 1:
        raise KPruneError(f"reduction must be in [0, 1), got {reduction}")


def flops_of(model, data: SampleData) -> FlopsModel:
    adapter = get_adapter(model)
    _, _, head_dim, hidden, _ = adapter.dims(model)
    return FlopsModel(float(data.meta["avg_len"]), hidden, head_dim)


def measure_knowledge(
    model, data: SampleData, spec: MeasureSpec, batch_size: int, device: torch.device | str
) -> Knowledge:
    """Knowledge of every unit on the unpruned model (iteration 0)."""
    model = frozen(model, device)
    adapter = get_adapter(model)
    sample = materialise(model, adapter, data, batch_size, device)
    views = [adapter.view(layer) for layer in adapter.layers(model)]
    return measure(views, lambda h: adapter.logits(model, h), sample, 0, adapter.dims(model), spec)


def measure_initial(
    model,
    data: SampleData,
    spec: MeasureSpec,
    batch_size: int,
    device: torch.device | str,
    columns: tuple[str, ...],
) -> tuple[pd.DataFrame, dict]:
    """Iteration-0 knowledge as a score table with its metadata."""
    k = measure_knowledge(model, data, spec, batch_size, device)
    dims = get_adapter(model).dims(model)
    flops = flops_of(model, data)
    meta = {
        "sample": data.meta["fingerprint"],
        "gamma": spec.gamma,
        "pred_form": spec.pred_form,
        "rep_form": spec.rep_form,
        "columns": list(columns),
        "flops_model": asdict(flops),
        "dims": list(dims),
        "nonfinite_batches": k.nonfinite,
        "kprune_version": __version__,
    }
    return knowledge_frame(k, flops, 0, 0, columns), meta


def knowledge_from_tables(
    rep: pd.DataFrame | None, pred: pd.DataFrame | None, dims: tuple
) -> Knowledge:
    """Iteration-0 knowledge from the K_rep and K_pred tables (a missing one counts as 0)."""
    layers, heads, _, _, neurons = dims
    k = Knowledge.zeros(layers, heads, neurons)
    if rep is not None:
        r = to_knowledge(rep, layers, heads, neurons, 0)
        k.rep_heads, k.rep_neurons = r.rep_heads, r.rep_neurons
    if pred is not None:
        p = to_knowledge(pred, layers, heads, neurons, 0)
        k.pred_heads, k.pred_neurons = p.pred_heads, p.pred_neurons
    return k


def search_masks(k: Knowledge, flops: FlopsModel, reduction: float, spec: SearchSpec) -> Masks:
    """One-shot KPMS: the bottom-up search with one set of scores gives every layer's mask."""
    _check_reduction(reduction)
    layers, heads = k.rep_heads.shape
    neurons = k.rep_neurons.shape[1]
    masks = Masks.ones(layers, heads, neurons)
    budget = (1 - reduction) * flops.of_counts(layers * heads, layers * neurons)
    for s in range(2 * layers):
        unit = kpms(k, masks, s, budget, flops, spec)
        (masks.heads if s % 2 == 0 else masks.neurons)[s // 2] = unit
    return masks


@dataclass
class PruneTuneResult:
    model: torch.nn.Module  # full size, tuned, to be cut by surgery.prune_model
    masks: Masks
    report: dict
    iterations: pd.DataFrame  # per-iteration score tables (iterative mode)


def prune_tune(
    model,
    data: SampleData,
    kind: str,
    reduction: float,
    measure_spec: MeasureSpec,
    search_spec: SearchSpec,
    *,
    mode: str = "iterative",
    tune: bool = True,
    ridge: float = 1e-4,
    batch_size: int = 32,
    initial: Knowledge | None = None,
    masks: Masks | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    tune_mode: str = "lstsq",
    measure_dtype: str = "float32",
    reference_loop: bool = False,
) -> PruneTuneResult:
    """The sublayer loop on ``model`` (changed in place). ``mode='oneshot'`` needs ``masks``."""
    if mode not in MODES:
        raise KPruneError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "oneshot" and masks is None:
        raise KPruneError("one-shot mode needs the masks of the search stage")
    _check_reduction(reduction)
    t0 = time.perf_counter()
    model = frozen(model, device)
    adapter = get_adapter(model)
    sample = materialise(model, adapter, data, batch_size, device)
    dims = adapter.dims(model)
    layers, heads, _, _, neurons = dims
    flops = flops_of(model, data)
    total = flops.of_counts(layers * heads, layers * neurons)
    budget = (1 - reduction) * total
    params_before = count_params(model)
    opts = LoopOptions(
        measure_spec,
        search_spec,
        tune=tune,
        ridge=ridge,
        progress=progress,
        tune_mode=tune_mode,
        measure_dtype=measure_dtype,
        reference=reference_loop,
    )
    teacher = frozen(copy.deepcopy(model))
    t_sample = time.perf_counter() - t0
    loop = run_loop(
        model,
        teacher,
        adapter,
        sample,
        budget,
        flops,
        opts,
        initial=initial,
        fixed_masks=masks if mode == "oneshot" else None,
    )
    iterations = (
        pd.concat(
            [knowledge_frame(k, flops, i, i) for i, k in enumerate(loop.knowledge)],
            ignore_index=True,
        )
        if loop.knowledge
        else pd.DataFrame()
    )
    kept = loop.masks.kept_per_layer()
    report = {
        "kprune_version": __version__,
        "mode": mode,
        "reduction": reduction,
        "sample": {k: data.meta[k] for k in ("examples", "tokens", "fingerprint")},
        "flops_before": total,
        "flops_after": flops.of_masks(loop.masks.heads, loop.masks.neurons),
        "flops_budget": budget,
        "avg_seq_len": flops.seq_len,
        "params_before": params_before,
        "kept_heads_per_layer": kept["heads"],
        "kept_neurons_per_layer": kept["neurons"],
        "heads_per_layer": heads,
        "neurons_per_layer": neurons,
        "sublayers": loop.sublayers,
        "seconds_per_phase": {"materialise": round(t_sample, 3), **loop.seconds},
    }
    report["flops_kept"] = report["flops_after"] / total
    return PruneTuneResult(model, loop.masks, report, iterations)
