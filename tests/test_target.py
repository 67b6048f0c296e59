"""Compression to a target (kprune compress): the search, its recipes, its trace and output,
on tiny models with real pruning, real ONNX Runtime sessions and real timings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from kprune.config import PruneConfig, TargetConfig
from kprune.data.tasks import TaskData, load_task
from kprune.deploy.export import OrtModel
from kprune.deploy.latency import onnx_file
from kprune.deploy.quantize import Recipe, quantizable_nodes, quantize
from kprune.errors import KPruneError
from kprune.models.checkpoint import load_model, load_pruned
from kprune.models.loading import load_tokenizer
from kprune.target import compress
from kprune.target.search import TargetSearch
from kprune.target.trace import SUMMARY, TRACE, pareto
from kprune.train.evaluation import evaluate_model
from tests.helpers import make_tiny_teacher

FAST = dict(tokens=1500, max_length=16, batch=4, seq_len=16, threads=1, repeats=3)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    return make_tiny_teacher(root), str(root / "s.csv")


@pytest.fixture
def splits_read(monkeypatch):
    """The splits the code under test reads (TaskData.split spied on)."""
    seen: list[str] = []
    original = TaskData.split

    def spy(self, name):
        seen.append(name)
        return original(self, name)

    monkeypatch.setattr(TaskData, "split", spy)
    return seen


def test_compress_writes_the_fastest_passing_model_and_its_trace(teacher, tmp_path, splits_read):
    folder, csv = teacher
    out = tmp_path / "out"
    outcome = compress(folder, csv, out, runtime="torch", max_drop=1.0, progress=False, **FAST)
    assert "test" not in splits_read  # the test split never chooses
    trace = pd.read_csv(out / TRACE)
    assert trace["stage"].iloc[0] == "teacher" and len(trace) == len(outcome.candidates)
    assert (trace["passes"] == (trace["drop"] <= 1.0)).all()
    passing = trace[trace["passes"] & (trace["stage"] != "teacher")]
    chosen = trace[trace["chosen"]].iloc[0]
    retimed = passing[passing["final_ms"].notna()]  # the fastest few, timed side by side
    assert outcome.passed and len(passing) >= 2 and len(retimed) == min(len(passing), 4)
    slower = passing.drop(retimed.index)["latency_ms"]
    assert slower.empty or retimed["latency_ms"].max() <= slower.min()
    assert chosen["final_ms"] == retimed["final_ms"].min()
    assert set(trace["stage"]) >= {"teacher", "estimate", "confirm"}
    record = json.loads((out / SUMMARY).read_text())
    assert record["chosen"]["index"] == chosen["index"] and record["passed"]
    # the written model is the chosen one: its dev metric is the trace's
    model = load_pruned(out / "model")
    task = load_task(csv)
    again = evaluate_model(model, load_tokenizer(str(out / "model")), task, "dev", 16)
    assert again[task.spec.metric] == pytest.approx(chosen["metric"], abs=1e-6)
    assert (out / "trace.png").stat().st_size > 0 and not (out / "model.onnx").exists()


def test_int8_output_is_the_chosen_recipes_graph(teacher, tmp_path):
    folder, csv = teacher
    out = tmp_path / "out"
    outcome = compress(
        folder, csv, out, runtime="ort-int8", estimate_steps=2, confirm_prunes=1,
        progress=False, **FAST,
    )  # fmt: skip
    task = load_task(csv)
    tokenizer = load_tokenizer(str(out / "model"))
    metric = evaluate_model(OrtModel(out / "model.int8.onnx"), tokenizer, task, "dev", 16)
    assert metric[task.spec.metric] == pytest.approx(outcome.chosen.metric, abs=1e-6)
    assert outcome.chosen.recipe == "dynamic" and outcome.chosen.runtime.startswith("ort-int8")
    ops = {n.op_type for n in onnx.load(out / "model.int8.onnx").graph.node}
    assert "DynamicQuantizeLinear" in ops


class ByKeptParams(TargetSearch):
    """The dev metric made a known function of what a candidate keeps: the teacher's minus
    ``slope`` x the fraction of encoder parameters removed (int8 graphs: minus ``per_node``
    per quantized node as well), so the pass line sits at a known place."""

    slope, per_node = 0.2, 0.0

    def _dev_metric(self, model):
        if isinstance(model, OrtModel):
            graph = onnx.load(model.path)
            quantized = sum(
                n.op_type in ("MatMulInteger", "QAttention", "DynamicQuantizeMatMul")
                for n in graph.graph.node
            )
            return 0.9 - self.per_node * quantized - self.slope * self._removed(self._last)
        self._last = model
        return 0.9 - self.slope * self._removed(model)

    def _removed(self, model) -> float:
        def params(m):
            return sum(p.numel() for n, p in m.named_parameters() if ".encoder." in n)

        return 1 - params(model) / params(self.teacher)

    def _graph(self, pruned, recipe):
        self._last = pruned.model
        return super()._graph(pruned, recipe)


def search_of(cls, teacher, tmp_path, **knobs):
    folder, csv = teacher
    target = TargetConfig(
        **{k: knobs.pop(k) for k in list(knobs) if k in TargetConfig.__dataclass_fields__}
    )
    cfg = PruneConfig(**{**{k: v for k, v in FAST.items() if k != "repeats"}, **knobs})
    model = load_model(folder)
    return cls(model, load_tokenizer(str(folder)), load_task(csv), cfg, target, tmp_path,
               torch.device("cpu"), progress=False)  # fmt: skip


def test_the_search_bisects_to_the_tolerance(teacher, tmp_path):
    search = search_of(ByKeptParams, teacher, tmp_path, runtime="torch", max_drop=6.0, repeats=3)
    outcome = search.run()
    cands = outcome.candidates[1:]
    estimate = [c for c in cands if c.stage == "estimate"]
    lo, hi = 0.0, 0.9
    for c in estimate:  # each estimate is the middle of the bracket the earlier ones left
        assert c.reduction == pytest.approx((lo + hi) / 2, abs=1e-4)
        lo, hi = (c.reduction, hi) if c.passes else (lo, c.reduction)
    confirm = [c for c in cands if c.stage == "confirm"]
    assert confirm and confirm[0].reduction == pytest.approx(lo, abs=1e-4)
    assert all(c.passes == (c.drop <= 6.0 + 1e-9) for c in cands)
    # 6 points at 0.2 per unit: the line is at 30 % of the encoder's parameters removed
    assert outcome.passed and outcome.chosen.drop <= 6.0
    assert any(not c.passes for c in cands) and any(c.passes for c in cands)


def test_nothing_passes_gives_the_closest(teacher, tmp_path):
    search = search_of(ByKeptParams, teacher, tmp_path, runtime="torch", max_drop=0.0,
                       estimate_steps=2, confirm_prunes=1, repeats=3)  # fmt: skip
    outcome = search.run()
    assert not outcome.passed
    pruned = [c for c in outcome.candidates if c.stage != "teacher"]
    assert outcome.chosen.drop == min(c.drop for c in pruned) > 0


def test_int8_recipes_fall_back_operators_until_one_passes(teacher, tmp_path):
    """Each quantized node costs 0.5 points and the tolerance is 1: dynamic int8 fails at any
    reduction, so the recipe stage keeps nodes in fp32 one by one (each still fails), then
    cumulatively, until the drop fits."""
    search = search_of(ByKeptParams, teacher, tmp_path, runtime="ort-int8", max_drop=1.0,
                       estimate_steps=1, confirm_prunes=1, recipes=("dynamic", "fallback"),
                       fallback_trials=12, repeats=3)  # fmt: skip
    search.slope, search.per_node = 0.0, 0.005
    outcome = search.run()
    recipes = [c for c in outcome.candidates if c.stage == "recipe"]
    assert recipes and all(c.recipe.startswith("dynamic+fp32x") for c in recipes)
    singles = [c for c in recipes if c.recipe == "dynamic+fp32x1"]
    assert len(singles) >= 1 and outcome.passed
    assert outcome.chosen.stage == "recipe" and outcome.chosen.drop <= 1.0
    kept = outcome.chosen.fallback.split(";")
    assert len(kept) == int(outcome.chosen.recipe.rsplit("x", 1)[1])


def test_quantize_recipes(teacher, tmp_path):
    model = load_model(teacher[0])
    fp32 = onnx_file(model, tmp_path, int8=False)
    nodes = quantizable_nodes(onnx.load(fp32))
    assert nodes and all(n in {x.name for x in onnx.load(fp32).graph.node} for n in nodes)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (4, 12), generator=gen)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    want = OrtModel(fp32).run(**batch)[0]
    names = OrtModel(fp32).input_names
    feeds = [
        {
            k: v.numpy()
            for k, v in {**batch, "token_type_ids": torch.zeros_like(ids)}.items()
            if k in names
        }
    ]
    keep = next(n for n in nodes if "MatMul" in n)
    for recipe in (Recipe(), Recipe("static"), Recipe("dynamic", (keep,))):
        q8 = quantize(fp32, tmp_path / f"{recipe.name}.onnx", recipe, feeds)
        got = OrtModel(q8).run(**batch)[0]
        assert np.abs(got - want).max() < 0.05, recipe
        graph = onnx.load(q8).graph
        if recipe.fallback:  # the node left in fp32 is there as it was
            assert any(n.name == keep and n.op_type == "MatMul" for n in graph.node)
    dynamic = onnx.load(tmp_path / "dynamic.onnx").graph
    assert not any(n.name == keep and n.op_type == "MatMul" for n in dynamic.node)


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"max_drop": -1.0}, "target.max_drop must be >= 0"),
        ({"max_reduction": 1.0}, "target.max_reduction must be in (0, 1)"),
        ({"estimate_steps": 0, "confirm_prunes": 0}, "cannot both be 0"),
    ],
)
def test_bad_targets_are_one_line(knobs, message):
    with pytest.raises(KPruneError, match=None) as err:
        TargetConfig(**knobs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_baseline_cannot_be_compressed(teacher, tmp_path):
    with pytest.raises(KPruneError, match="is a baseline"):
        compress(teacher[0], teacher[1], tmp_path / "o", method="kwon", progress=False, **FAST)
    assert not (tmp_path / "o").exists()


def test_cli_compress_and_its_one_line_miss(teacher, tmp_path, monkeypatch, capsys):
    from kprune.cli import main

    folder, csv = teacher
    args = ["compress", str(folder), "--task", csv, "--runtime", "torch", "--tokens", "1500",
            "--max-length", "16", "--batch", "4", "--seq-len", "16", "--threads", "1",
            "--repeats", "3", "--estimate-steps", "2", "--confirm-prunes", "1"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a")]) in (0, None)
    printed = capsys.readouterr().out
    assert "chosen    R =" in printed and "wrote" in printed
    monkeypatch.setattr(TargetSearch, "_dev_metric", ByKeptParams._dev_metric)
    monkeypatch.setattr(TargetSearch, "_removed", ByKeptParams._removed, raising=False)
    monkeypatch.setattr(TargetSearch, "slope", 1.0, raising=False)
    monkeypatch.setattr(TargetSearch, "per_node", 0.0, raising=False)
    with pytest.raises(SystemExit) as code:
        main([*args, "--max-drop", "0", "--out", str(tmp_path / "b")])
    assert code.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("kprune: no candidate stays within 0 points")
    assert (tmp_path / "b" / "model").is_dir()


def test_pareto_front():
    from kprune.target.search import Candidate

    def cand(i, ms, metric):
        return Candidate("confirm", 0.5, "flops", "iterative", "torch", "fp32", "", metric,
                         0, True, ms, 1, 1, 0, i)  # fmt: skip

    cands = [cand(0, 10, 0.9), cand(1, 5, 0.8), cand(2, 6, 0.7), cand(3, 4, 0.8), cand(4, 8, 0.85)]
    assert pareto(cands) == [3, 4, 0]
    assert Path(__file__).exists()
