"""The assembly: ``prune`` a fine-tuned encoder with any method (sample -> measure -> search
-> prune/tune -> surgery -> report)."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from kprune.baselines import prune_baseline
from kprune.checkpoint import check_task_fits, load_model
from kprune.config import PruneConfig
from kprune.device import resolve_device
from kprune.errors import KPruneError
from kprune.evaluation import count_params, evaluate_model
from kprune.flops import flops_of
from kprune.knowledge import MeasureSpec
from kprune.loop import prune_tune
from kprune.masks import Masks
from kprune.measure import measure_knowledge
from kprune.methods import config_for, get_method
from kprune.modeling import frozen, load_tokenizer
from kprune.sample import draw_sample
from kprune.search import SearchSpec, search_masks
from kprune.surgery import prune_model
from kprune.tasks import TaskData, load_task


@dataclass
class MaskedResult:
    """The tuned full-size model with its masks, before surgery."""

    model: nn.Module
    masks: Masks
    report: dict
    tokenizer: object


def task_sample(
    model: nn.Module, tokenizer, task: TaskData, config: PruneConfig, device: torch.device
):
    """The pruning sample of ``task``'s training split under ``config``."""
    return draw_sample(
        model,
        tokenizer,
        task.split("train"),
        config.tokens,
        config.seed,
        config.batch_size,
        config.max_length,
        device,
    )


def prune_masked(
    model: nn.Module,
    task: TaskData,
    config: PruneConfig,
    tokenizer,
    device: torch.device,
    progress: bool = True,
) -> MaskedResult:
    """Run the K-prune loop on ``model`` in place: masks chosen, output projections tuned.

    The model keeps its full size; ``surgery.prune_model(model, masks)`` removes the units.
    """
    check_task_fits(model, task)
    model = model.to(device).eval()
    t = time.perf_counter()
    data = task_sample(model, tokenizer, task, config, device)
    t_draw = time.perf_counter() - t
    mspec = MeasureSpec(
        task.spec.kind,
        config.gamma,
        config.pred_form,
        config.use_pred,
        config.seed,
        config.pass_tokens,
        config.rep_form,
    )
    sspec = SearchSpec(
        config.lam, config.mu, config.use_pred, config.use_rep, config.search_strategy
    )
    masks, t_search = None, 0.0
    if config.mode == "oneshot":
        t = time.perf_counter()
        k = measure_knowledge(model, data, mspec, config.batch_size, device)
        masks = search_masks(k, flops_of(model, data), config.reduction, sspec)
        t_search = time.perf_counter() - t
    res = prune_tune(
        model,
        data,
        task.spec.kind,
        config.reduction,
        mspec,
        sspec,
        mode=config.mode,
        tune=config.tune,
        ridge=config.ridge,
        batch_size=config.batch_size,
        masks=masks,
        device=device,
        progress=progress,
        measure_dtype=config.measure_dtype,
        reference_loop=config.reference_loop,
    )
    report = {
        "task": task.spec.name,
        "metric": task.spec.metric,
        "config": asdict(config),
        "device": str(device),
        **res.report,
    }
    report["seconds_per_phase"] = {
        "sample": t_draw,
        "oneshot_measure_search": t_search,
        **report["seconds_per_phase"],
    }
    return MaskedResult(res.model, res.masks, report, tokenizer)


def prune(
    model: str | Path | nn.Module,
    task: TaskData | str,
    config: PruneConfig | None = None,
    tokenizer=None,
    device: str = "auto",
    progress: bool = True,
    eval_split: str | None = "dev",
    method: str = "kprune",
    allow_untrained_head: bool = False,
) -> tuple[nn.Module, dict]:
    """Prune ``model`` to ``1 - config.reduction`` of its FLOPs on ``task``'s training sample.

    Returns the physically pruned model and a report (FLOPs, params, metric before/after,
    units kept per layer, reconstruction errors before/after tuning, seconds per phase).
    An in-memory model is copied, never changed.
    """
    t_start = time.perf_counter()
    config = config or PruneConfig()
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
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
        evaluate_model(model, tokenizer, task, eval_split, config.max_length, dev)
        if eval_split
        else None
    )
    t_before = time.perf_counter() - t
    chosen = get_method(method)
    if chosen.scorer is None:
        result = prune_masked(model, task, config_for(chosen, config), tokenizer, dev, progress)
    else:
        result = _baseline_masked(chosen.scorer, model, task, config, tokenizer, dev, progress)
    result.report["method"] = chosen.name
    t = time.perf_counter()
    pruned = prune_model(result.model, result.masks)
    t_surgery = time.perf_counter() - t
    t = time.perf_counter()
    after = (
        evaluate_model(pruned, tokenizer, task, eval_split, config.max_length, dev)
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
    report.update(
        {
            "eval_split": eval_split,
            "metric_before": before,
            "metric_after": after,
            "params_after": count_params(pruned),
            "seconds": round(time.perf_counter() - t_start, 3),
        }
    )
    report["params_kept"] = report["params_after"] / report["params_before"]
    pruned.kprune_masks = result.masks
    pruned.kprune_tokenizer = tokenizer
    return pruned, report


def _baseline_masked(scorer: str, model, task, config, tokenizer, device, progress) -> MaskedResult:
    model = frozen(model, device)
    t = time.perf_counter()
    data = task_sample(model, tokenizer, task, config, device)
    t_draw = time.perf_counter() - t
    model, masks, res = prune_baseline(
        scorer,
        model,
        data,
        task.spec.kind,
        config.reduction,
        config.seed,
        config.batch_size,
        device,
        progress,
    )
    report = {
        "task": task.spec.name,
        "metric": task.spec.metric,
        "config": {**vars(config)},
        "device": str(device),
        **res,
    }
    report["seconds_per_phase"] = {"sample": t_draw, **report["seconds_per_phase"]}
    return MaskedResult(model, masks, report, tokenizer)
