"""Fine-tuning, evaluation and task metrics."""
