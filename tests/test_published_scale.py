"""K_rep and K_pred equal a brute-force computation of the published formulas (Park et al.,
ICLR 2024), on the scale its lambda and mu were tuned on; tables of another scale are refused.

The brute force uses only the transformers model, hooks on the output projections and
autograd: no kprune measurement code.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification

from kprune.data.batching import Encoded, bucket_batches, collate
from kprune.data.sample import draw_sample, materialise
from kprune.errors import KPruneError
from kprune.models.adapters import get_adapter
from kprune.pruning.knowledge import SCORE_SCALE, MeasureSpec, measure
from kprune.pruning.score_tables import knowledge_frame, read_scores, write_scores
from tests.helpers import make_tiny_model, sentiment_frame, tiny_tokenizer

BATCH, GAMMA = 8, 2.0
CLASSIFIER_GAIN = 50.0


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A tiny random teacher, a student whose encoder weights differ from it (so the KL
    gradient is not zero), the sample drawn on the teacher, and its batches' indices."""
    folder = make_tiny_model(tmp_path_factory.mktemp("scale") / "m")
    teacher = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():  # logits of order 1, so p_student - p_teacher is not lost to float32
        teacher.classifier.weight.mul_(CLASSIFIER_GAIN)
    student = copy.deepcopy(teacher)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in student.named_parameters():
            if ".encoder." in name and p.dim() == 2:
                p.add_(0.05 * torch.randn_like(p))
    data = draw_sample(teacher, tiny_tokenizer(), sentiment_frame(60), 10_000, 0, BATCH, 16, "cpu")
    enc = Encoded(data.input_ids, data.token_type_ids, np.zeros(len(data.input_ids)), 0)
    batches = bucket_batches(enc.lengths, BATCH, shuffle=False)
    return student, data, enc, batches


def _measured(student, data, pred_form="paper", rep_form="paper"):
    adapter = get_adapter(student)
    sample = materialise(student, adapter, data, BATCH, "cpu")
    views = [adapter.view(layer) for layer in adapter.layers(student)]
    spec = MeasureSpec("classification", GAMMA, pred_form, rep_form=rep_form)
    return measure(
        views, lambda h: adapter.logits(student, h), sample, 0, adapter.dims(student), spec
    )


def _projections(model):
    """Per layer: (attention output projection, FFN output projection) of a BERT model."""
    return [
        (layer.attention.output.dense, layer.output.dense) for layer in model.bert.encoder.layer
    ]


def _masked(model, masks: dict):
    """Forward pre-hooks multiplying each projection's input by ``masks[(layer, is_mha)]``."""
    handles = []
    for i, (attn, ffn) in enumerate(_projections(model)):
        for proj, is_mha in ((attn, True), (ffn, False)):
            if (i, is_mha) in masks:
                m = masks[(i, is_mha)]
                handles.append(proj.register_forward_pre_hook(lambda _, a, m=m: (a[0] * m,)))
    return handles


def _brute_rep(student, enc, batches, layer: int, is_mha: bool, width: int) -> torch.Tensor:
    """Per input dim of the sublayer's output projection: the mean squared change of the
    sublayer output (over real tokens and output dims) when that one dim is set to 0. Only
    the projection's term of the output (residual + projection + bias) changes, so the
    projection is rerun on the recorded input with each dim removed."""
    model = copy.deepcopy(student).double()
    proj = _projections(model)[layer][0 if is_mha else 1]
    errors = torch.zeros(width, dtype=torch.float64)
    count = 0
    for idx in batches:
        inp = collate(enc, idx)
        seen = []
        handle = proj.register_forward_hook(lambda _m, a, o, seen=seen: seen.append((a[0], o)))
        with torch.no_grad():
            model(input_ids=inp["input_ids"], attention_mask=inp["attention_mask"])
            handle.remove()
            h, full = (t[inp["attention_mask"].bool()] for t in seen[0])  # real tokens
            for j in range(width):
                cut = h.clone()
                cut[:, j] = 0
                errors[j] += ((full - proj(cut)) ** 2).sum()
        count += full.numel()
    return errors / count


def test_k_rep_equals_brute_force_removal_error(pair):
    student, data, enc, batches = pair
    k = _measured(student, data)
    cfg = student.config
    heads, head_dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    for layer in range(cfg.num_hidden_layers):
        per_dim = _brute_rep(student, enc, batches, layer, True, cfg.hidden_size)
        expected_heads = per_dim.view(heads, head_dim).mean(-1)  # mean over the head's dims
        expected_neurons = _brute_rep(student, enc, batches, layer, False, cfg.intermediate_size)
        torch.testing.assert_close(k.rep_heads[layer].double(), expected_heads, rtol=1e-5, atol=0)
        torch.testing.assert_close(
            k.rep_neurons[layer].double(), expected_neurons, rtol=1e-5, atol=0
        )


def test_exact_rep_form_is_the_whole_head_removal_error(pair):
    student, data, enc, batches = pair
    exact = _measured(student, data, rep_form="exact")
    paper = _measured(student, data)
    cfg = student.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    model = copy.deepcopy(student).double()
    layer, head = 1, 2
    proj = _projections(model)[layer][0]
    mask = torch.ones(cfg.hidden_size, dtype=torch.float64)
    mask[head * head_dim : (head + 1) * head_dim] = 0
    sq, count = 0.0, 0
    for idx in batches:
        inp = collate(enc, idx)
        valid = inp["attention_mask"].bool()
        out = []
        handle = proj.register_forward_hook(lambda _m, _a, o, out=out: out.append(o))
        with torch.no_grad():
            model(input_ids=inp["input_ids"], attention_mask=inp["attention_mask"])
            hooks = _masked(model, {(layer, True): mask})
            model(input_ids=inp["input_ids"], attention_mask=inp["attention_mask"])
        for h in [handle, *hooks]:
            h.remove()
        diff = (out[0] - out[1])[valid]
        sq += float((diff**2).sum())
        count += diff.numel()
    assert float(exact.rep_heads[layer, head]) == pytest.approx(sq / count, rel=1e-5)
    # neurons are the same in both forms; heads differ by about d_h (cross terms aside)
    torch.testing.assert_close(exact.rep_neurons, paper.rep_neurons)
    ratio = float(exact.rep_heads[layer].sum() / paper.rep_heads[layer].sum())
    assert head_dim / 4 < ratio < head_dim * 4


def test_paper_k_pred_equals_per_batch_autograd_divided_by_examples(pair):
    student, data, enc, batches = pair
    k = _measured(student, data)
    model = copy.deepcopy(student).double()
    cfg = model.config
    layers, heads = cfg.num_hidden_layers, cfg.num_attention_heads
    width = {True: cfg.hidden_size, False: cfg.intermediate_size}
    sums = {
        (i, m): torch.zeros(width[m], dtype=torch.float64) for i in range(layers) for m in (1, 0)
    }
    examples = 0
    for idx in batches:
        inp = collate(enc, idx)
        masks = {
            key: torch.ones(width[bool(key[1])], dtype=torch.float64, requires_grad=True)
            for key in sums
        }
        hooks = _masked(model, {(i, bool(m)): v for (i, m), v in masks.items()})
        z_s = model(input_ids=inp["input_ids"], attention_mask=inp["attention_mask"]).logits
        for h in hooks:
            h.remove()
        z_t = torch.stack([data.teacher_logits[i] for i in idx]).double()
        log_pt = F.log_softmax(z_t / GAMMA, -1)
        kl = (log_pt.exp() * (log_pt - F.log_softmax(z_s / GAMMA, -1))).sum(-1)
        loss = GAMMA**2 * kl.mean()  # the batch-mean distillation loss
        grads = torch.autograd.grad(loss, list(masks.values()))
        for key, g in zip(masks, grads, strict=True):
            sums[key] += 0.5 * g * g
        examples += len(idx)
    for i in range(layers):
        expected_heads = (sums[(i, 1)] / examples).view(heads, -1).mean(-1)
        expected_neurons = sums[(i, 0)] / examples
        assert expected_neurons.max() > 0  # the student differs from the teacher
        for got, want in ((k.pred_heads[i], expected_heads), (k.pred_neurons[i], expected_neurons)):
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * float(want.max()))


def test_table_of_another_score_scale_is_refused(pair, tmp_path):
    student, data, _, _ = pair
    from kprune.pruning.flops import flops_of

    df = knowledge_frame(_measured(student, data), flops_of(student, data))
    write_scores(df, tmp_path / "new.parquet", {"dims": [2, 4, 8, 32, 64]})
    _, meta = read_scores(tmp_path / "new.parquet")
    assert meta["score_scale"] == SCORE_SCALE
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "new.parquet")
    import json

    old = json.loads(table.schema.metadata[b"kprune"])
    old.pop("score_scale")  # as the tables written before the scale fix
    pq.write_table(
        table.replace_schema_metadata({b"kprune": json.dumps(old).encode()}),
        tmp_path / "old.parquet",
    )
    with pytest.raises(KPruneError, match="scale v1.*rerun the measure stage"):
        read_scores(tmp_path / "old.parquet")


def test_flow_cache_keys_change_with_the_score_definitions(tmp_path, monkeypatch):
    """The flows key every task on the library's source: a change of the score definitions
    gives new keys, so no cached table of the old scale is served."""
    import re
    import shutil
    from pathlib import Path

    import kprune
    from flows.keys import content_key

    lib = tmp_path / "kprune"
    shutil.copytree(Path(kprune.__file__).parent, lib, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(kprune, "__file__", str(lib / "__init__.py"))
    before = content_key("measure_rep", {"batch_size": 32})
    source = lib / "pruning" / "knowledge.py"
    source.write_text(
        re.sub(r"^SCORE_SCALE = (\d+)$", r"SCORE_SCALE = 9\1", source.read_text(), flags=re.M)
    )
    assert content_key("measure_rep", {"batch_size": 32}) != before
