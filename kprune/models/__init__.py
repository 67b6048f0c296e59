"""Model families and checkpoints: the family adapters, loading models and tokenizers,
saving and loading pruned folders, and the modeling file a pruned folder carries."""
