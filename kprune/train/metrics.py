"""Task metrics: accuracy, F1 (binary: positive class 1; multi-class: macro), macro-F1 (the
mean over every class), MCC (Matthews; its multi-class form), Spearman, Pearson.

A task's main metric (the one pruning reports and a target's tolerance is in) is its
registered one or, for user data, F1 of label 1 when binary and accuracy otherwise; a user
chooses another with ``--metric`` among those of the task's kind (``kprune.data.tasks.METRICS``)."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from kprune.errors import KPruneError


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((pred == gold).mean())


def _class_f1(pred: np.ndarray, gold: np.ndarray, c) -> float:
    tp = float(((pred == c) & (gold == c)).sum())
    fp = float(((pred == c) & (gold != c)).sum())
    fn = float(((pred != c) & (gold == c)).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def f1(pred: np.ndarray, gold: np.ndarray) -> float:
    classes = np.unique(gold)
    positives = [1] if set(classes.tolist()) <= {0, 1} else classes.tolist()
    return float(np.mean([_class_f1(pred, gold, c) for c in positives]))


def macro_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    """F1 of every class seen in gold or predicted, averaged (a binary task's both classes)."""
    classes = np.union1d(np.unique(gold), np.unique(pred)).tolist()
    return float(np.mean([_class_f1(pred, gold, c) for c in classes]))


def mcc(pred: np.ndarray, gold: np.ndarray) -> float:
    """Matthews correlation (Gorodkin's multi-class form; 0 when either side is constant)."""
    classes = np.union1d(np.unique(gold), np.unique(pred))
    index = {c: i for i, c in enumerate(classes.tolist())}
    confusion = np.zeros((len(classes), len(classes)))
    for g, p in zip(gold.tolist(), pred.tolist(), strict=True):
        confusion[index[g], index[p]] += 1
    n, correct = confusion.sum(), np.trace(confusion)
    truth, predicted = confusion.sum(1), confusion.sum(0)
    cov = correct * n - float(truth @ predicted)
    denom = np.sqrt((n * n - float(predicted @ predicted)) * (n * n - float(truth @ truth)))
    return float(cov / denom) if denom > 0 else 0.0


def pearson(pred: np.ndarray, gold: np.ndarray) -> float:
    if np.std(pred) == 0 or np.std(gold) == 0:
        return 0.0
    return float(np.corrcoef(pred, gold)[0, 1])


def spearman(pred: np.ndarray, gold: np.ndarray) -> float:
    if np.std(pred) == 0 or np.std(gold) == 0:
        return 0.0
    return float(spearmanr(pred, gold).statistic)


def compute_metrics(logits: np.ndarray, labels: np.ndarray, kind: str) -> dict[str, float]:
    """All metrics that fit a task kind, from model outputs and gold labels."""
    if kind == "regression":
        pred = logits.reshape(-1)
        gold = labels.astype(float)
        return {
            "spearman": spearman(pred, gold),
            "pearson": pearson(pred, gold),
            "mse": float(((pred - gold) ** 2).mean()),
        }
    if kind == "classification":
        pred = logits.argmax(-1)
        return {
            "accuracy": accuracy(pred, labels),
            "f1": f1(pred, labels),
            "macro-f1": macro_f1(pred, labels),
            "mcc": mcc(pred, labels),
        }
    raise KPruneError(f"no metrics for task kind '{kind}' here")
