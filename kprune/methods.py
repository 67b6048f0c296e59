"""Pruning methods behind one API: K-prune, its ablations, and the baselines.

- ``kprune`` and ``kprune-*`` ablations: the K-prune loop with one switch changed.
- ``kwon``: Kwon et al. 2022: Fisher importance of unit masks from the task loss with
  ground-truth labels, their (heads, neurons) search, mask rearrangement (greedy, per layer,
  from per-batch gradients), and per-unit mask rescaling by damped least squares against the
  teacher's sublayer outputs (kept only where it lowers the error).
- ``magnitude`` / ``random``: weight-magnitude or random unit scores, the most valuable per
  FLOP kept to the same budget, no tuning.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from kprune.adapters import get_adapter
from kprune.errors import KPruneError
from kprune.evaluation import count_params
from kprune.knowledge import Knowledge, MeasureSpec
from kprune.masks import Masks
from kprune.modeling import frozen
from kprune.sample import SampleData
from kprune.search import SearchSpec, heads_neurons_search, rearrange_masks


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    overrides: dict = field(default_factory=dict)  # PruneConfig changes (K-prune variants)
    scorer: str | None = None  # baselines: magnitude, random, kwon


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("kprune", "K-prune (defaults)"),
        Method("kprune-no-pred", "K-prune without predictive knowledge", {"use_pred": False}),
        Method("kprune-no-rep", "K-prune without representational knowledge", {"use_rep": False}),
        Method(
            "kprune-no-kpms",
            "K-prune with a uniform per-layer ratio instead of KPMS",
            {"search_strategy": "uniform"},
        ),
        Method("kprune-no-tune", "K-prune without weight tuning (KPWT)", {"tune": False}),
        Method(
            "kprune-paper-pred",
            "K-prune, K_pred in the paper's KL-gradient form",
            {"pred_form": "paper"},
        ),
        Method(
            "kprune-fisher-pred", "K-prune, K_pred as per-example Fisher", {"pred_form": "fisher"}
        ),
        Method(
            "kprune-exact-rep",
            "K-prune, head K_rep as the exact whole-head removal error (about d_h x the paper's)",
            {"rep_form": "exact"},
        ),
        Method(
            "kprune-oneshot",
            "K-prune measured and searched once, then tuned bottom-up",
            {"mode": "oneshot"},
        ),
        Method(
            "kprune-bf16",
            "K-prune with bfloat16 measurement passes (tuning stays float32)",
            {"measure_dtype": "bfloat16"},
        ),
        Method(
            "kwon", "Kwon et al. 2022: label Fisher, (h, n) search, mask rescaling", scorer="kwon"
        ),
        Method(
            "magnitude", "weight magnitude per FLOP to the budget, no tuning", scorer="magnitude"
        ),
        Method("random", "random units to the budget, no tuning", scorer="random"),
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise KPruneError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}")
    return METHODS[name]


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
    method: Method,
    model: nn.Module,
    data: SampleData,
    kind: str,
    reduction: float,
    seed: int,
    batch_size: int,
    device: torch.device,
) -> tuple[Masks, dict]:
    """Masks of a baseline at the FLOPs budget, and the seconds its scoring took."""
    from kprune.steps import flops_of, measure_knowledge, search_masks

    t0 = time.perf_counter()
    flops = flops_of(model, data)
    if method.scorer == "kwon":
        k = measure_knowledge(
            model, data, MeasureSpec(kind, 1.0, "label", True, seed), batch_size, device
        )
        layers, heads, _, _, neurons = get_adapter(model).dims(model)
        budget = (1 - reduction) * flops.of_counts(layers * heads, layers * neurons)
        masks = heads_neurons_search(k.pred_heads, k.pred_neurons, budget, flops)
        if k.batch_grads_heads is not None:  # none when every batch was non-finite
            masks = rearrange_masks(masks, k.batch_grads_heads, k.batch_grads_neurons)
    else:
        h, n = (
            magnitude_scores(model) if method.scorer == "magnitude" else random_scores(model, seed)
        )
        k = Knowledge(torch.zeros_like(h), torch.zeros_like(n), h, n)
        masks = search_masks(
            k, flops, reduction, SearchSpec(lam=1.0, mu=1.0, use_pred=False, use_rep=True)
        )
    return masks, {"score_search": time.perf_counter() - t0}


def masker_for(method: Method) -> Callable | None:
    """None for K-prune variants (the default loop); a function for baselines."""
    return None if method.scorer is None else _baseline_masked


def _baseline_masked(method: Method, model, task, config, tokenizer, device, progress):
    from kprune.api import MaskedResult, task_sample
    from kprune.steps import flops_of, prune_tune

    model = frozen(model, device)
    t = time.perf_counter()
    data = task_sample(model, tokenizer, task, config, device)
    seconds = {"sample": time.perf_counter() - t}
    masks, s2 = baseline_masks(
        method,
        model,
        data,
        task.spec.kind,
        config.reduction,
        config.seed,
        config.batch_size,
        device,
    )
    seconds.update(s2)
    flops = flops_of(model, data)
    layers, heads, _, _, neurons = get_adapter(model).dims(model)
    total = flops.of_counts(layers * heads, layers * neurons)
    report = {
        "task": task.spec.name,
        "metric": task.spec.metric,
        "method": method.name,
        "config": {**vars(config)},
        "device": str(device),
        "reduction": config.reduction,
        "sample": {k: data.meta[k] for k in ("examples", "tokens", "fingerprint")},
        "flops_before": total,
        "flops_budget": (1 - config.reduction) * total,
        "avg_seq_len": flops.seq_len,
        "params_before": count_params(model),
        "heads_per_layer": heads,
        "neurons_per_layer": neurons,
        "sublayers": [],
    }
    if method.scorer == "kwon":  # mask rescaling against the teacher, sublayer by sublayer
        res = prune_tune(
            model,
            data,
            task.spec.kind,
            config.reduction,
            MeasureSpec(task.spec.kind, 1.0, "label"),
            SearchSpec(),
            mode="oneshot",
            tune=True,
            batch_size=config.batch_size,
            masks=masks,
            device=device,
            progress=progress,
            tune_mode="scale",
        )
        report["sublayers"] = res.report["sublayers"]
        seconds.update(res.report["seconds_per_phase"])
        model, masks = res.model, res.masks
    kept = masks.kept_per_layer()
    report.update(
        {
            "flops_after": flops.of_masks(masks.heads, masks.neurons),
            "kept_heads_per_layer": kept["heads"],
            "kept_neurons_per_layer": kept["neurons"],
            "seconds_per_phase": seconds,
        }
    )
    report["flops_kept"] = report["flops_after"] / total
    return MaskedResult(model, masks, report, tokenizer)


def config_for(method: Method, config):
    """The PruneConfig a K-prune variant runs with."""
    return replace(config, **method.overrides)


def run_key(name: str, config) -> tuple:
    """What a method actually runs under ``config``: two names with the same key (such as
    ``kprune`` and the ablation that spells out its default) are one computation."""
    method = get_method(name)
    if method.scorer is not None:
        return (method.scorer, tuple(sorted(vars(config).items())))
    return ("kprune", tuple(sorted(vars(config_for(method, config)).items())))
