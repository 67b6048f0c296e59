"""Knowledge-preserving mask search (KPMS): which units of the target sublayer to keep.

Scores: Z_neuron = (K_pred + lam*K_rep) / F_neuron and Z_head = mu*(K_pred + lam*K_rep) /
F_head. Candidates are the units of the target sublayer and of every sublayer above it;
sorted by score, the highest are kept while their cumulative FLOPs fit the budget left
after the finished sublayers. Only the target sublayer's part is applied. O(n log n).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kprune import config as C
from kprune.pruning.flops import FlopsModel
from kprune.pruning.knowledge import Knowledge
from kprune.pruning.latency_table import LatencyCost
from kprune.pruning.masks import Masks

Cost = FlopsModel | LatencyCost  # what a search budget counts


@dataclass(frozen=True)
class SearchSpec:
    """How unit scores are formed and masks chosen (defaults: kprune.config.SearchConfig)."""

    lam: float = C.SearchConfig.lam
    mu: float = C.SearchConfig.mu
    use_pred: bool = C.SearchConfig.use_pred
    use_rep: bool = C.SearchConfig.use_rep
    strategy: str = C.SearchConfig.strategy  # uniform: every sublayer the same kept fraction

    @classmethod
    def of(cls, config: C.PruneConfig) -> SearchSpec:
        q = config.search
        return cls(q.lam, q.mu, q.use_pred, q.use_rep, q.strategy)


def unit_scores(k: Knowledge, flops: Cost, spec: SearchSpec):
    """(head scores [L, H], neuron scores [L, N]) from the knowledge tables."""
    kh = (k.pred_heads if spec.use_pred else 0) + (spec.lam * k.rep_heads if spec.use_rep else 0)
    kn = (k.pred_neurons if spec.use_pred else 0) + (
        spec.lam * k.rep_neurons if spec.use_rep else 0
    )
    return _finite(spec.mu * kh / flops.head), _finite(kn / flops.neuron)


def _finite(scores):
    """A unit whose knowledge is NaN or infinite ranks last: it is the first to be pruned."""
    if not isinstance(scores, torch.Tensor):
        return scores
    return torch.where(torch.isfinite(scores), scores, torch.full_like(scores, float("-inf")))


def finished_flops(masks: Masks, target: int, flops: Cost) -> float:
    """FLOPs (or ms: a latency budget) kept in the sublayers below ``target`` (their masks are final)."""
    layer, is_mha = target // 2, target % 2 == 0
    heads_done = layer if is_mha else layer + 1
    return flops.of_masks(masks.heads[:heads_done], masks.neurons[:layer])


def uniform(
    k: Knowledge, masks: Masks, target: int, keep: float, flops: FlopsModel, spec: SearchSpec
) -> torch.Tensor:
    """The target sublayer's top units under a uniform per-layer ratio (no cross-layer
    search): every layer keeps the fraction ``keep`` of its FLOPs. The attention sublayer
    keeps round(keep * H) heads (fewer if they alone would exceed the layer's share); the FFN
    sublayer above it fills the rest of the layer's share with neurons, so the budget is met
    to within one neuron per layer, as KPMS meets it."""
    layer, is_mha = target // 2, target % 2 == 0
    head_scores, neuron_scores = unit_scores(k, flops, spec)
    heads, neurons = head_scores.shape[1], neuron_scores.shape[1]
    share = keep * flops.of_counts(heads, neurons)
    if is_mha:
        scores = head_scores[layer]
        n = min(round(keep * heads), int(share // flops.head))
    else:
        scores = neuron_scores[layer]
        left = share - float(masks.heads[layer].sum()) * flops.head
        n = min(neurons, max(0, int(left * (1 + 1e-9) // flops.neuron)))
    mask = torch.zeros_like(scores)
    mask[torch.argsort(-scores, stable=True)[:n]] = 1.0
    return mask


def kpms(
    k: Knowledge, masks: Masks, target: int, budget: float, flops: Cost, spec: SearchSpec
) -> torch.Tensor:
    """0/1 mask of the target sublayer's units (heads for even targets, neurons for odd).
    ``flops`` is what the budget counts: the FLOPs model (the paper) or a latency table's
    ``LatencyCost``, whose charges depend on how many units of a sublayer are taken."""
    layer, is_mha = target // 2, target % 2 == 0
    if spec.strategy == "uniform":
        return uniform(k, masks, target, budget / flops.whole(masks), flops, spec)
    head_scores, neuron_scores = unit_scores(k, flops, spec)
    first_head_layer = layer if is_mha else layer + 1
    if isinstance(flops, LatencyCost):
        head_scores = _flat_part_first(head_scores, flops.flat("head"))
        neuron_scores = _flat_part_first(neuron_scores, flops.flat("neuron"))
    hs = head_scores[first_head_layer:].flatten()
    ns = neuron_scores[layer:].flatten()
    scores = torch.cat([hs, ns]).double()
    remaining = budget - finished_flops(masks, target, flops)
    order = torch.argsort(-scores, stable=True)
    if isinstance(flops, LatencyCost):
        heads, neurons = head_scores.shape[1], neuron_scores.shape[1]
        sublayer = torch.cat(
            [
                torch.arange(first_head_layer, len(head_scores)).repeat_interleave(heads),
                torch.arange(layer, len(neuron_scores)).repeat_interleave(neurons),
            ]
        )
        is_head = torch.arange(len(scores)) < len(hs)
        charged = flops.charges(sublayer[order], is_head[order])
    else:
        costs = torch.cat([torch.full_like(hs, flops.head), torch.full_like(ns, flops.neuron)])
        charged = costs[order].double()
    keep_sorted = torch.cumsum(charged, 0) <= remaining * (1 + 1e-9)
    keep_sorted = torch.cummin(keep_sorted.int(), 0).values.bool()  # a prefix of the order
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep[order[keep_sorted]] = True
    if is_mha:
        heads = head_scores.shape[1]
        return keep[:heads].float()
    neurons = neuron_scores.shape[1]
    return keep[len(hs) : len(hs) + neurons].float()


def _flat_part_first(scores: torch.Tensor, flat: int) -> torch.Tensor:
    """Scores [L, units] where each sublayer's ``flat`` best units share its best unit's
    score: once a sublayer keeps one unit, the rest of its table's flat part costs nothing,
    so it is taken with it (and a sublayer that keeps none saves its whole cost)."""
    if flat <= 1:
        return scores
    ranked = torch.argsort(-scores, dim=1, stable=True)[:, :flat]
    out = scores.clone()
    out.scatter_(1, ranked, scores.max(dim=1, keepdim=True).values.expand(-1, flat))
    return out


def search_masks(
    k: Knowledge, flops: Cost, reduction: float, spec: SearchSpec, budget: float | None = None
) -> Masks:
    """One-shot KPMS: the bottom-up search with one set of scores gives every layer's mask,
    at the FLOPs budget of ``reduction`` (or at ``budget``, what ``flops`` counts)."""
    layers, heads = k.rep_heads.shape
    neurons = k.rep_neurons.shape[1]
    masks = Masks.ones(layers, heads, neurons)
    if budget is None:
        budget = flops.budget(reduction, layers, heads, neurons)
    for s in range(2 * layers):
        unit = kpms(k, masks, s, budget, flops, spec)
        (masks.heads if s % 2 == 0 else masks.neurons)[s // 2] = unit
    return masks


def heads_neurons_search(
    head_imp: torch.Tensor, neuron_imp: torch.Tensor, budget: float, flops: FlopsModel
) -> Masks:
    """Kwon et al.'s search: for each head count h, fill the rest of the budget with the most
    important neurons; keep the (h, n) with the largest summed importance."""
    h_sorted, h_order = torch.sort(head_imp.flatten().double(), descending=True, stable=True)
    n_sorted, n_order = torch.sort(neuron_imp.flatten().double(), descending=True, stable=True)
    cum_h = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(h_sorted, 0)])
    cum_n = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(n_sorted, 0)])
    hs = torch.arange(len(h_sorted) + 1, dtype=torch.float64)
    ns = torch.floor((budget - hs * flops.head) / flops.neuron).clamp(max=len(n_sorted))
    feasible = ns >= 0
    value = torch.where(
        feasible,
        cum_h + cum_n[ns.clamp(min=0).long()],
        torch.tensor(float("-inf"), dtype=torch.float64),
    )
    h = int(torch.argmax(value))
    n = int(ns[h])
    heads = torch.zeros(head_imp.numel())
    heads[h_order[:h]] = 1
    neurons = torch.zeros(neuron_imp.numel())
    neurons[n_order[:n]] = 1
    return Masks(heads.view_as(head_imp), neurons.view_as(neuron_imp))


def rearrange(mask: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Kwon et al.'s mask rearrangement for one layer's units: keep the layer's count, but
    choose the pruned set P to make ||sum_{i in P} g_i||^2 small, where g_i holds unit i's
    gradient on each batch (``grads``: [batches, units]; a block-diagonal Fisher estimate of
    the loss increase, so units whose gradients cancel can be pruned together).

    Greedy, as they describe it: start from the lowest-importance units; take the others in
    ascending importance, each time adding one to P and then dropping from P the unit whose
    removal leaves the smallest squared norm."""
    n_pruned = int((mask == 0).sum())
    if n_pruned == 0 or n_pruned == mask.numel():
        return mask.clone()
    g = grads.t().double()  # [units, batches]
    order = torch.argsort((g * g).sum(1), stable=True).tolist()
    pruned = order[:n_pruned]
    total = g[pruned].sum(0)
    for unit in order[n_pruned:]:
        pruned.append(unit)
        total = total + g[unit]
        left = total.unsqueeze(0) - g[pruned]  # the sum without each member
        drop = int(torch.argmin((left * left).sum(1)))
        total = left[drop]
        pruned.pop(drop)
    out = torch.ones_like(mask)
    out[pruned] = 0
    return out


def rearrange_masks(masks: Masks, grads_heads: torch.Tensor, grads_neurons: torch.Tensor) -> Masks:
    """``rearrange`` applied to every layer's heads and neurons (counts per layer kept)."""
    heads = torch.stack([rearrange(m, grads_heads[:, i]) for i, m in enumerate(masks.heads)])
    neurons = torch.stack([rearrange(m, grads_neurons[:, i]) for i, m in enumerate(masks.neurons)])
    return Masks(heads, neurons)
