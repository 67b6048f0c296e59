"""The reports of a run, every key typed and explained here, and built here only: K-prune's
(``Report``) and SparseBERT's (``SparseReport``).

``pruning_fields`` (what the masks give: FLOPs, units kept, the sample) is filled by the
sublayer loop and by the baselines alike; ``run_fields`` (task, method, config, teacher) and
``add_pruned`` (once the units are cut out) by the assembly; ``search_fields`` is what a
masks file records. It stays a plain dict (a TypedDict), so
that report.json, MLflow and the benchmark read it as they always did.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, TypedDict

from torch import nn

from kprune.pruning.flops import FlopsModel
from kprune.pruning.masks import Masks
from kprune.pruning.methods import SPARSIFY_METHODS
from kprune.pruning.search import SearchSpec
from kprune.train.evaluation import count_params
from kprune.version import __version__


class Report(TypedDict, total=False):
    # the run
    task: str
    metric: str  # the task's main metric (accuracy, f1, spearman, ...)
    method: str  # kprune, a kprune-* ablation, or a baseline
    config: dict[str, Any]  # the PruneConfig's sections
    device: str
    teacher: str  # DVC path: the teacher folder
    kprune_version: str
    mode: str | None  # iterative, oneshot, or None (a baseline without a loop)
    reduction: float
    sample: dict[str, Any]  # examples, tokens, fingerprint
    # what the masks keep
    flops_before: float  # of the encoder's heads and FFNs (kprune.pruning.flops)
    flops_after: float
    flops_budget: float
    flops_kept: float
    avg_seq_len: float  # the sample's, which the FLOPs model counts with
    params_before: int
    params_after: int  # once the units are cut out
    params_kept: float
    heads_per_layer: int
    neurons_per_layer: int
    kept_heads_per_layer: list[int]
    kept_neurons_per_layer: list[int]
    sublayers: list[dict[str, Any]]  # per sublayer: kept units, errors before/after tuning
    seconds_per_phase: dict[str, float]
    # kprune.prune only
    eval_split: str | None
    metric_before: dict[str, float] | None
    metric_after: dict[str, float] | None
    seconds: float
    # a latency budget's target, prediction and table (kprune.pruning.budget)
    latency_budget: dict[str, Any]
    # the CLI only
    latency: dict[str, Any]
    peak_rss_mb: float


def pruning_fields(
    model: nn.Module,
    data,
    flops: FlopsModel,
    masks: Masks,
    reduction: float,
    mode: str | None,
    sublayers: list[dict],
    seconds: dict[str, float],
    budget=None,
) -> Report:
    """What a set of masks on ``model`` (still full size) amounts to (with a latency
    ``budget``, kprune.pruning.budget.Budget, its target and prediction)."""
    layers, heads = masks.heads.shape
    neurons = masks.neurons.shape[1]
    kept = masks.kept_per_layer()
    latency = budget.fields(masks) if budget is not None else {}
    if latency:  # no FLOPs budget: the reduction is what the latency target came to
        reduction = round(1 - flops.kept(masks), 6)
    return Report(
        **latency,
        kprune_version=__version__,
        mode=mode,
        reduction=reduction,
        sample={k: data.meta[k] for k in ("examples", "tokens", "fingerprint")},
        flops_before=flops.whole(masks),
        flops_after=flops.of_masks(masks.heads, masks.neurons),
        flops_budget=flops.budget(reduction, layers, heads, neurons),
        avg_seq_len=flops.seq_len,
        params_before=count_params(model),
        kept_heads_per_layer=kept["heads"],
        kept_neurons_per_layer=kept["neurons"],
        heads_per_layer=heads,
        neurons_per_layer=neurons,
        sublayers=sublayers,
        seconds_per_phase=seconds,
        flops_kept=flops.kept(masks),
    )


def run_fields(sample_meta: dict, config, device, teacher: str | None = None) -> Report:
    """Which task (as the sample records it), method, configuration and teacher the run was."""
    report = Report(
        task=sample_meta["task"],
        metric=sample_meta["metric"],
        config=asdict(config),
        device=str(device),
        method=config.method.name,
    )
    if teacher is not None:
        report["teacher"] = str(teacher)
    return report


def search_fields(config, flops: FlopsModel, masks: Masks, seconds: dict) -> dict[str, Any]:
    """What a masks file records beside the masks: the reduction, how they were searched
    (K-prune's search settings, or the baseline's name), the FLOPs they keep, the seconds."""
    how = {"method": config.method.name}
    if config.method.scorer is None:
        how.update(asdict(SearchSpec.of(config)))
    return {
        "reduction": config.search.reduction,
        "search": how,
        "flops_kept": flops.kept(masks),
        "seconds": seconds,
    }


def add_pruned(report: Report, pruned: nn.Module) -> Report:
    """The parameter count of the physically pruned model."""
    report["params_after"] = count_params(pruned)
    report["params_kept"] = report["params_after"] / report["params_before"]
    return report


def evaluation_fields(
    report: Report,
    task,
    split: str,
    before: dict[str, float],
    after: dict[str, float],
    params_before: int,
    params_after: int,
) -> dict[str, Any]:
    """What the evaluate stage records of a pruned model (its ``report``) against its teacher
    on one ``split``: every metric before and after, the main one on its own, FLOPs, params."""
    m = task.spec.metric
    return {
        "task": task.spec.name,
        "metric": m,
        "split": split,
        "reduction": report["reduction"],
        "mode": report["mode"],
        "metric_before": before[m],
        "metric_after": after[m],
        "all_metrics_before": before,
        "all_metrics_after": after,
        "flops_before": report["flops_before"],
        "flops_after": report["flops_after"],
        "flops_kept": report["flops_kept"],
        "params_before": params_before,
        "params_after": params_after,
        "params_kept": params_after / params_before,
        "prune_seconds_per_phase": report["seconds_per_phase"],
    }


# A SparseBERT run.

COMBINED = "kprune+sparsebert"  # the method of a SparseBERT run whose student is a K-prune model


class SparseReport(TypedDict, total=False):
    task: str
    metric: str  # the task's main metric
    method: str  # a SparseBERT variant (kprune.pruning.methods.SPARSIFY_METHODS) or COMBINED
    description: str
    teacher: str  # the fine-tuned teacher folder
    student_init: str  # pretrained, teacher, or the K-prune folder the student started from
    base: str | None  # the pre-trained encoder of a pretrained student
    sparsity: float  # asked: the fraction of each encoder matrix set to zero
    sparsity_reached: dict[str, Any]  # params, nonzero, sparsity (kprune.sparse.schedule)
    matrix_params: int  # weights of the student's encoder matrices
    matrix_nonzero: int
    matrix_nonzero_fraction_of_dense: float  # nonzero weights over the dense teacher's
    flops_kept: float  # of the K-prune student (1.0 from a dense one)
    metric_before: dict[str, dict[str, float]]  # the teacher's: split -> metric -> value
    metric_after: dict[str, dict[str, float]]  # the student's
    history: list[dict[str, Any]]  # per epoch: step, sparsity, running losses, dev metrics
    steps: int
    mask_updates: int
    device: str
    train_seconds: float
    seconds: float
    config: dict[str, Any]  # the SparsifyConfig


def sparse_fields(
    task, cfg, teacher, base: str | None, from_pruned=None, pruned_report: dict | None = None
) -> SparseReport:
    """Which task, method, configuration and starting point the SparseBERT run was: a
    student from ``from_pruned`` (a K-prune folder, whose ``pruned_report`` gives the FLOPs
    kept) is the combination, any other the method's ``cfg.student``."""
    combined = from_pruned is not None
    return SparseReport(
        task=task.spec.name,
        metric=task.spec.metric,
        method=COMBINED if combined else cfg.method,
        description=SPARSIFY_METHODS[cfg.method].description,
        teacher=str(teacher),
        student_init=str(from_pruned) if combined else cfg.student,
        base=base,
        sparsity=cfg.sparsity,
        flops_kept=pruned_report.get("flops_kept") if pruned_report else 1.0,
        config=asdict(cfg),
    )


def add_trained(
    report: SparseReport, reached: dict, dense_params: int, before: dict, after: dict
) -> SparseReport:
    """What the training reached: the masks' sparsity and the metrics before and after."""
    report.update(
        sparsity_reached=reached,
        matrix_params=reached["params"],
        matrix_nonzero=reached["nonzero"],
        matrix_nonzero_fraction_of_dense=reached["nonzero"] / dense_params,
        metric_before=before,
        metric_after=after,
    )
    return report


def sparse_summary(r: SparseReport) -> dict[str, Any]:
    """The numbers a results row shows: the main metric before (the teacher) and after on dev
    (``metric_before``, ``metric_after``, as in a K-prune row) and test, the nonzero weights,
    the FLOPs kept and the training time."""
    m = r["metric"]
    return {
        "kind": "sparsebert",
        "method": r["method"],
        "sparsity": r["sparsity"],
        "metric": m,
        "metric_before": r["metric_before"]["dev"][m],
        "metric_after": r["metric_after"]["dev"][m],
        "test_before": r["metric_before"]["test"][m],
        "test_after": r["metric_after"]["test"][m],
        "matrix_params": r["matrix_params"],
        "matrix_nonzero": r["matrix_nonzero"],
        "matrix_nonzero_fraction": r["matrix_nonzero_fraction_of_dense"],
        "flops_kept": r["flops_kept"],
        "train_seconds": r["train_seconds"],
    }
