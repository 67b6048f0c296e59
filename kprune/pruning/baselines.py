"""Baselines: unit masks at the FLOPs budget without K-prune's knowledge.

- ``kwon``: Kwon et al. 2022: Fisher importance of unit masks from the task loss with
  ground-truth labels, their (heads, neurons) search, mask rearrangement (greedy, per layer,
  from per-batch gradients), and per-unit mask rescaling by damped least squares against the
  teacher's sublayer outputs (kept only where it lowers the error).
- ``magnitude`` / ``random``: weight-magnitude or random unit scores, the most valuable per
  FLOP kept to the same budget, no tuning.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from kprune.config import PruneConfig
from kprune.data.sample import SampleData
from kprune.errors import KPruneError
from kprune.models.adapters import get_adapter
from kprune.models.loading import frozen
from kprune.pruning.flops import flops_of
from kprune.pruning.knowledge import Knowledge, MeasureSpec
from kprune.pruning.loop import prune_tune
from kprune.pruning.masks import Masks
from kprune.pruning.score_tables import measure_knowledge
from kprune.pruning.search import SearchSpec, heads_neurons_search, rearrange_masks, search_masks
from kprune.report import Report, pruning_fields

SCORERS = ("kwon", "magnitude", "random")


def magnitude_scores(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of squared weights a unit owns: Q/K/V rows and O columns of a head; the FFN row
    and column of a neuron."""
    adapter = get_adapter(model)
    layers, heads, head_dim, _, neurons = adapter.dims(model)
    h = torch.zeros(layers, heads)
    n = torch.zeros(layers, neurons)
    for i, layer in enumerate(adapter.layers(model)):
        v = adapter.view(layer)
        rows = sum((lin.weight.detach().float() ** 2).sum(1) for lin in (v.q, v.k, v.v))
        cols = (v.attn_out.weight.detach().float() ** 2).sum(0)
        h[i] = (rows + cols).view(heads, head_dim).sum(-1)
        n[i] = (v.ffn_in.weight.detach().float() ** 2).sum(1) + (
            v.ffn_out.weight.detach().float() ** 2
        ).sum(0)
    return h, n


def random_scores(model: nn.Module, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    layers, heads, _, _, neurons = get_adapter(model).dims(model)
    g = torch.Generator().manual_seed(seed)
    return torch.rand(layers, heads, generator=g), torch.rand(layers, neurons, generator=g)


def baseline_masks(
    model: nn.Module, data: SampleData, kind: str, config: PruneConfig, device
) -> tuple[Masks, dict]:
    """Masks of the baseline ``config.method`` names at the FLOPs budget, and the seconds
    its scoring took."""
    t0 = time.perf_counter()
    model = frozen(model, device)
    scorer = config.method.scorer
    reduction, seed = config.search.reduction, config.sample.seed
    flops = flops_of(model, data)
    if scorer not in SCORERS:
        raise KPruneError(
            f"method {config.method.name!r} is not a baseline; choose one of {SCORERS}"
        )
    if scorer == "kwon":
        k = measure_knowledge(
            model,
            data,
            MeasureSpec(kind, 1.0, "label", True, seed),
            config.sample.batch_size,
            device,
        )
        layers, heads, _, _, neurons = get_adapter(model).dims(model)
        budget = flops.budget(reduction, layers, heads, neurons)
        masks = heads_neurons_search(k.pred_heads, k.pred_neurons, budget, flops)
        if k.batch_grads_heads is not None:  # none when every batch was non-finite
            masks = rearrange_masks(masks, k.batch_grads_heads, k.batch_grads_neurons)
    else:
        h, n = magnitude_scores(model) if scorer == "magnitude" else random_scores(model, seed)
        k = Knowledge(torch.zeros_like(h), torch.zeros_like(n), h, n)
        masks = search_masks(
            k, flops, reduction, SearchSpec(lam=1.0, mu=1.0, use_pred=False, use_rep=True)
        )
    return masks, {"score_search": time.perf_counter() - t0}


def tune_baseline(
    model: nn.Module,
    data: SampleData,
    kind: str,
    config: PruneConfig,
    masks: Masks,
    seconds: dict,
    device: torch.device,
    progress: bool = True,
) -> tuple[nn.Module, Masks, Report]:
    """What a baseline does after its masks (for ``kwon``, its mask rescaling against the
    teacher, sublayer by sublayer; the others nothing): the full-size model, its masks and
    the loop's report fields."""
    scorer = config.method.scorer
    model = frozen(model, device)
    flops = flops_of(model, data)
    sublayers: list[dict] = []
    if scorer == "kwon":
        # Kwon et al.'s mask rescaling: one-shot masks, scales fitted bottom-up
        rescale = config.replace(mode="oneshot", tune=True)
        res = prune_tune(
            model,
            data,
            kind,
            rescale,
            masks=masks,
            device=device,
            progress=progress,
            tune_mode="scale",
        )
        sublayers = res.report["sublayers"]
        seconds = {**seconds, **res.report["seconds_per_phase"]}
        model, masks = res.model, res.masks
    mode = "oneshot" if scorer == "kwon" else None
    reduction = config.search.reduction
    report = pruning_fields(model, data, flops, masks, reduction, mode, sublayers, seconds)
    return model, masks, report
