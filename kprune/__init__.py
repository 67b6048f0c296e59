"""kprune: retraining-free structured pruning of fine-tuned encoders (K-prune).

model, report = kprune.prune("data/teachers/minilm-l6/rt", "rt", kprune.PruneConfig(reduction=0.6))
kprune.save_pruned(model, "out/rt-0.6", report=report)
model = kprune.load_pruned("out/rt-0.6")
sparse, report = kprune.sparsify("data/teachers/minilm-l6/rt", "rt", kprune.SparsifyConfig(sparsity=0.9))
"""

from kprune.errors import KPruneError
from kprune.version import __version__

__all__ = [
    "KPruneError",
    "PruneConfig",
    "SparsifyConfig",
    "__version__",
    "load_pruned",
    "prune",
    "save_pruned",
    "sparsify",
]

# the API pulls in torch and transformers: each name is imported on first use only
_LAZY = {
    "prune": "kprune.pruning.assemble",
    "PruneConfig": "kprune.config",
    "save_pruned": "kprune.models.checkpoint",
    "load_pruned": "kprune.models.checkpoint",
    "sparsify": "kprune.sparse.sparsebert",
    "SparsifyConfig": "kprune.config",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
