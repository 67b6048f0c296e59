"""SparseBERT (kprune sparsify) on tiny models: schedule, masks, loss plumbing, ablations,
K-prune + SparseBERT, the saved folder and bad input."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json

import pytest
import torch

from kprune.config import SparsifyConfig
from kprune.pruning.methods import SPARSIFY_METHODS
from kprune.sparse.distill import (
    AttentionScores,
    LossWeights,
    attention_mse,
    distill_loss,
    kept_heads,
    run,
)
from kprune.sparse.schedule import (
    WeightMasks,
    cubic_sparsity,
    magnitude_mask,
    prunable_matrices,
    update_steps,
)
from tests.helpers import make_tiny_model, make_tiny_teacher, tiny_tokenizer

FAST = {"epochs": 2.0, "batch_size": 16, "lr": 1e-3, "max_length": 16, "mask_updates": 6}


def _batch(texts=("good film", "the plot was very dull and boring")):
    enc = tiny_tokenizer()(list(texts), padding=True, return_tensors="pt")
    return {**enc, "labels": torch.tensor([1, 0])}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return make_tiny_teacher(tmp_path_factory.mktemp("sparse-teacher"))


def _task(teacher):
    from kprune.data.tasks import load_task

    return load_task(str(teacher.parent / "s.csv"))


def test_schedule_is_cubic_and_updates_are_spread():
    total, final = 1000, 0.9
    for t in (0, 1, 250, 500, 999, 1000):
        assert cubic_sparsity(t, total, final) == pytest.approx(final * (1 - (1 - t / total) ** 3))
    assert cubic_sparsity(0, total, final) == 0 and cubic_sparsity(total, total, final) == final
    # a cubic, not a linear ramp: 1 - (1/2)^3 of the target at the half-way step
    assert cubic_sparsity(500, total, final) == pytest.approx(0.875 * final)
    steps = update_steps(total, 100)
    assert len(steps) == 100 and steps[-1] == total and steps == sorted(set(steps))
    assert update_steps(5, 100) == [1, 2, 3, 4, 5]  # never more updates than steps


def test_magnitude_mask_keeps_the_largest_and_never_regrows():
    w = torch.randn(40, 30, generator=torch.Generator().manual_seed(0))
    previous = None
    for s in (0.3, 0.6, 0.9):
        mask = magnitude_mask(w, s, previous)
        assert int(mask.sum()) == w.numel() - round(s * w.numel())
        kept, cut = w.abs()[mask], w.abs()[~mask]
        if previous is None:  # brute force: every kept weight outweighs every cut one
            assert kept.min() >= cut.max()
        else:
            assert not (mask & ~previous).any()  # nothing outside the old mask comes back
            assert kept.min() >= w.abs()[previous & ~mask].max()
        previous = mask


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "mpnet"])
def test_attention_scores_are_the_pre_softmax_scores(tmp_path, family):
    """softmax(scores, padded keys masked) equals the attention probabilities of the eager
    kernel, layer by layer and head by head (MPNet's position bias included)."""
    from transformers import AutoModelForSequenceClassification

    folder = make_tiny_model(tmp_path / family, family)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, attn_implementation="eager"
    ).eval()
    batch = _batch()
    if family in ("distilbert", "mpnet"):
        batch.pop("token_type_ids")
    scores = AttentionScores(model)
    with torch.no_grad():
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_attentions=True,
        )
    got = scores.take()
    pad = (batch["attention_mask"] == 0)[:, None, None, :]
    for mine, theirs in zip(got, out.attentions, strict=True):
        probs = torch.softmax(mine.masked_fill(pad, float("-inf")), dim=-1)
        torch.testing.assert_close(probs, theirs, atol=1e-6, rtol=1e-5)


def test_identical_student_has_zero_losses_and_a_perturbed_one_does_not(teacher):
    from kprune.models.checkpoint import load_model

    t = load_model(teacher)
    s = copy.deepcopy(t).eval()
    batch = _batch()
    t_scores, s_scores = AttentionScores(t), AttentionScores(s)
    w = LossWeights(label=1.0)
    with torch.no_grad():
        same = distill_loss(
            run(s, s_scores, batch), run(t, t_scores, batch), batch, "classification", w
        )
        for name in ("att", "hidden", "logits"):
            assert same[name].item() == pytest.approx(0.0, abs=1e-10), name
        assert same["label"].item() > 0  # the task loss is not a distillation term
        for p in s.parameters():
            p.add_(0.05 * torch.randn_like(p))
        moved = distill_loss(
            run(s, s_scores, batch), run(t, t_scores, batch), batch, "classification", w
        )
    for name in ("att", "hidden", "logits"):
        assert moved[name].item() > 1e-6, name
    parts = sum(moved[k] for k in ("att", "hidden", "logits", "label"))
    assert moved["total"].item() == pytest.approx(parts.item())


def test_regression_prediction_loss_is_mse_to_the_teacher():
    from kprune.sparse.distill import prediction_loss

    s, t = torch.tensor([[0.5], [2.0]]), torch.tensor([[1.5], [2.0]])
    assert prediction_loss(s, t, "regression", 1.0).item() == pytest.approx(0.5)


def test_pruned_student_matches_the_teachers_kept_heads(teacher):
    """A K-prune student's heads are compared with the teacher's heads of the same index:
    layer 0 sees the same input, so its kept heads' scores equal the teacher's."""
    from kprune.models.checkpoint import load_model
    from kprune.pruning.masks import Masks
    from kprune.pruning.surgery import prune_model

    t = load_model(teacher)
    masks = Masks(torch.tensor([[0.0, 1, 0, 1], [1, 1, 1, 0]]), torch.ones(2, 64))
    s = prune_model(copy.deepcopy(t), masks)
    s.kprune_masks = masks
    heads = kept_heads(s)
    assert heads == [[1, 3], [0, 1, 2]]
    batch = _batch()
    t_scores, s_scores = AttentionScores(t), AttentionScores(s)
    with torch.no_grad():
        s_out, t_out = run(s, s_scores, batch), run(t, t_scores, batch)
    mask = batch["attention_mask"]
    assert attention_mse(s_out.scores[0], t_out.scores[0][:, heads[0]], mask).item() < 1e-12
    assert attention_mse(s_out.scores[0], t_out.scores[0][:, [0, 2]], mask).item() > 1e-6
    terms = distill_loss(s_out, t_out, batch, "classification", LossWeights(), heads)
    assert torch.isfinite(terms["total"])


def test_ablations_differ_only_in_what_they_name():
    base = dataclasses.asdict(SparsifyConfig().resolved())
    for name, method in SPARSIFY_METHODS.items():
        got = dataclasses.asdict(SparsifyConfig(method=name).resolved())
        changed = {k for k in base if got[k] != base[k]} - {"method"}
        assert changed == {k for k, v in method.overrides.items() if base[k] != v}, name
        assert (
            SparsifyConfig(method=name).resolved().resolved()
            == SparsifyConfig(method=name).resolved()
        )
    assert SPARSIFY_METHODS["sparsebert"].overrides == {}


def _encoder(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith("bert.")}


def test_the_student_starts_from_what_its_method_names(teacher):
    """The recipe's student holds the pre-trained encoder's weights, every one, not the
    fine-tuned teacher's; the from-teacher ablation's is a copy of the teacher."""
    from kprune.models.checkpoint import load_model
    from kprune.sparse.sparsebert import base_of, initial_student

    t = load_model(teacher)
    base = base_of(teacher)
    pretrained, taught = _encoder(load_model(base)), _encoder(t)
    changed = [k for k in taught if not torch.equal(taught[k], pretrained[k])]
    assert len(changed) > len(taught) // 2  # fine-tuning moved most tensors: a real contrast

    task = _task(teacher)
    student = _encoder(initial_student(t, task, base))
    assert student.keys() == pretrained.keys()
    assert all(torch.equal(student[k], pretrained[k]) for k in pretrained)
    copy_of_teacher = initial_student(t, task, None)
    copied = _encoder(copy_of_teacher)
    assert copied.keys() == taught.keys()
    assert all(torch.equal(v, taught[k]) for k, v in copied.items())
    with torch.no_grad():
        for p in copy_of_teacher.parameters():
            p.add_(1.0)
    assert all(torch.equal(v, taught[k]) for k, v in _encoder(t).items())  # a copy, not the same


def test_sparsify_reaches_the_sparsity_and_pruned_weights_never_regrow(teacher, monkeypatch):
    from kprune.sparse.sparsebert import sparsify

    snapshots = []
    original = WeightMasks.update

    def recording(self, sparsity):
        if snapshots:  # between two updates, every cut weight stayed at zero
            for k, w in self.weights.items():
                assert not w[~snapshots[-1][k]].any(), k
        original(self, sparsity)
        snapshots.append({k: m.clone() for k, m in self.masks.items()})

    monkeypatch.setattr(WeightMasks, "update", recording)
    cfg = SparsifyConfig(sparsity=0.8, **FAST)
    model, report = sparsify(teacher, _task(teacher), cfg, device="cpu", progress=False)
    assert len(snapshots) == report["mask_updates"] == 6
    for before, after in itertools.pairwise(snapshots):
        for k in before:
            assert not (after[k] & ~before[k]).any(), k  # no regrowth
    for name, w in prunable_matrices(model).items():
        n = w.numel()
        assert int((w != 0).sum()) == n - round(0.8 * n), name
        assert not w[~snapshots[-1][name]].any()
    assert report["matrix_nonzero"] == sum(
        n - round(0.8 * n) for n in (w.numel() for w in prunable_matrices(model).values())
    )
    # embeddings and the head are never pruned
    assert (model.bert.embeddings.word_embeddings.weight[1:] != 0).all()  # row 0: [PAD]
    assert report["student_init"] == "pretrained" and report["base"].endswith("base")
    assert set(report["metric_after"]) == {"dev", "test"}


def test_only_what_a_method_weighs_is_computed_and_skipping_changes_nothing(teacher, monkeypatch):
    """No distillation: no teacher pass; logits only: no attention scores or hidden states;
    the full recipe: all of them. Running the teacher anyway leaves the no-kd student
    bit for bit the same."""
    import kprune.sparse.sparsebert
    from kprune.sparse.sparsebert import sparsify

    seen = []
    real = kprune.sparse.sparsebert.run

    def recording(model, scores, batch, hidden=True):
        seen.append((model.training, scores is not None, hidden))
        return real(model, scores, batch, hidden)

    monkeypatch.setattr(kprune.sparse.sparsebert, "run", recording)
    cfg = {**FAST, "epochs": 0.5, "sparsity": 0.5}
    runs = {}
    for method in ("sparsebert", "sparsebert-logits-kd", "sparsebert-no-kd"):
        seen.clear()
        sc = SparsifyConfig(method=method, **cfg)
        runs[method] = sparsify(teacher, _task(teacher), sc, device="cpu", progress=False)[0]
        runs[method, "calls"] = set(seen)
    # (student in training mode?, attention scores?, hidden states?) per forward
    assert runs["sparsebert", "calls"] == {(True, True, True), (False, True, True)}
    assert runs["sparsebert-logits-kd", "calls"] == {(True, False, False), (False, False, False)}
    assert runs["sparsebert-no-kd", "calls"] == {(True, False, False)}
    monkeypatch.setattr(kprune.sparse.sparsebert, "uses_teacher", lambda w: True)
    sc = SparsifyConfig(method="sparsebert-no-kd", **cfg)
    with_teacher = sparsify(teacher, _task(teacher), sc, device="cpu", progress=False)[0]
    for (name, a), (_, b) in zip(
        runs["sparsebert-no-kd"].state_dict().items(),
        with_teacher.state_dict().items(),
        strict=True,
    ):
        assert torch.equal(a, b), name


def test_cli_writes_a_plain_transformers_folder(teacher, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from kprune.cli import main

    out = tmp_path / "sparse"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]
    argv = ["sparsify", str(teacher), "--task", str(teacher.parent / "s.csv"), "--out", str(out)]
    assert main([*argv, "--sparsity", "0.5", "--method", "sparsebert-no-kd", *flags]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "sparsebert-no-kd" and report["config"]["label_weight"] == 1.0
    model = AutoModelForSequenceClassification.from_pretrained(out)
    w = model.bert.encoder.layer[0].intermediate.dense.weight
    assert (w == 0).float().mean().item() == pytest.approx(0.5, abs=1e-3)
    assert report["sparsity_reached"]["sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_kprune_then_sparsify(teacher, tmp_path):
    """The combination: the student is the K-prune model; its remaining matrices reach the
    sparsity; the result is a K-prune folder that loads back."""
    from kprune.config import PruneConfig
    from kprune.models.checkpoint import load_pruned, save_pruned
    from kprune.pruning.assemble import prune
    from kprune.sparse.sparsebert import save_sparse, sparsify

    task = _task(teacher)
    pruned, report = prune(
        str(teacher), task, PruneConfig(reduction=0.5, tokens=600), device="cpu", progress=False
    )
    save_pruned(pruned, tmp_path / "pruned", report=report)
    model, rep = sparsify(
        teacher,
        task,
        SparsifyConfig(sparsity=0.7, **FAST),
        from_pruned=tmp_path / "pruned",
        device="cpu",
        progress=False,
    )
    assert rep["method"] == "kprune+sparsebert"
    assert rep["flops_kept"] == pytest.approx(report["flops_kept"])
    dense = sum(w.numel() for w in prunable_matrices(pruned).values())
    assert rep["matrix_params"] == dense
    save_sparse(model, tmp_path / "both", rep)
    assert any((tmp_path / "both").glob("tokenizer*"))  # the teacher's, named by the report
    back = load_pruned(tmp_path / "both")
    for name, w in prunable_matrices(back).items():
        assert int((w != 0).sum()) == w.numel() - round(0.7 * w.numel()), name


def test_bad_input_gets_one_line_errors(teacher, tmp_path, capsys):
    from kprune.cli import main

    csv = str(teacher.parent / "s.csv")
    cases = [
        (["--sparsity", "1.0"], "sparsify.sparsity must be in [0, 1)"),
        (["--sparsity", "-0.1"], "sparsify.sparsity must be in [0, 1)"),
    ]
    for extra, message in cases:
        code = main(["sparsify", str(teacher), "--task", csv, "--out", str(tmp_path / "x"), *extra])
        err = capsys.readouterr().err.strip()
        assert code != 0 and message in err and err.startswith("kprune: error:"), err
        assert len(err.splitlines()) == 1
    # a student base of another shape
    other = make_tiny_model(tmp_path / "other", hidden=48, heads=4)
    code = main(
        [
            "sparsify",
            str(teacher),
            "--task",
            csv,
            "--out",
            str(tmp_path / "y"),
            "--base",
            str(other),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code != 0 and "differs from the teacher" in err and len(err.splitlines()) == 1
    # a teacher whose head does not fit the task (3 labels, a 2-class task)
    three = make_tiny_model(tmp_path / "three", num_labels=3)
    code = main(["sparsify", str(three), "--task", csv, "--out", str(tmp_path / "z")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "labels" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize(
    ("family", "layout"), [("bert", "csr"), ("distilbert", "csr"), ("bert", "bsr")]
)
def test_sparse_kernels_give_the_dense_models_outputs(tmp_path, family, layout):
    from transformers import AutoModelForSequenceClassification

    from kprune.sparse.kernels import SparseLinear, use_sparse_kernels

    folder = make_tiny_model(tmp_path / family, family)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    masks = WeightMasks(model)
    masks.update(0.9)
    batch = _batch()
    if family == "distilbert":
        batch.pop("token_type_ids")
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        dense = model(**inputs).logits
        fast = use_sparse_kernels(copy.deepcopy(model), layout, block=8)
        swapped = [m for m in fast.modules() if isinstance(m, SparseLinear)]
        assert len(swapped) == len(masks.weights)  # every prunable matrix, nothing else
        torch.testing.assert_close(fast(**inputs).logits, dense, atol=1e-5, rtol=1e-4)


def test_sparsify_a_regression_teacher(tmp_path):
    """vader-movie's kind: the prediction term is the MSE to the teacher's output."""
    from kprune.data.tasks import load_task
    from kprune.sparse.sparsebert import sparsify
    from tests.helpers import sentiment_frame

    sentiment_frame(200, regression=True).to_csv(tmp_path / "r.csv", index=False)
    task = load_task(str(tmp_path / "r.csv"))
    assert task.spec.kind == "regression"
    teacher = make_tiny_teacher(tmp_path, task=task, num_labels=1, epochs=1)
    cfg = SparsifyConfig(sparsity=0.6, method="sparsebert-logits-kd", **FAST)
    model, report = sparsify(teacher, task, cfg, device="cpu", progress=False)
    assert report["metric"] == "spearman" and model.config.num_labels == 1
    assert report["sparsity_reached"]["sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert all(h["logits"] > 0 for h in report["history"])
