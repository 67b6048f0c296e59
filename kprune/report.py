"""The report of a pruning run: every key typed and explained here, and built here only.

``pruning_fields`` (what the masks give: FLOPs, units kept, the sample) is filled by the
sublayer loop and by the baselines alike; ``run_fields`` (task, method, config) by the
assembly; ``add_pruned`` once the units are cut out. It stays a plain dict (a TypedDict), so
that report.json, MLflow and the benchmark read it as they always did.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, TypedDict

from torch import nn

from kprune.evaluation import count_params
from kprune.flops import FlopsModel
from kprune.masks import Masks
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
    flops_before: float  # of the encoder's heads and FFNs (kprune.flops)
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
) -> Report:
    """What a set of masks on ``model`` (still full size) amounts to."""
    layers, heads = masks.heads.shape
    neurons = masks.neurons.shape[1]
    total = flops.of_counts(layers * heads, layers * neurons)
    after = flops.of_masks(masks.heads, masks.neurons)
    kept = masks.kept_per_layer()
    return Report(
        kprune_version=__version__,
        mode=mode,
        reduction=reduction,
        sample={k: data.meta[k] for k in ("examples", "tokens", "fingerprint")},
        flops_before=total,
        flops_after=after,
        flops_budget=flops.budget(reduction, layers * heads, layers * neurons),
        avg_seq_len=flops.seq_len,
        params_before=count_params(model),
        kept_heads_per_layer=kept["heads"],
        kept_neurons_per_layer=kept["neurons"],
        heads_per_layer=heads,
        neurons_per_layer=neurons,
        sublayers=sublayers,
        seconds_per_phase=seconds,
        flops_kept=after / total,
    )


def run_fields(task, config, device) -> Report:
    """Which task, method and configuration the run was."""
    return Report(
        task=task.spec.name,
        metric=task.spec.metric,
        config=asdict(config),
        device=str(device),
        method=config.method.name,
    )


def add_pruned(report: Report, pruned: nn.Module) -> Report:
    """The parameter count of the physically pruned model."""
    report["params_after"] = count_params(pruned)
    report["params_kept"] = report["params_after"] / report["params_before"]
    return report
