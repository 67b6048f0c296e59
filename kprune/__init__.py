"""kprune: retraining-free structured pruning of fine-tuned encoders (K-prune).

model, report = kprune.prune("data/teachers/rt", "rt", kprune.PruneConfig(reduction=0.6))
kprune.save_pruned(model, "out/rt-0.6", report=report)
model = kprune.load_pruned("out/rt-0.6")
"""

from kprune.errors import KPruneError

__version__ = "0.1.0"
__all__ = ["KPruneError", "PruneConfig", "__version__", "load_pruned", "prune", "save_pruned"]


def __getattr__(name: str):
    # the API pulls in torch and transformers: import it on first use only
    if name in ("prune", "load_pruned", "save_pruned", "PruneConfig"):
        from kprune import api

        return getattr(api, name)
    raise AttributeError(name)
