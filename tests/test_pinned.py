"""Behaviour pinned across refactors: every method's pruned model on a tiny teacher.

``tests/pinned.json`` holds, per method, the kept units of every layer (exact) and the pruned
model's logits on fixed inputs, written by the code before a restructuring. A change of
behaviour fails here; a change of layout does not. To re-pin after an intended behaviour
change (say why in the commit): ``KPRUNE_WRITE_PINS=1 pytest tests/test_pinned.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from kprune.pruning.methods import METHODS
from tests.helpers import make_tiny_teacher

PINS = Path(__file__).with_name("pinned.json")
WRITE = os.environ.get("KPRUNE_WRITE_PINS") == "1"
# Methods whose first choice rests on rounding: without K_rep, iteration 0 ranks units by
# K_pred alone, and while the student still equals the teacher the KL gradient is zero, so
# every score is rounding noise (~1e-29 here) and the units kept differ with the CPU and
# its thread count. Their pin checks the budget; the stage path is compared in-process.
ROUNDING_DECIDED = {"kprune-no-rep"}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from kprune.data.tasks import load_task

    root = tmp_path_factory.mktemp("pinned")
    return make_tiny_teacher(root), load_task(str(root / "s.csv"))


def _probe(model) -> list[list[float]]:
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(5, 26, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.tolist()


def _pruned(teacher, method: str) -> dict:
    from kprune.config import PruneConfig
    from kprune.pruning.assemble import prune

    folder, task = teacher
    cfg = PruneConfig(reduction=0.5, tokens=1500, max_length=16)
    model, report = prune(
        str(folder), task, cfg, device="cpu", progress=False, eval_split=None, method=method
    )
    return {
        "kept": model.kprune_masks.to_dict(),
        "flops_after": report["flops_after"],
        "flops_budget": report["flops_budget"],
        "logits": _probe(model),
    }


@pytest.mark.parametrize("method", sorted(METHODS))
def test_pruned_model_is_unchanged(teacher, method):
    got = _pruned(teacher, method)
    pins = json.loads(PINS.read_text()) if PINS.exists() else {}
    if WRITE:
        pins[method] = got
        PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
        return
    want = pins[method]
    if method in ROUNDING_DECIDED:
        assert got["flops_after"] <= got["flops_budget"] * (1 + 1e-9)
        assert got["flops_after"] == pytest.approx(want["flops_after"], rel=0.05)
        return
    assert got["kept"] == want["kept"]
    assert got["flops_after"] == pytest.approx(want["flops_after"], rel=1e-9)
    torch.testing.assert_close(
        torch.tensor(got["logits"]), torch.tensor(want["logits"]), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("method", sorted(METHODS))
def test_dvc_stage_path_gives_the_library_result(teacher, tmp_path, method):
    """sample -> measure rep/pred -> search -> prune_tune through the stages' functions, with
    the method named as params.yaml's ``method.name`` names it: the same pruned model as
    ``kprune.prune`` with that method, for every K-prune variant and every baseline."""
    from kprune.config import PruneConfig
    from kprune.models.checkpoint import load_pruned
    from stages import measure, prune_tune, sample, search

    folder, _ = teacher
    cfg = PruneConfig(method=method, tokens=1500, max_length=16, reduction=0.5)
    paths = {k: str(tmp_path / k) for k in ("sample", "rep", "pred", "masks", "out", "iters")}
    sample.make(str(folder), str(folder.parent / "s.csv"), None, paths["sample"], cfg.sample, "cpu")
    for what in ("rep", "pred"):
        measure.make(str(folder), paths["sample"], what, paths[what], cfg, "cpu")
    search.make(
        paths["rep"], paths["pred"], paths["masks"], cfg, str(folder), paths["sample"], "cpu"
    )
    inp = prune_tune.Inputs(
        str(folder), paths["sample"], paths["rep"], paths["pred"], paths["masks"]
    )
    prune_tune.make(inp, paths["out"], paths["iters"], cfg, device="cpu")
    model = load_pruned(paths["out"])
    want = (
        _pruned(teacher, method)
        if method in ROUNDING_DECIDED
        else json.loads(PINS.read_text())[method]
    )
    assert model.kprune_masks.to_dict() == want["kept"]
    torch.testing.assert_close(
        torch.tensor(_probe(model)), torch.tensor(want["logits"]), rtol=1e-4, atol=1e-5
    )
