"""Persisted pipeline artifacts: round trips, and corruption detected (never used)."""

import pytest
import torch

from kprune.data.sample import draw_sample, load_sample, materialise, save_sample
from kprune.errors import KPruneError
from kprune.models.adapters import get_adapter
from kprune.models.checkpoint import load_model
from kprune.pruning.flops import FlopsModel
from kprune.pruning.knowledge import MeasureSpec
from kprune.pruning.score_tables import (
    knowledge_from_tables,
    measure_initial,
    measure_knowledge,
    read_scores,
    to_knowledge,
    write_scores,
)
from tests.helpers import make_tiny_model, sentiment_frame, tiny_tokenizer


@pytest.fixture(scope="module")
def model_and_sample(tmp_path_factory):
    folder = make_tiny_model(tmp_path_factory.mktemp("m"))
    model = load_model(str(folder))
    data = draw_sample(model, tiny_tokenizer(), sentiment_frame(60), 600, 0, 8, 16, "cpu")
    return model, data


def test_sample_round_trip(model_and_sample, tmp_path):
    _, data = model_and_sample
    save_sample(data, tmp_path / "s.safetensors")
    back = load_sample(tmp_path / "s.safetensors")
    assert back.input_ids == data.input_ids and back.meta == data.meta
    assert torch.equal(torch.stack(back.teacher_logits), torch.stack(data.teacher_logits))
    assert torch.equal(back.labels, data.labels)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_sample_is_detected(model_and_sample, tmp_path, damage):
    _, data = model_and_sample
    path = tmp_path / "s.safetensors"
    save_sample(data, path)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw[-10] ^= 0xFF  # a byte inside the tensors
    path.write_bytes(bytes(raw))
    with pytest.raises(KPruneError, match="corrupt"):
        load_sample(path)


def test_score_table_round_trip_and_corruption(model_and_sample, tmp_path):
    model, data = model_and_sample
    spec = MeasureSpec("classification", 2.0, "fisher")
    df, meta = measure_initial(model, data, spec, 8, "cpu", ("k_pred", "k_rep"))
    assert set(df["sublayer"]) == {"mha", "ffn"} and len(df) == 2 * (4 + 64)
    write_scores(df, tmp_path / "k.parquet", meta)
    back, back_meta = read_scores(tmp_path / "k.parquet")
    assert back_meta["sample"] == data.meta["fingerprint"] and back_meta["gamma"] == 2.0
    k = measure_knowledge(model, data, spec, 8, "cpu")
    k2 = to_knowledge(back, 2, 4, 64)
    assert torch.allclose(k2.rep_neurons, k.rep_neurons) and torch.allclose(
        k2.pred_heads, k.pred_heads
    )
    raw = (tmp_path / "k.parquet").read_bytes()
    (tmp_path / "k.parquet").write_bytes(raw[: len(raw) - 40])
    with pytest.raises(KPruneError, match="corrupt"):
        read_scores(tmp_path / "k.parquet")


def test_tables_rebuild_the_knowledge_of_the_loop(model_and_sample):
    model, data = model_and_sample
    rep, _ = measure_initial(
        model, data, MeasureSpec("classification", 2.0, "paper", False), 8, "cpu", ("k_rep",)
    )
    pred, _ = measure_initial(
        model, data, MeasureSpec("classification", 2.0, "fisher"), 8, "cpu", ("k_pred",)
    )
    k = knowledge_from_tables(rep, pred, get_adapter(model).dims(model))
    direct = measure_knowledge(model, data, MeasureSpec("classification", 2.0, "fisher"), 8, "cpu")
    assert torch.allclose(k.rep_heads, direct.rep_heads)
    assert torch.allclose(k.pred_neurons, direct.pred_neurons)


def test_label_importance_needs_and_uses_labels(model_and_sample):
    model, data = model_and_sample
    k = measure_knowledge(model, data, MeasureSpec("classification", 1.0, "label"), 8, "cpu")
    assert k.pred_heads.max() > 0
    flops = FlopsModel(data.meta["avg_len"], 32, 8)
    assert flops.head > flops.neuron
    sample = materialise(model, get_adapter(model), data, 8, "cpu")
    assert all(b.labels is not None for b in sample.batches)
