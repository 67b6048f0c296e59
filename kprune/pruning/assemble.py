"""The assembly: ``prune`` a fine-tuned encoder with any method (sample -> measure -> search
-> prune/tune -> surgery -> report).

Which method runs is decided here only: ``choose_masks`` (K-prune's search on its scores, or
a baseline's scoring) and ``prune_and_tune`` (K-prune's sublayer loop, or a baseline's
finish). ``prune`` / ``prune_masked`` (the CLI, the library, the benchmark) chain them in one
process; the DVC stages search and prune_tune (and so the Prefect tasks) call the same two
with their inputs read from files.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from kprune.config import PruneConfig
from kprune.data.sample import SampleData, task_sample
from kprune.data.tasks import TaskData, load_task
from kprune.device import resolve_device
from kprune.errors import KPruneError
from kprune.models.checkpoint import check_task_fits, load_model
from kprune.models.loading import frozen, load_tokenizer
from kprune.pruning.baselines import baseline_masks, tune_baseline
from kprune.pruning.budget import search_budget
from kprune.pruning.flops import FlopsModel, flops_of
from kprune.pruning.knowledge import Knowledge, MeasureSpec
from kprune.pruning.loop import prune_tune, takes_teacher_logits
from kprune.pruning.masks import Masks
from kprune.pruning.score_tables import measure_knowledge
from kprune.pruning.search import SearchSpec, search_masks
from kprune.pruning.surgery import prune_model
from kprune.report import Report, add_pruned, run_fields
from kprune.train.evaluation import evaluate_model


@dataclass
class MaskedResult:
    """The tuned full-size model with its masks, before surgery."""

    model: nn.Module
    masks: Masks
    report: Report
    tokenizer: object


def choose_masks(
    config: PruneConfig,
    flops: FlopsModel,
    knowledge: Knowledge | None = None,
    model: nn.Module | None = None,
    data: SampleData | None = None,
    kind: str | None = None,
    device: torch.device | None = None,
) -> tuple[Masks, dict]:
    """The masks of ``config.method`` at the FLOPs budget, and the seconds they took: K-prune's
    one search on ``knowledge`` (the iteration-0 scores; measured on ``model`` if not given),
    or a baseline's own scoring of ``model`` on ``data`` (a ``kind`` task). The search stage
    calls this."""
    config = config.resolved()
    if config.method.scorer is not None:
        return baseline_masks(model, data, kind, config, device)
    t = time.perf_counter()
    if knowledge is None:
        spec = MeasureSpec.of(config, kind)
        knowledge = measure_knowledge(
            model, data, spec, config.sample.batch_size, device, config.measure.dtype
        )
    (layers, heads), neurons = knowledge.rep_heads.shape, knowledge.rep_neurons.shape[1]
    plan = search_budget(config, flops, (layers, heads, 0, 0, neurons), model)
    spec = SearchSpec.of(config)
    masks = search_masks(knowledge, plan.cost, config.search.reduction, spec, plan.amount)
    return masks, {"oneshot_measure_search": time.perf_counter() - t}


def prune_and_tune(
    model: nn.Module,
    data: SampleData,
    kind: str,
    config: PruneConfig,
    device: torch.device,
    masks: Masks | None = None,
    seconds: dict | None = None,
    initial: Knowledge | None = None,
    progress: bool = True,
) -> tuple[nn.Module, Masks, Report, pd.DataFrame | None]:
    """What ``config.method`` does after (or, iterative K-prune, instead of) one search:
    K-prune's sublayer loop (iteration 0 from ``initial`` if given; one-shot mode applies
    ``masks``), or the baseline's finish on its ``masks``. The full-size model changed in
    place, its masks, the loop's report fields and K-prune's per-iteration score tables.
    The prune_tune stage calls this."""
    config, seconds = config.resolved(), dict(seconds or {})
    if config.method.scorer is not None:
        model, masks, res = tune_baseline(
            model, data, kind, config, masks, seconds, device, progress
        )
        return model, masks, res, None
    res = prune_tune(
        model, data, kind, config, initial=initial, masks=masks, device=device, progress=progress
    )
    report = {**res.report, "seconds_per_phase": {**seconds, **res.report["seconds_per_phase"]}}
    return res.model, res.masks, report, res.iterations


def prune_masked(
    model: nn.Module,
    task: TaskData,
    config: PruneConfig,
    tokenizer,
    device: torch.device,
    progress: bool = True,
) -> MaskedResult:
    """Run ``config.method`` on ``model`` in place: masks chosen (and, for K-prune, output
    projections tuned). The model keeps its full size; ``surgery.prune_model(model, masks)``
    removes the units."""
    check_task_fits(model, task)
    config = config.resolved()
    model = frozen(model, device)
    t = time.perf_counter()
    # K-prune's loop measures the teacher on the sample first: its forward gives the logits
    by_loop = config.method.scorer is None and takes_teacher_logits(config)
    data = task_sample(model, tokenizer, task, config.sample, device, teacher_logits=not by_loop)
    t_draw = time.perf_counter() - t
    kind = task.spec.kind
    masks, seconds = None, {}
    if config.method.scorer is not None or config.prune_tune.mode == "oneshot":
        flops = flops_of(model, data)
        masks, seconds = choose_masks(config, flops, None, model, data, kind, device)
    model, masks, res, _ = prune_and_tune(
        model, data, kind, config, device, masks, seconds, progress=progress
    )
    report = Report(**run_fields(data.meta, config, device), **res)
    report["seconds_per_phase"] = {"sample": t_draw, **res["seconds_per_phase"]}
    return MaskedResult(model, masks, report, tokenizer)


def cut(model: nn.Module, masks: Masks, report: Report) -> nn.Module:
    """Surgery: ``model`` (changed in place) without the units ``masks`` drop, its parameter
    count added to ``report``."""
    pruned = prune_model(model, masks)
    add_pruned(report, pruned)
    return pruned


def prune(
    model: str | Path | nn.Module,
    task: TaskData | str,
    config: PruneConfig | None = None,
    tokenizer=None,
    device: str = "auto",
    progress: bool = True,
    eval_split: str | None = "dev",
    method: str | None = None,
    allow_untrained_head: bool = False,
) -> tuple[nn.Module, Report]:
    """Prune ``model`` to ``1 - config.reduction`` of its FLOPs on ``task``'s training sample,
    with ``config.method`` (``method``, if given, replaces it: a shorthand).

    Returns the physically pruned model and a report (FLOPs, params, metric before/after,
    units kept per layer, reconstruction errors before/after tuning, seconds per phase).
    An in-memory model is copied, never changed.
    """
    t_start = time.perf_counter()
    config = config or PruneConfig()
    if method is not None:
        config = config.replace(method=method)
    dev = resolve_device(device)
    torch.manual_seed(config.sample.seed)
    teacher = str(model) if isinstance(model, str | Path) else None
    if isinstance(model, str | Path):
        tokenizer = tokenizer or load_tokenizer(str(model))
        model = load_model(model, allow_untrained_head)
    else:
        model = copy.deepcopy(model)
    if tokenizer is None:
        raise KPruneError("pass a tokenizer with an in-memory model")
    task = load_task(task) if isinstance(task, str) else task
    check_task_fits(model, task)

    t = time.perf_counter()
    before = (
        evaluate_model(model, tokenizer, task, eval_split, config.sample.max_length, dev)
        if eval_split
        else None
    )
    t_before = time.perf_counter() - t
    result = prune_masked(model, task, config, tokenizer, dev, progress)
    report = result.report
    if isinstance(teacher, str):
        report["teacher"] = teacher
    t = time.perf_counter()
    pruned = cut(result.model, result.masks, report)
    t_surgery = time.perf_counter() - t
    t = time.perf_counter()
    after = (
        evaluate_model(pruned, tokenizer, task, eval_split, config.sample.max_length, dev)
        if eval_split
        else None
    )
    report["seconds_per_phase"].update(
        {
            "evaluate_before": t_before,
            "surgery": t_surgery,
            "evaluate_after": time.perf_counter() - t,
        }
    )
    report["seconds_per_phase"] = {k: round(v, 3) for k, v in report["seconds_per_phase"].items()}
    report.update(eval_split=eval_split, metric_before=before, metric_after=after)
    report["seconds"] = round(time.perf_counter() - t_start, 3)
    pruned.kprune_masks = result.masks
    return pruned, report
