"""The assembly: ``prune`` a fine-tuned encoder with any method (sample -> measure -> search
-> prune/tune -> surgery -> report)."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kprune.baselines import prune_baseline
from kprune.checkpoint import check_task_fits, load_model
from kprune.config import PruneConfig
from kprune.device import resolve_device
from kprune.errors import KPruneError
from kprune.evaluation import evaluate_model
from kprune.flops import flops_of
from kprune.loop import prune_tune
from kprune.masks import Masks
from kprune.measure import measure_knowledge
from kprune.modeling import frozen, load_tokenizer
from kprune.report import Report, add_pruned, run_fields
from kprune.sample import SampleData, draw_sample
from kprune.search import search_masks
from kprune.surgery import prune_model
from kprune.tasks import TaskData, load_task


@dataclass
class MaskedResult:
    """The tuned full-size model with its masks, before surgery."""

    model: nn.Module
    masks: Masks
    report: Report
    tokenizer: object


def task_sample(
    model: nn.Module, tokenizer, task: TaskData, config: PruneConfig, device: torch.device
):
    """The pruning sample of ``task``'s training split under ``config``."""
    c = config.sample
    train = task.split("train")
    return draw_sample(
        model, tokenizer, train, c.tokens, c.seed, c.batch_size, c.max_length, device
    )


def kprune_on_sample(
    model: nn.Module,
    data: SampleData,
    kind: str,
    config: PruneConfig,
    device: torch.device,
    progress: bool = True,
) -> tuple[nn.Module, Masks, dict]:
    """K-prune on a drawn sample (``model`` changed in place): in one-shot mode measure and
    search once first, then the sublayer loop. The full-size tuned model, its masks and the
    loop's report fields (the same shape as ``baselines.prune_baseline``'s)."""
    masks, t = None, time.perf_counter()
    if config.prune_tune.mode == "oneshot":
        spec = config.measure_spec(kind)
        k = measure_knowledge(
            model, data, spec, config.sample.batch_size, device, config.measure.dtype
        )
        flops = flops_of(model, data)
        masks = search_masks(k, flops, config.search.reduction, config.search_spec())
    t_search = time.perf_counter() - t
    res = prune_tune(model, data, kind, config, masks=masks, device=device, progress=progress)
    seconds = {"oneshot_measure_search": t_search, **res.report["seconds_per_phase"]}
    return res.model, res.masks, {**res.report, "seconds_per_phase": seconds}


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
    data = task_sample(model, tokenizer, task, config, device)
    t_draw = time.perf_counter() - t
    kind = task.spec.kind
    if config.method.scorer is None:
        model, masks, res = kprune_on_sample(model, data, kind, config, device, progress)
    else:
        model, masks, res = prune_baseline(model, data, kind, config, device, progress)
    report = Report(**run_fields(task, config, device), **res)
    report["seconds_per_phase"] = {"sample": t_draw, **res["seconds_per_phase"]}
    return MaskedResult(model, masks, report, tokenizer)


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
    t = time.perf_counter()
    pruned = prune_model(result.model, result.masks)
    t_surgery = time.perf_counter() - t
    t = time.perf_counter()
    after = (
        evaluate_model(pruned, tokenizer, task, eval_split, config.sample.max_length, dev)
        if eval_split
        else None
    )
    report = result.report
    report["seconds_per_phase"].update(
        {
            "evaluate_before": t_before,
            "surgery": t_surgery,
            "evaluate_after": time.perf_counter() - t,
        }
    )
    report["seconds_per_phase"] = {k: round(v, 3) for k, v in report["seconds_per_phase"].items()}
    report.update(eval_split=eval_split, metric_before=before, metric_after=after)
    add_pruned(report, pruned)
    report["seconds"] = round(time.perf_counter() - t_start, 3)
    pruned.kprune_masks = result.masks
    pruned.kprune_tokenizer = tokenizer
    return pruned, report
