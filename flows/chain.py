"""The one chain of tasks behind both flows: (finetune ->) sample -> measure_rep, measure_pred
(shared by every reduction) -> search -> prune_tune -> evaluate -> export (per reduction).

``run(task, *args)`` runs a task: the single-checkpoint flow calls it and waits (to log each
state), the batch flow submits it (and Prefect resolves the futures passed along).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows import settings
from flows import tasks as t
from kprune.config import (
    PRED_KNOBS,
    REP_KNOBS,
    EvaluateConfig,
    ExportConfig,
    PruneConfig,
    SparsifyConfig,
    section,
    teacher_of,
)

Run = Callable[..., Any]


def teacher_chain(
    run: Run, task: str, files: str, data_dir: str | None, params: str, device: str
) -> Any:
    """The teacher of the task from params.yaml's compress.model: its teachers entry's base
    model fine-tuned with the entry's finetune knobs (a folder holding ``A.TEACHER``)."""
    teacher = teacher_of(params, section(params, "compress").model, task)
    base = teacher.base
    if Path(base).exists():  # a folder is hashed by content; a hub name by name
        base = str(Path(base).resolve())
    store = str(settings.FLOW_DATA)
    return run(t.finetune, base, task, files, data_dir, teacher.finetune, device, store)


def measure_chain(
    run: Run,
    checkpoint: str,
    task: str,
    files: str,
    data_dir: str | None,
    cfg: PruneConfig,
    device: str,
) -> tuple[Any, Any, Any]:
    """The sample and its two iteration-0 score tables (each keyed on what it depends on,
    once the method's knob changes are applied)."""
    cfg, store = cfg.resolved(), str(settings.FLOW_DATA)
    sample = run(t.sample, checkpoint, task, files, data_dir, cfg.sample, device, store)
    rep = run(t.measure_rep, checkpoint, sample, cfg.only(REP_KNOBS), device, store)
    pred = run(t.measure_pred, checkpoint, sample, cfg.only(PRED_KNOBS), device, store)
    return sample, rep, pred


def reduction_chain(
    run: Run,
    checkpoint: str,
    task: str,
    files: str,
    data_dir: str | None,
    measured: tuple[Any, Any, Any],
    cfg: PruneConfig,
    ev: EvaluateConfig,
    ex: ExportConfig,
    device: str,
) -> tuple[Any, Any, Any, Any]:
    """Masks, pruned model, evaluation and ONNX export at ``cfg.search.reduction``."""
    sample, rep, pred = measured
    store = str(settings.FLOW_DATA)  # the flow's, not a Dask worker's
    table = run(t.latency, checkpoint, cfg.latency, store) if cfg.search.budget == "latency" else ""
    masks = run(t.search, checkpoint, sample, rep, pred, cfg, table, device, store)
    pruned = run(t.prune_tune, checkpoint, sample, rep, pred, masks, cfg, table, device, store)
    max_length = cfg.sample.max_length
    evaluation = run(
        t.evaluate, checkpoint, pruned, task, files, data_dir, ev, max_length, device, store
    )
    exported = run(t.export, pruned, task, files, data_dir, ex, store, ev.metric)
    return masks, pruned, evaluation, exported


def sparse_chain(
    run: Run,
    checkpoint: str,
    task: str,
    files: str,
    data_dir: str | None,
    pruned: dict[float, Any],
    cfg: SparsifyConfig,
    device: str,
) -> dict[float | None, Any]:
    """SparseBERT on the teacher (key None) and on each reduction's K-prune model (key R)."""
    store = str(settings.FLOW_DATA)
    out = {None: run(t.sparsify, checkpoint, task, files, data_dir, cfg, None, device, store)}
    for r, pruned_dir in pruned.items():
        out[r] = run(t.sparsify, checkpoint, task, files, data_dir, cfg, pruned_dir, device, store)
    return out
