"""kprune: retraining-free structured pruning of fine-tuned encoders (K-prune)."""

from kprune.errors import KPruneError

__version__ = "0.1.0"
__all__ = ["KPruneError", "__version__"]
