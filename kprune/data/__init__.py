"""Data: the task registry, raw sources and the pinned fetch, cleaning and splits,
batching, and the pruning sample."""
