"""MPNet: one relative-position bias table in the encoder, one column per head, added to every
layer's scores. After pruning, each layer must add the columns of the heads it kept."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

from kprune.models.checkpoint import load_pruned, save_pruned
from kprune.pruning.masks import Masks, apply_masks
from kprune.pruning.surgery import prune_model
from tests.helpers import make_tiny_model, tiny_tokenizer

HEADS = torch.tensor(  # 2 heads (not the first two), 1 head, none, all
    [[0.0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
)


def _model(tmp_path, head="seq"):
    folder = make_tiny_model(tmp_path / "m", "mpnet", 2, head=head, layers=4)
    cls = AutoModelForQuestionAnswering if head == "qa" else AutoModelForSequenceClassification
    return cls.from_pretrained(folder).eval()


def _inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 26, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _out(model, inputs):
    with torch.no_grad():
        o = model(**inputs)
    logits = torch.stack([o.start_logits, o.end_logits], -1) if hasattr(o, "start_logits") else None
    if logits is None:
        return o.logits
    return logits[inputs["attention_mask"].bool()]  # padded positions are not compared


def _hidden(model, inputs):
    """The encoder's last hidden states at the real tokens (the logits of a random tiny head
    are too small to show every difference)."""
    with torch.no_grad():
        h = model(**inputs, output_hidden_states=True).hidden_states[-1]
    return h[inputs["attention_mask"].bool()]


def _masks(seed=1):
    g = torch.Generator().manual_seed(seed)
    return Masks(HEADS.clone(), (torch.rand(4, 64, generator=g) > 0.5).float())


@pytest.mark.parametrize("head", ["seq", "qa"])
def test_masked_equals_pruned_with_each_layers_own_bias_columns(tmp_path, head):
    model, masks, x = _model(tmp_path, head), _masks(), _inputs()
    with apply_masks(model, masks):
        masked, hidden = _out(model, x), _hidden(model, x)
    pruned = prune_model(copy.deepcopy(model), masks)
    torch.testing.assert_close(_out(pruned, x), masked, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_hidden(pruned, x), hidden, atol=1e-5, rtol=1e-5)
    layers = pruned.mpnet.encoder.layer
    assert layers[0].attention.attn.head_index.tolist() == [1, 3]
    assert layers[1].attention.attn.head_index.tolist() == [2]
    assert not hasattr(layers[3].attention.attn, "head_index")  # every head: every column
    # the test can fail: the first columns instead of the kept heads' give other outputs
    layers[0].attention.attn.head_index = torch.tensor([0, 1])
    assert (_hidden(pruned, x) - hidden).abs().max() > 100 * 1e-5


def test_pruning_twice_composes_the_kept_heads(tmp_path):
    """A pruned model pruned again keeps the original index of each head it still has."""
    model, x = _model(tmp_path), _inputs()
    first = Masks(torch.tensor([[1.0, 1, 0, 1]] * 4), torch.ones(4, 64))
    once = prune_model(copy.deepcopy(model), first)
    second = Masks(torch.tensor([[0.0, 1, 1]] * 4), torch.ones(4, 64))  # of heads 0, 1, 3
    twice = prune_model(once, second)
    direct = prune_model(
        copy.deepcopy(model), Masks(torch.tensor([[0.0, 1, 0, 1]] * 4), first.neurons)
    )
    assert twice.mpnet.encoder.layer[0].attention.attn.head_index.tolist() == [1, 3]
    torch.testing.assert_close(_out(twice, x), _out(direct, x), atol=1e-6, rtol=1e-6)


def test_saved_pruned_mpnet_loads_back_with_its_head_index(tmp_path):
    model, masks, x = _model(tmp_path), _masks(), _inputs()
    pruned = prune_model(copy.deepcopy(model), masks)
    save_pruned(pruned, tmp_path / "p", masks, tiny_tokenizer())
    back = load_pruned(tmp_path / "p")
    assert back.mpnet.encoder.layer[0].attention.attn.head_index.tolist() == [1, 3]
    torch.testing.assert_close(_out(back, x), _out(pruned, x), atol=1e-6, rtol=1e-6)
    plain = AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "p", trust_remote_code=True
    ).eval()
    torch.testing.assert_close(_out(plain, x), _out(pruned, x), atol=1e-6, rtol=1e-6)


def test_kprune_and_sparsebert_run_on_a_fine_tuned_mpnet(tmp_path):
    """On sentence pairs, the whole K-prune run (sample, measurement with the position bias,
    search, tuning, surgery) meets the budget on an MPNet teacher, the pruned model exports
    to an ONNX graph equal to torch, and SparseBERT trains a student of it."""
    from kprune.config import PruneConfig, SparsifyConfig
    from kprune.data.tasks import load_task
    from kprune.deploy.export import export_onnx
    from kprune.models.checkpoint import save_pruned
    from kprune.pruning.assemble import prune
    from kprune.sparse.sparsebert import sparsify
    from tests.helpers import make_tiny_teacher, sentiment_frame

    # a sentence-pair task (premise, hypothesis), as SNLI is
    pairs = sentiment_frame(240).rename(columns={"text": "text_pair"})
    pairs.insert(0, "text", [f"film {i % 5}" for i in range(len(pairs))])
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    task = load_task(str(tmp_path / "pairs.csv"))
    assert task.spec.pair
    teacher = make_tiny_teacher(tmp_path, task=task, family="mpnet")
    cfg = PruneConfig(reduction=0.5, tokens=1500, max_length=16)
    pruned, report = prune(str(teacher), task, cfg, device="cpu", progress=False)
    assert report["flops_after"] <= report["flops_budget"] * (1 + 1e-9)
    assert report["metric_after"]["accuracy"] > 0.5
    assert sum(report["kept_heads_per_layer"]) < 8
    save_pruned(pruned, tmp_path / "pruned", report=report)
    record = export_onnx(tmp_path / "pruned", tmp_path / "m.onnx", task=task)
    assert record.max_abs_diff <= record.tolerance
    fast = {"epochs": 1.0, "batch_size": 16, "lr": 1e-3, "max_length": 16, "mask_updates": 4}
    _, sreport = sparsify(
        teacher,
        task,
        SparsifyConfig(sparsity=0.5, student="teacher", **fast),
        device="cpu",
        progress=False,
    )
    assert sreport["sparsity_reached"]["sparsity"] == pytest.approx(0.5, abs=0.01)
