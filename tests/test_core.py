"""Properties of the K-prune core on tiny seeded random models."""

import copy
import re

import pytest
import torch
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

from kprune.config import PruneConfig
from kprune.data.sample import build_sample
from kprune.data.tasks import load_task
from kprune.errors import KPruneError
from kprune.models.adapters import get_adapter
from kprune.models.checkpoint import load_model, load_pruned, save_pruned
from kprune.models.loading import frozen, load_tokenizer
from kprune.pruning.assemble import prune
from kprune.pruning.flops import FlopsModel
from kprune.pruning.forward import layer_norm, sublayer
from kprune.pruning.knowledge import MeasureSpec, measure
from kprune.pruning.masks import Masks, apply_masks
from kprune.pruning.search import SearchSpec, kpms
from kprune.pruning.surgery import prune_model
from kprune.pruning.tuning import NormalEquations
from tests.helpers import make_tiny_model, make_tiny_teacher, sentiment_frame, tiny_tokenizer

FAMILIES = ["bert", "roberta", "distilbert", "mpnet"]
HEADS = [("seq", 2), ("seq", 1), ("qa", 2)]


def _load(folder, head):
    cls = AutoModelForQuestionAnswering if head == "qa" else AutoModelForSequenceClassification
    return cls.from_pretrained(folder).eval()


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 26, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _outputs(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    if hasattr(out, "start_logits"):
        return torch.stack([out.start_logits, out.end_logits], -1)
    return out.logits


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("head", "labels"), HEADS)
def test_masked_equals_physically_pruned(tmp_path, family, head, labels):
    model = _load(make_tiny_model(tmp_path / "m", family, labels, head=head), head)
    g = torch.Generator().manual_seed(1)
    masks = Masks(
        torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 0]]), (torch.rand(2, 64, generator=g) > 0.5).float()
    )
    masks.neurons[1] = 0  # layer 1: both sublayers fully pruned -> LayerNorm(X + b)
    inputs = _inputs()
    with apply_masks(model, masks):
        masked = _outputs(model, inputs)
    pruned = prune_model(copy.deepcopy(model), masks)
    valid = inputs["attention_mask"].bool()
    if head == "qa":  # padded positions are not compared
        masked, out = masked[valid], _outputs(pruned, inputs)[valid]
    else:
        out = _outputs(pruned, inputs)
    torch.testing.assert_close(out, masked, atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    # and the masks really change something
    assert not torch.allclose(
        _outputs(model, inputs)[valid] if head == "qa" else _outputs(model, inputs),
        masked,
        atol=1e-4,
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_functional_forward_matches_transformers(tmp_path, family):
    model = _load(make_tiny_model(tmp_path / "m", family), "seq")
    adapter = get_adapter(model)
    layers, _, head_dim, _, _ = adapter.dims(model)
    inputs = _inputs()
    valid = inputs["attention_mask"].bool()
    with torch.no_grad():
        x = adapter.embed(model, inputs["input_ids"], torch.zeros_like(inputs["input_ids"]))
        for s in range(2 * layers):
            view = adapter.views(model)[s // 2]
            _, y = sublayer(view, s % 2 == 0, x, valid[:, None, None, :], head_dim)
            x = layer_norm(view, s % 2 == 0, y)
        ours = adapter.logits(model, x)
    torch.testing.assert_close(ours, _outputs(model, inputs), atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny BERT briefly fine-tuned on the synthetic sentiment task."""
    root = tmp_path_factory.mktemp("teacher")
    return make_tiny_teacher(root), load_task(str(root / "s.csv"))


def _prune(teacher, **kw):
    folder, task = teacher
    cfg = PruneConfig(**{"reduction": 0.5, "tokens": 1500, "max_length": 16, **kw})
    return prune(str(folder), task, cfg, device="cpu", progress=False)


@pytest.mark.parametrize("strategy", ["kpms", "uniform"])
def test_flops_budget_met_and_close(teacher, strategy):
    for reduction in (0.3, 0.6, 0.9):
        _, r = _prune(teacher, reduction=reduction, strategy=strategy)
        flops = FlopsModel(r["avg_seq_len"], 32, 8)
        assert r["flops_after"] <= r["flops_budget"] * (1 + 1e-9)
        assert r["flops_after"] >= r["flops_budget"] - flops.head
        assert r["flops_after"] == pytest.approx(
            flops.of_counts(sum(r["kept_heads_per_layer"]), sum(r["kept_neurons_per_layer"]))
        )


@pytest.mark.parametrize("form", ["paper", "fisher"])
def test_fast_loop_equals_the_straightforward_loop(teacher, form):
    """Caching each sublayer's inputs and measuring only the sublayers above gives what the
    authors' loop (the whole sample through the whole depth at every step) gives."""
    cfg = {"reduction": 0.5, "pred_form": form, "mu": 1.0}  # mu 1: heads and neurons both go
    fast, r_fast = _prune(teacher, **cfg)
    slow, r_slow = _prune(teacher, **cfg, reference_loop=True)
    assert r_fast["kept_heads_per_layer"] == r_slow["kept_heads_per_layer"]
    assert r_fast["kept_neurons_per_layer"] == r_slow["kept_neurons_per_layer"]
    assert sum(r_fast["kept_heads_per_layer"]) < 2 * 4  # heads and neurons pruned, not all
    assert 0 < sum(r_fast["kept_neurons_per_layer"]) < 2 * 64
    for (name, a), (_, b) in zip(fast.state_dict().items(), slow.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    for a, b in zip(r_fast["sublayers"], r_slow["sublayers"], strict=True):
        assert a["status"] == b["status"]
        if "error_after" in a:
            assert a["error_after"] == pytest.approx(b["error_after"], rel=1e-4)


def test_zero_reduction_changes_nothing(teacher):
    folder, _ = teacher
    pruned, r = _prune(teacher, reduction=0.0)
    original = load_model(str(folder))
    inputs = _inputs()
    assert r["params_after"] == r["params_before"]
    assert r["flops_after"] == r["flops_before"]
    assert torch.equal(_outputs(pruned, inputs), _outputs(original, inputs))


def test_tuning_never_raises_error_and_helps(teacher):
    _, r = _prune(teacher, reduction=0.6)
    tuned = [s for s in r["sublayers"] if "error_after" in s]
    assert tuned, "nothing was tuned"
    assert all(s["error_after"] <= s["error_before"] for s in tuned)
    assert any(s["error_after"] < 0.5 * s["error_before"] for s in tuned)
    _, untuned = _prune(teacher, reduction=0.6, tune=False)
    assert all(s["status"] in ("unchanged", "pruned, not tuned") for s in untuned["sublayers"])


def test_same_seed_same_result(teacher):
    a, ra = _prune(teacher, reduction=0.5, seed=3)
    b, rb = _prune(teacher, reduction=0.5, seed=3)
    assert ra["kept_heads_per_layer"] == rb["kept_heads_per_layer"]
    assert ra["kept_neurons_per_layer"] == rb["kept_neurons_per_layer"]
    assert torch.equal(_outputs(a, _inputs()), _outputs(b, _inputs()))


def test_save_load_round_trip(teacher, tmp_path):
    pruned, report = _prune(teacher, reduction=0.7)
    save_pruned(pruned, tmp_path / "p", report=report)
    loaded = load_pruned(tmp_path / "p")
    assert type(loaded) is type(pruned)
    torch.testing.assert_close(_outputs(loaded, _inputs()), _outputs(pruned, _inputs()))
    assert (tmp_path / "p" / "report.json").exists()
    assert (tmp_path / "p" / "model.safetensors").exists()
    # the tokenizer is the teacher's, found through the report (no side channel on the model)
    assert not hasattr(pruned, "kprune_tokenizer")
    text = "a fine film, not a dull one"
    assert (
        load_tokenizer(str(tmp_path / "p"))(text)["input_ids"]
        == load_tokenizer(str(teacher[0]))(text)["input_ids"]
    )
    again = load_model(str(tmp_path / "p"))  # load_model recognises a pruned folder too
    torch.testing.assert_close(_outputs(again, _inputs()), _outputs(pruned, _inputs()))


def _sample_for(model, n=40):
    adapter = get_adapter(model)
    df = sentiment_frame(n)
    return adapter, build_sample(model, adapter, tiny_tokenizer(), df, 10_000, 0, 8, 16, "cpu")


def _measure_from_first_sublayer(folder):
    """The tiny teacher's sample, and measure(start=0) on it as a function of the spec."""
    model = frozen(load_model(str(folder)))
    adapter, sample = _sample_for(model)
    dims = adapter.dims(model)
    views = [adapter.view(layer) for layer in adapter.layers(model)]

    def run(spec, **kw):
        return measure(views, lambda h: adapter.logits(model, h), sample, 0, dims, spec, **kw)

    return sample, run


def test_paper_pred_is_zero_at_first_sublayer_but_fisher_is_not(teacher):
    _, run = _measure_from_first_sublayer(teacher[0])
    paper = run(MeasureSpec("classification", 2.0, "paper"))
    fisher = run(MeasureSpec("classification", 2.0, "fisher"))
    assert paper.pred_neurons.abs().max() < 1e-10
    assert fisher.pred_neurons.max() > 0 and fisher.pred_heads.max() > 0


def test_first_step_skips_the_backward_only_where_k_pred_is_zero(teacher):
    """At the teacher, the paper's K_pred is exactly zero without a backward pass, and K_rep is
    unchanged; a student away from the teacher is measured in full even when so flagged."""
    sample, run = _measure_from_first_sublayer(teacher[0])
    spec = MeasureSpec("classification", 2.0, "paper")
    full, fast = run(spec), run(spec, at_teacher=True)
    assert full.pred_neurons.abs().max() > 0  # float noise where the backward ran
    assert fast.pred_heads.abs().max() == 0 and fast.pred_neurons.abs().max() == 0
    torch.testing.assert_close(fast.rep_heads, full.rep_heads, rtol=0, atol=0)
    torch.testing.assert_close(fast.rep_neurons, full.rep_neurons, rtol=0, atol=0)
    torch.manual_seed(0)
    for batch in sample.batches:  # away from the teacher: K_pred > 0 and must be measured
        batch.student += 0.5 * torch.randn_like(batch.student)
    away, flagged = run(spec), run(spec, at_teacher=True)
    assert away.pred_neurons.max() > 0
    torch.testing.assert_close(flagged.pred_neurons, away.pred_neurons, rtol=0, atol=0)
    torch.testing.assert_close(flagged.pred_heads, away.pred_heads, rtol=0, atol=0)


@pytest.mark.parametrize("drawn", [True, False], ids=["drawn-logits", "logits-from-loop"])
def test_first_step_skips_the_backward_for_qa_too(tmp_path, drawn):
    """QA logits are per token, stored as zeros past each example's end: the teacher check
    compares real tokens only, so the first step of a QA model adds exact zeros as well."""
    from kprune.data.sample import draw_sample, materialise

    model = frozen(_load(make_tiny_model(tmp_path / "qa", "bert", 2, head="qa"), "qa"))
    adapter = get_adapter(model)
    data = draw_sample(model, tiny_tokenizer(), sentiment_frame(40), 10_000, 0, 8, 16, "cpu", drawn)
    views = [adapter.view(layer) for layer in adapter.layers(model)]
    spec = MeasureSpec("qa", 2.0, "paper")

    def run(**kw):
        sample = materialise(model, adapter, data, 8, "cpu")
        assert any(not b.valid.all() for b in sample.batches)  # padded positions exist
        head_fn = lambda h: adapter.logits(model, h)  # noqa: E731
        return measure(views, head_fn, sample, 0, adapter.dims(model), spec, **kw)

    fast = run(at_teacher=True)
    assert fast.pred_heads.abs().max() == 0 and fast.pred_neurons.abs().max() == 0
    if drawn:  # measured in full: float noise, not exact zeros
        assert run().pred_neurons.abs().max() > 0


def test_scores_do_not_depend_on_rows_per_autograd_pass(teacher):
    model = frozen(load_model(str(teacher[0])))
    adapter, sample = _sample_for(model)
    torch.manual_seed(0)
    for batch in sample.batches:  # a student away from the teacher: paper-form K_pred > 0
        batch.student += 0.5 * torch.randn_like(batch.student)
    dims = adapter.dims(model)
    views = [adapter.view(layer) for layer in adapter.layers(model)]
    head_fn = lambda h: adapter.logits(model, h)  # noqa: E731
    for form in ("paper", "label"):
        whole, one_row = (
            measure(
                views,
                head_fn,
                sample,
                1,
                dims,
                MeasureSpec("classification", 2.0, form, pass_tokens=cap),
            )
            for cap in (0, 1)
        )
        assert whole.pred_heads[1:].min() > 0 and whole.pred_neurons[0].max() > 0
        for a, b in zip(
            (whole.pred_heads, whole.pred_neurons, whole.rep_heads, whole.rep_neurons),
            (one_row.pred_heads, one_row.pred_neurons, one_row.rep_heads, one_row.rep_neurons),
            strict=True,
        ):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-12)


def test_kpms_keeps_best_units_within_budget():
    from kprune.pruning.knowledge import Knowledge

    flops = FlopsModel(10, 32, 8)
    k = Knowledge.zeros(2, 4, 64)
    k.rep_neurons[:] = torch.arange(128, dtype=torch.float).view(2, 64)
    k.rep_heads[:] = 1e9  # heads far more valuable than any neuron
    masks = Masks.ones(2, 4, 64)
    budget = flops.of_counts(8, 64)  # every head + half the neurons
    spec = SearchSpec(lam=1.0, mu=1.0)
    head_mask = kpms(k, masks, 0, budget, flops, spec)
    assert head_mask.sum() == 4
    neuron_mask = kpms(k, masks, 1, budget, flops, spec)
    # neurons of layer 1 score higher, so layer 0's FFN gets what layer 1 does not need
    assert neuron_mask.sum() == 0
    masks.neurons[0] = neuron_mask
    assert kpms(k, masks, 3, budget, flops, spec).sum() == 64


def test_normal_equations_recover_known_weight():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(500, 6, generator=g)
    w = torch.randn(4, 6, generator=g)
    eq = NormalEquations(6, 4)
    eq.add(h[:250], h[:250] @ w.T)
    eq.add(h[250:], h[250:] @ w.T)
    res = eq.solve(torch.zeros(4, 6), ridge=1e-10)
    torch.testing.assert_close(res.weight.float(), w, atol=1e-5, rtol=1e-5)
    assert res.error_after < 1e-10 < res.error_before and res.status == "tuned"


def test_singular_system_does_not_crash():
    eq = NormalEquations(3, 2)
    eq.add(torch.zeros(10, 3), torch.ones(10, 2))
    res = eq.solve(torch.ones(2, 3), ridge=0.0)
    assert res.status.startswith("kept")
    assert res.error_after == res.error_before


@pytest.mark.parametrize("reduction", [-0.1, 1.0, 1.5])
def test_reduction_outside_range(reduction):
    with pytest.raises(KPruneError, match=r"reduction must be in \[0, 1\)"):
        PruneConfig(reduction=reduction)


def test_negative_knobs():
    with pytest.raises(KPruneError, match="lam must be >= 0"):
        PruneConfig(lam=-1.0)


def test_unsupported_architecture(tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    GPT2ForSequenceClassification(
        GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=50)
    ).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(
        KPruneError,
        match="unsupported architecture 'gpt2'; supported families: bert, distilbert, mpnet, roberta",
    ):
        load_model(str(tmp_path / "gpt2"))


def test_empty_sample(teacher):
    folder, task = teacher
    from kprune.data.tasks import TaskData

    empty = TaskData(task.spec, {**task.splits, "train": task.splits["train"].iloc[:0]})
    with pytest.raises(KPruneError, match="sample is empty"):
        prune(str(folder), empty, PruneConfig(reduction=0.5), device="cpu", progress=False)


def test_label_count_mismatch(teacher, tmp_path):
    folder, _ = teacher
    df = sentiment_frame(60)
    df["label"] = [i % 3 for i in range(len(df))]
    df.to_csv(tmp_path / "three.csv", index=False)
    with pytest.raises(KPruneError, match="has 2 labels but task 'three' has 3"):
        prune(str(folder), str(tmp_path / "three.csv"), PruneConfig(), device="cpu")


@pytest.mark.parametrize(
    "method",
    [
        "kwon",
        "magnitude",
        "random",
        "kprune-no-kpms",
        "kprune-oneshot",
        "kprune-no-pred",
        "kprune-fisher-pred",
        "kprune-bf16",
        "kprune-exact-rep",
    ],
)
def test_every_method_meets_the_budget_and_matches_its_masks(teacher, method):
    folder, task = teacher
    cfg = PruneConfig(reduction=0.5, tokens=1500, max_length=16)
    pruned, r = prune(str(folder), task, cfg, device="cpu", progress=False, method=method)
    assert r["method"] == method
    assert r["flops_after"] <= r["flops_budget"] * (1 + 1e-9)
    assert r["flops_after"] >= r["flops_budget"] * 0.85
    flops = FlopsModel(r["avg_seq_len"], 32, 8)
    assert r["flops_after"] == pytest.approx(
        flops.of_counts(sum(r["kept_heads_per_layer"]), sum(r["kept_neurons_per_layer"]))
    )
    assert r["params_after"] < r["params_before"]
    assert _outputs(pruned, _inputs()).shape == (3, 2)  # runs with the ordinary forward


def test_kwon_rescaling_never_raises_the_error(teacher):
    folder, task = teacher
    _, rk = prune(
        str(folder),
        task,
        PruneConfig(reduction=0.6, tokens=1500, max_length=16),
        device="cpu",
        progress=False,
        method="kwon",
    )
    for s in rk["sublayers"]:
        if "error_after" in s:
            assert s["error_after"] <= s["error_before"]
    assert any(s["status"] == "rescaled" for s in rk["sublayers"])


def test_unknown_method():
    with pytest.raises(KPruneError, match="unknown method 'obs'"):
        from kprune.pruning.methods import get_method

        get_method("obs")


def test_prune_help_names_every_method(capsys):
    from kprune.cli import build_parser
    from kprune.pruning.methods import METHODS

    with pytest.raises(SystemExit):
        build_parser().parse_args(["prune", "--help"])
    text = re.sub(r"\s+", "", capsys.readouterr().out)  # argparse wraps at hyphens
    assert [m for m in METHODS if m not in text] == []


def test_every_command_has_a_help(capsys):
    """``kprune CMD --help`` prints and exits 0 for every command (a knob's help with a bare
    % once made argparse raise instead)."""
    import argparse

    from kprune.cli import build_parser, main

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"prune", "sparsify", "export"} <= set(sub.choices)
    for cmd in sub.choices:
        with pytest.raises(SystemExit) as done:
            main([cmd, "--help"])
        assert done.value.code == 0, cmd
        assert "usage:" in capsys.readouterr().out, cmd


def test_uniform_search_keeps_the_same_fraction_everywhere(teacher):
    _, r = _prune(teacher, reduction=0.5, strategy="uniform")
    assert set(r["kept_heads_per_layer"]) == {2} and set(r["kept_neurons_per_layer"]) == {32}


def test_corrupt_pruned_model_is_detected(teacher, tmp_path):
    pruned, report = _prune(teacher, reduction=0.5)
    save_pruned(pruned, tmp_path / "p", report=report)
    weights = tmp_path / "p" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(KPruneError, match="fails its content hash"):
        load_pruned(tmp_path / "p")


def test_rearrangement_prunes_units_whose_gradients_cancel():
    from kprune.pruning.search import rearrange, rearrange_masks

    # a and b each matter (|g| = 1) but cancel on every batch; c matters less alone (0.64)
    grads = torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 0.8]])  # [batches, units a b c]
    kept = rearrange(torch.tensor([0.0, 1.0, 0.0]), grads)  # importance alone prunes c and a
    assert kept.tolist() == [0.0, 0.0, 1.0]

    def loss(mask, g):  # the block-diagonal Fisher estimate Kwon et al. minimise
        return float((g[:, mask == 0].sum(1) ** 2).sum())

    torch.manual_seed(0)
    g = torch.randn(12, 3, 40) + 0.3 * torch.randn(1, 3, 40)
    masks = Masks(torch.ones(3, 4), (torch.rand(3, 40) > 0.6).float())
    new = rearrange_masks(masks, torch.zeros(12, 3, 4), g)
    for i in range(3):
        assert new.neurons[i].sum() == masks.neurons[i].sum()  # each layer keeps its count
        importance = (g[:, i] ** 2).sum(0)
        start = torch.ones(40)
        start[torch.argsort(importance)[: int((masks.neurons[i] == 0).sum())]] = 0
        assert loss(new.neurons[i], g[:, i]) <= loss(start, g[:, i]) + 1e-9
    assert torch.equal(new.heads, masks.heads)  # nothing pruned there: left alone


def test_label_measurement_keeps_each_batch_gradient(teacher):
    folder, task = teacher
    from kprune.data.sample import task_sample
    from kprune.pruning.score_tables import measure_knowledge

    model = load_model(str(folder))
    cfg = PruneConfig(tokens=600, max_length=16, batch_size=8)
    data = task_sample(model, load_tokenizer(str(folder)), task, cfg.sample, torch.device("cpu"))
    k = measure_knowledge(model, data, MeasureSpec("classification", 1.0, "label"), 8, "cpu")
    assert k.batch_grads_heads.shape[1:] == k.pred_heads.shape
    assert k.batch_grads_neurons.shape[1:] == k.pred_neurons.shape
    # the importance is the sum of the squared batch gradients, averaged over batches
    expect = (k.batch_grads_neurons.double() ** 2).sum(0) / len(k.batch_grads_neurons)
    assert torch.allclose(k.pred_neurons.double(), expect, rtol=1e-5)


@pytest.mark.parametrize("method", ["kprune", "magnitude"])
def test_report_has_exactly_the_typed_keys(teacher, method):
    """Every key of a report is declared (and explained) in kprune.report.Report; K-prune and
    a baseline fill the same ones (the CLI adds latency and peak RSS; a latency budget its
    record, tests/test_latency_budget.py)."""
    from typing import get_type_hints

    from kprune.report import Report

    folder, task = teacher
    cfg = PruneConfig(reduction=0.5, tokens=1500, max_length=16)
    _, r = prune(str(folder), task, cfg, device="cpu", progress=False, method=method)
    assert set(r) == set(get_type_hints(Report)) - {"latency", "peak_rss_mb", "latency_budget"}
    assert r["teacher"] == str(folder)  # where the tokenizer of save_pruned comes from
    assert r["params_kept"] == r["params_after"] / r["params_before"] < 1


def test_remeasure_per_layer_measures_half_as_often_and_meets_the_budget(teacher, monkeypatch):
    """prune_tune.remeasure = layer: the FFN step reuses the scores measured before its
    layer's attention step (L measurements instead of 2L); the budget still holds."""
    import kprune.pruning.loop

    calls = []
    real = kprune.pruning.loop.measure

    def counting(*args, **kwargs):
        calls.append(args[3])  # the step measured from
        return real(*args, **kwargs)

    monkeypatch.setattr(kprune.pruning.loop, "measure", counting)
    _, per_sublayer = _prune(teacher, reduction=0.5, mu=1.0)
    sublayer_calls, calls[:] = list(calls), []
    _, per_layer = _prune(teacher, reduction=0.5, mu=1.0, remeasure="layer")
    assert sublayer_calls == [0, 1, 2, 3]  # before every sublayer
    assert calls == [0, 2]  # before each layer's attention sublayer only
    for r in (per_sublayer, per_layer):
        assert r["flops_after"] <= r["flops_budget"] * (1 + 1e-9)


def _loop_on(teacher, data, **cfg):
    """prune_tune (the sublayer loop) on a fresh copy of the tiny teacher."""
    from kprune.pruning.loop import prune_tune

    config = PruneConfig(**{"reduction": 0.5, "mu": 1.0, **cfg}).resolved()
    return prune_tune(load_model(str(teacher[0])), data, "classification", config, progress=False)


def _sample_of(teacher, teacher_logits=True):
    from kprune.data.sample import task_sample

    folder, task = teacher
    cfg = PruneConfig(tokens=1500, max_length=16)
    model = frozen(load_model(str(folder)))
    return task_sample(model, load_tokenizer(str(folder)), task, cfg.sample, "cpu", teacher_logits)


def _same_pruning(a, b):
    assert torch.equal(a.masks.heads, b.masks.heads)
    assert torch.equal(a.masks.neurons, b.masks.neurons)
    assert 0 < a.masks.neurons.sum() < a.masks.neurons.numel()  # something was pruned
    pairs = zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True)
    for (name, x), (_, y) in pairs:
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=name)


def test_tuning_on_the_measured_units_equals_recomputing_them(teacher, monkeypatch):
    """The loop hands the measurement pass's units of the pruned sublayer to its tuning; the
    result is the one of recomputing them (where they do not fit in memory), and the student's
    units are not computed again."""
    import kprune.pruning.loop

    data = _sample_of(teacher)
    calls = []
    real = kprune.pruning.loop.unit_inputs
    monkeypatch.setattr(kprune.pruning.loop, "unit_inputs", lambda *a: calls.append(1) or real(*a))
    reused = _loop_on(teacher, data)
    assert calls == []
    monkeypatch.setattr(kprune.pruning.loop, "_units_fit", lambda *a: False)
    recomputed = _loop_on(teacher, data)
    assert len(calls) > 0
    _same_pruning(reused, recomputed)


def test_sample_without_teacher_logits_gets_them_from_the_first_measurement(teacher):
    """Drawn without the teacher's forward, the sample gets its logits (and fingerprint) from
    the loop's first measurement, and the pruning is the one of a fully drawn sample."""
    drawn, deferred = _sample_of(teacher), _sample_of(teacher, teacher_logits=False)
    assert deferred.teacher_logits is None and deferred.meta["fingerprint"] is None
    a, b = _loop_on(teacher, drawn), _loop_on(teacher, deferred)
    _same_pruning(a, b)
    assert len(deferred.teacher_logits) == len(drawn.teacher_logits)
    for x, y in zip(deferred.teacher_logits, drawn.teacher_logits, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)
    assert isinstance(b.report["sample"]["fingerprint"], str)


def test_loops_that_do_not_measure_the_teacher_refuse_a_sample_without_logits(teacher):
    from kprune.data.sample import save_sample
    from kprune.pruning.loop import takes_teacher_logits

    deferred = _sample_of(teacher, teacher_logits=False)
    with pytest.raises(KPruneError, match="draw it with teacher logits"):
        _loop_on(teacher, deferred, dtype="bfloat16")  # a bf16 copy measures: not the teacher
    assert not takes_teacher_logits(PruneConfig(mode="oneshot"))  # nothing measured
    assert takes_teacher_logits(PruneConfig(reference_loop=True, remeasure="layer"))
    with pytest.raises(KPruneError, match="cannot be saved"):
        save_sample(deferred, "never-written.safetensors")
