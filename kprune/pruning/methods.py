"""The method registry: a name -> K-prune with some knobs changed, or a baseline.

``kprune`` and the ``kprune-*`` ablations are the K-prune loop with one switch changed (the
config overrides below); ``kwon``, ``magnitude`` and ``random`` are the baselines of
``kprune.pruning.baselines``. The method is the ``method`` section of the config
(``kprune.config.MethodConfig``); ``PruneConfig.resolved`` applies an ablation's change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kprune.errors import KPruneError


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
            {"strategy": "uniform"},
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
            "kprune-remeasure-layer",
            "K-prune re-measuring once per layer instead of once per sublayer",
            {"remeasure": "layer"},
        ),
        Method(
            "kprune-bf16",
            "K-prune with bfloat16 measurement passes (tuning stays float32)",
            {"dtype": "bfloat16"},
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


# SparseBERT and its ablations: the sparsify section with some knobs changed
SPARSIFY_METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "sparsebert",
            "SparseBERT: student from the pre-trained encoder, magnitude pruning during "
            "layer-wise distillation from the fine-tuned teacher",
        ),
        Method(
            "sparsebert-from-teacher",
            "SparseBERT with the student initialised as the fine-tuned teacher",
            {"student": "teacher"},
        ),
        Method(
            "sparsebert-no-kd",
            "gradual magnitude pruning on the task labels only (no distillation)",
            {"att_weight": 0.0, "hidden_weight": 0.0, "logit_weight": 0.0, "label_weight": 1.0},
        ),
        Method(
            "sparsebert-logits-kd",
            "SparseBERT distilling the teacher's prediction only (no attention or hidden states)",
            {"att_weight": 0.0, "hidden_weight": 0.0},
        ),
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise KPruneError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def run_key(name: str, config) -> tuple:
    """What a method actually runs under ``config``: two names with the same key (such as
    ``kprune`` and the ablation that spells out its default) are one computation."""
    method = get_method(name)
    if method.scorer is not None:
        return (method.scorer, tuple(sorted(config.replace(method=name).knobs().items())))
    resolved = config.replace(method=name).resolved().replace(method="kprune")
    return ("kprune", tuple(sorted(resolved.knobs().items())))
