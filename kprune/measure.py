"""Iteration-0 knowledge of a whole model: measured on the teacher, written as a score table,
and read back from the tables (the DVC path's hand-over between its measure and loop stages)."""

from __future__ import annotations

import copy
from dataclasses import asdict

import pandas as pd
import torch

from kprune.adapters import get_adapter
from kprune.flops import flops_of
from kprune.knowledge import Knowledge, MeasureSpec, measure
from kprune.modeling import frozen
from kprune.sample import SampleData, materialise
from kprune.scores import check_tables_match, knowledge_frame, read_scores, to_knowledge
from kprune.version import __version__


def measure_knowledge(
    model,
    data: SampleData,
    spec: MeasureSpec,
    batch_size: int,
    device: torch.device | str,
    dtype: str = "float32",
) -> Knowledge:
    """Knowledge of every unit on the unpruned model (iteration 0); with ``dtype`` bfloat16
    the passes run on a bf16 copy, as the loop's measurements do. The model is the sample's
    teacher, so the paper's K_pred is zero without a backward (see ``measure``)."""
    model = frozen(model, device)
    adapter = get_adapter(model)
    sample = materialise(model, adapter, data, batch_size, device)
    m_model = copy.deepcopy(model).to(torch.bfloat16) if dtype == "bfloat16" else model
    views = [adapter.view(layer) for layer in adapter.layers(m_model)]
    head_fn = lambda h: adapter.logits(m_model, h)  # noqa: E731
    return measure(views, head_fn, sample, 0, adapter.dims(model), spec, at_teacher=True)


def measure_initial(
    model,
    data: SampleData,
    spec: MeasureSpec,
    batch_size: int,
    device: torch.device | str,
    columns: tuple[str, ...],
    dtype: str = "float32",
) -> tuple[pd.DataFrame, dict]:
    """Iteration-0 knowledge as a score table with its metadata."""
    k = measure_knowledge(model, data, spec, batch_size, device, dtype)
    dims = get_adapter(model).dims(model)
    flops = flops_of(model, data)
    meta = {
        "sample": data.meta["fingerprint"],
        "gamma": spec.gamma,
        "pred_form": spec.pred_form,
        "rep_form": spec.rep_form,
        "dtype": dtype,
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


def read_knowledge(rep_path, pred_path, m=None) -> tuple[Knowledge, pd.DataFrame, dict]:
    """The iteration-0 knowledge stored in the K_rep and K_pred tables at these paths, checked
    to come from one sample and (given the measure section ``m``) from its forms and gamma;
    also the K_rep table and its metadata (dims and FLOPs model)."""
    rep, rep_meta = read_scores(rep_path)
    pred, pred_meta = read_scores(pred_path)
    check_tables_match(rep_meta, pred_meta, m)
    return knowledge_from_tables(rep, pred, tuple(rep_meta["dims"])), rep, rep_meta
