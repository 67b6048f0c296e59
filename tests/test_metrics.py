"""The metrics a user may choose as a task's main one, against an independent implementation,
and the --metric choice through load_task and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from kprune.data.tasks import METRICS, load_task, with_metric
from kprune.errors import KPruneError
from kprune.train.metrics import compute_metrics, macro_f1, mcc, pearson

sk = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("classes", [2, 3, 6])
@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_equal_sklearns(classes, seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, classes, 300)
    pred = np.where(rng.random(300) < 0.6, gold, rng.integers(0, classes, 300))
    assert macro_f1(pred, gold) == pytest.approx(sk.f1_score(gold, pred, average="macro"))
    assert mcc(pred, gold) == pytest.approx(sk.matthews_corrcoef(gold, pred))


def test_constant_predictions_have_no_correlation():
    gold = np.array([0, 1, 0, 1])
    assert mcc(np.zeros(4, dtype=int), gold) == 0.0
    assert pearson(np.ones(4), gold.astype(float)) == 0.0


def test_pearson_equals_numpys():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert pearson(a, a + b) == pytest.approx(np.corrcoef(a, a + b)[0, 1])


def test_every_choosable_metric_is_computed():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    got = compute_metrics(logits, np.array([0, 1, 1]), "classification")
    assert set(METRICS["classification"]) <= set(got)
    got = compute_metrics(np.array([0.1, 0.5, 0.9]), np.array([0.0, 1.0, 2.0]), "regression")
    assert set(METRICS["regression"]) <= set(got)


def test_metric_choice_changes_the_main_metric(sentiment_csv):
    task = load_task(str(sentiment_csv))
    assert task.spec.metric == "f1"  # a binary task of the user's: F1 of label 1
    assert load_task(str(sentiment_csv), metric="macro-f1").spec.metric == "macro-f1"
    with pytest.raises(KPruneError, match="--metric spearman does not fit task .* accuracy, f1"):
        with_metric(task, "spearman")


def test_the_pipelines_evaluation_and_export_report_the_chosen_metric(tmp_path):
    """params.yaml evaluate.metric reaches the evaluate stage (its main metric) and the export
    stage (the dev metric of each graph)."""
    from kprune.config import EvaluateConfig, ExportConfig, PruneConfig
    from kprune.models.checkpoint import save_pruned
    from kprune.pruning.assemble import prune
    from stages import evaluate as evaluate_stage
    from stages import export as export_stage
    from tests.helpers import make_tiny_teacher

    teacher = make_tiny_teacher(tmp_path)
    csv = str(tmp_path / "s.csv")
    model, report = prune(teacher, csv, PruneConfig(tokens=1500, max_length=16), progress=False)
    save_pruned(model, tmp_path / "pruned", report=report)
    cfg = EvaluateConfig(metric="mcc", latency=False)
    result = evaluate_stage.evaluate(str(teacher), str(tmp_path / "pruned"), csv, None, cfg, 16)
    assert result["metric"] == "mcc"
    assert result["metric_after"] == result["all_metrics_after"]["mcc"]
    record = export_stage.make(
        str(tmp_path / "pruned"), csv, None, str(tmp_path / "onnx"), ExportConfig(int8=False), "mcc"
    )
    assert record.metric["name"] == "mcc"
    with pytest.raises(KPruneError, match="evaluate.metric must be one of"):
        EvaluateConfig(metric="bleu")
