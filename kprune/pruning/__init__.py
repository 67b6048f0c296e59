"""K-prune (Park et al., ICLR 2024) and its baselines: FLOPs, masks, knowledge, score
tables, mask search, weight tuning, the sublayer loop, surgery, the method registry, and
``assemble.prune``, the one assembly every entry point calls."""
