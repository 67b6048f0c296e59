"""Task metrics: accuracy, F1 (binary: positive class 1; multi-class: macro), Spearman."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from kprune.errors import KPruneError


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((pred == gold).mean())


def f1(pred: np.ndarray, gold: np.ndarray) -> float:
    classes = np.unique(gold)
    positives = [1] if set(classes.tolist()) <= {0, 1} else classes.tolist()
    scores = []
    for c in positives:
        tp = float(((pred == c) & (gold == c)).sum())
        fp = float(((pred == c) & (gold != c)).sum())
        fn = float(((pred != c) & (gold == c)).sum())
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def spearman(pred: np.ndarray, gold: np.ndarray) -> float:
    if np.std(pred) == 0 or np.std(gold) == 0:
        return 0.0
    return float(spearmanr(pred, gold).statistic)


def compute_metrics(logits: np.ndarray, labels: np.ndarray, kind: str) -> dict[str, float]:
    """All metrics that fit a task kind, from model outputs and gold labels."""
    if kind == "regression":
        pred = logits.reshape(-1)
        gold = labels.astype(float)
        return {"spearman": spearman(pred, gold), "mse": float(((pred - gold) ** 2).mean())}
    if kind == "classification":
        pred = logits.argmax(-1)
        return {"accuracy": accuracy(pred, labels), "f1": f1(pred, labels)}
    raise KPruneError(f"no metrics for task kind '{kind}' here")
