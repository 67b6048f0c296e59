"""The latency budget: tables, predictions, the search under them, on tiny models."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from kprune.config import PruneConfig
from kprune.data.tasks import load_task
from kprune.deploy.latency import latency_ms
from kprune.deploy.runtime import Runtime
from kprune.errors import KPruneError
from kprune.models.checkpoint import load_model
from kprune.pruning.assemble import prune
from kprune.pruning.flops import FlopsModel
from kprune.pruning.knowledge import Knowledge
from kprune.pruning.latency_table import (
    LatencyCost,
    LatencyTable,
    _isotonic,
    _shaped,
    cached_table,
    measure_table,
)
from kprune.pruning.masks import Masks
from kprune.pruning.search import SearchSpec, search_masks
from tests.helpers import make_tiny_teacher

LAYERS, HEADS, NEURONS = 3, 4, 16


def synthetic_table(flat_heads: int = 1) -> LatencyTable:
    """A table with a fixed cost per non-empty sublayer, a flat part of ``flat_heads`` heads
    and FFN steps that are not linear."""
    attention = [0.0] + [2.0 + 0.5 * max(h - flat_heads, 0) for h in range(1, HEADS + 1)]
    counts = [0, 1, 4, 8, 12, 16]
    ffn = [0.0, 1.0, 1.3, 2.0, 2.2, 3.0]
    return LatencyTable(
        runtime={"name": "torch", "batch": 8, "seq_len": 16, "threads": 1},
        layers=LAYERS,
        heads=HEADS,
        neurons=NEURONS,
        base_ms=5.0,
        attention_ms=attention,
        ffn_counts=counts,
        ffn_ms=ffn,
        dense_ms=30.0,
        key="synthetic",
    )


def by_hand(table: LatencyTable, masks: Masks) -> float:
    """The prediction computed the long way: the base plus one table entry per sublayer,
    the FFN's read off the straight line between the measured counts around it."""
    total = table.base_ms
    for layer in range(masks.heads.shape[0]):
        total += table.attention_ms[int(masks.heads[layer].sum())]
        n = int(masks.neurons[layer].sum())
        for (x0, y0), (x1, y1) in itertools.pairwise(
            zip(table.ffn_counts, table.ffn_ms, strict=True)
        ):
            if x0 <= n <= x1:
                total += y0 + (y1 - y0) * (n - x0) / (x1 - x0)
                break
    return total


def random_masks(seed: int) -> Masks:
    g = torch.Generator().manual_seed(seed)
    heads = (torch.rand(LAYERS, HEADS, generator=g) < torch.rand(1, generator=g)).float()
    neurons = (torch.rand(LAYERS, NEURONS, generator=g) < torch.rand(1, generator=g)).float()
    return Masks(heads, neurons)


def random_knowledge(seed: int) -> Knowledge:
    g = torch.Generator().manual_seed(seed)
    k = Knowledge.zeros(LAYERS, HEADS, NEURONS)
    for t in (k.pred_heads, k.pred_neurons, k.rep_heads, k.rep_neurons):
        t[:] = torch.rand(t.shape, generator=g) ** 3
    return k


@pytest.mark.parametrize("seed", range(20))
def test_prediction_is_the_tables_sum(seed):
    table = synthetic_table()
    masks = random_masks(seed)
    assert table.predict_ms(masks) == pytest.approx(by_hand(table, masks), rel=1e-12)
    cost = LatencyCost(table)
    assert table.base_ms + cost.of_masks(masks.heads, masks.neurons) == pytest.approx(
        by_hand(table, masks), rel=1e-12
    )


def test_empty_and_dense_predictions():
    table = synthetic_table()
    assert table.predict_ms(Masks(torch.zeros(LAYERS, HEADS), torch.zeros(LAYERS, NEURONS))) == 5.0
    assert table.predicted_dense_ms == pytest.approx(5.0 + LAYERS * (3.5 + 3.0))


@pytest.mark.parametrize("speedup", [1.2, 1.6, 2.2, 3.0])
@pytest.mark.parametrize("seed", range(4))
def test_search_meets_the_latency_budget(speedup, seed):
    table = synthetic_table()
    cost = LatencyCost(table)
    target = table.target_ms(speedup=speedup)
    masks = search_masks(
        random_knowledge(seed), cost, 0.0, SearchSpec(lam=1.0, mu=1.0), cost.budget(target)
    )
    predicted = table.predict_ms(masks)
    assert predicted <= target * (1 + 1e-9)
    # and it is not far below: no sublayer could take its next unit's step and still fit,
    # unless that step is larger than what is left
    left = target - predicted
    steps = []
    for layer in range(LAYERS):
        h, n = int(masks.heads[layer].sum()), int(masks.neurons[layer].sum())
        if h < HEADS:
            steps.append(table.attention_ms[h + 1] - table.attention_ms[h])
        if n < NEURONS:
            ffn = table.ffn(torch.tensor([n, n + 1]))
            steps.append(float(ffn[1] - ffn[0]))
    assert not steps or left < max(steps) + 1e-9


def test_a_flat_part_rides_with_its_first_unit():
    table = synthetic_table(flat_heads=3)  # 1, 2 or 3 heads cost the same
    cost = LatencyCost(table)
    assert cost.flat("head") == 3
    for speedup in (1.3, 1.8, 2.5):
        target = table.target_ms(speedup=speedup)
        masks = search_masks(
            random_knowledge(1), cost, 0.0, SearchSpec(lam=1.0, mu=1.0), cost.budget(target)
        )
        kept = masks.heads.sum(1)
        assert all(h == 0 or h >= 3 for h in kept.tolist()), kept


def test_flops_search_is_the_papers_with_linear_charges():
    """A latency table proportional to FLOPs chooses the FLOPs search's masks."""
    flops = FlopsModel(12.0, 32, 8)
    table = LatencyTable(
        runtime={"name": "torch", "batch": 1, "seq_len": 12, "threads": 1},
        layers=LAYERS,
        heads=HEADS,
        neurons=NEURONS,
        base_ms=0.0,
        attention_ms=[h * flops.head for h in range(HEADS + 1)],
        ffn_counts=list(range(NEURONS + 1)),
        ffn_ms=[n * flops.neuron for n in range(NEURONS + 1)],
        dense_ms=1.0,
    )
    spec = SearchSpec(lam=1.0, mu=1.0)
    for seed, reduction in itertools.product(range(3), (0.3, 0.6)):
        k = random_knowledge(seed)
        by_flops = search_masks(k, flops, reduction, spec)
        budget = flops.budget(reduction, LAYERS, HEADS, NEURONS)
        by_table = search_masks(k, LatencyCost(table), 0.0, spec, budget)
        assert torch.equal(by_flops.heads, by_table.heads)
        assert torch.equal(by_flops.neurons, by_table.neurons)


def test_isotonic_smooths_timing_noise():
    assert _isotonic([0.0, 2.0, 1.0, 3.0]) == [0.0, 1.5, 1.5, 3.0]
    assert _isotonic([1.0, 2.0]) == [1.0, 2.0]


def test_target_below_the_empty_model_is_one_line():
    table = synthetic_table()
    with pytest.raises(KPruneError, match="below what the model costs with every head"):
        table.target_ms(latency_ms=4.0)


@pytest.mark.parametrize(
    "knobs,message",
    [
        ({"budget": "latency"}, "latency needs exactly one target"),
        ({"budget": "latency", "speedup": 2, "latency_ms": 3}, r"\(both were given\)"),
        ({"speedup": 2}, "flops cuts FLOPs by --reduction and ignores --speedup"),
        ({"budget": "latency", "speedup": 0.5}, "speedup must be > 1"),
        ({"budget": "latency", "speedup": 2, "method": "kwon"}, "method kwon cuts FLOPs"),
        ({"runtime": "tensorrt"}, "latency.runtime must be one of torch, ort, ort-int8"),
        ({"batch": 0}, "latency.batch must be >= 1"),
    ],
)
def test_bad_latency_settings(knobs, message):
    with pytest.raises(KPruneError, match=message):
        PruneConfig(**knobs).resolved()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    return make_tiny_teacher(root), load_task(str(root / "s.csv"))


def test_shaped_copies_leave_the_model_alone(teacher):
    model = load_model(teacher[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one = _shaped(model, 1, 2, 5)
    assert len(one.bert.encoder.layer) == 1
    assert one.bert.encoder.layer[0].intermediate.dense.out_features == 5
    assert one.bert.encoder.layer[0].attention.self.num_attention_heads == 2
    assert len(model.bert.encoder.layer) == 2
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("runtime", ["torch", "ort-int8"])
def test_measured_table_is_monotone_and_cached(teacher, tmp_path, runtime):
    model = load_model(teacher[0])
    rt = Runtime(runtime, batch=4, seq_len=16, threads=1)
    table = cached_table(model, rt, tmp_path, repeats=3, ffn_points=2)
    assert table.attention_ms[0] == table.ffn_ms[0] == 0.0
    assert len(table.attention_ms) == 4 + 1 and table.ffn_counts == [0, 1, 32, 64]
    assert table.attention_ms == sorted(table.attention_ms)
    assert table.ffn_ms == sorted(table.ffn_ms)
    assert table.base_ms > 0 and table.dense_ms > 0
    (saved,) = tmp_path.glob(f"{rt.key}-*.json")
    assert json.loads(saved.read_text())["key"] == table.key
    assert cached_table(model, rt, tmp_path, ffn_points=2) == table  # read, not measured


def test_prune_to_a_latency_budget_from_a_table_file(teacher, tmp_path):
    """The whole run under a latency budget: the report's prediction meets the target and
    equals the table's sum over the kept units."""
    folder, task = teacher
    model = load_model(folder)
    table = measure_table(model, Runtime("torch", 4, 16, 1), repeats=3)
    table.save(tmp_path / "table.json")
    halfway = table.base_ms + 0.5 * (table.predicted_dense_ms - table.base_ms)
    cfg = PruneConfig(
        tokens=1500,
        max_length=16,
        budget="latency",
        latency_ms=halfway,
        latency_table=str(tmp_path / "table.json"),
    )
    pruned, report = prune(str(folder), task, cfg, device="cpu", progress=False)
    rec = report["latency_budget"]
    masks = pruned.kprune_masks
    assert rec["predicted_ms"] <= rec["target_ms"] * (1 + 1e-6)
    assert rec["predicted_ms"] == pytest.approx(table.predict_ms(masks), abs=1e-3)
    assert rec["target_ms"] == pytest.approx(halfway, abs=1e-3)
    assert report["reduction"] == pytest.approx(1 - report["flops_kept"], abs=1e-6)
    assert latency_ms(pruned, Runtime("torch", 4, 16, 1), repeats=2) > 0


def test_cli_measures_a_table_and_prunes_to_it(teacher, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    folder, _ = teacher
    table = tmp_path / "table.json"
    runtime = ["--runtime", "torch", "--batch", "4", "--seq-len", "16", "--threads", "1"]
    cmd = [sys.executable, "-m", "kprune.cli"]
    proc = subprocess.run(
        [*cmd, "latency", str(folder), *runtime, "--repeats", "3", "--out", str(table)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dense: measured" in proc.stdout and LatencyTable.load(table).heads == 4
    measured = LatencyTable.load(table)
    halfway = measured.base_ms + 0.5 * (measured.predicted_dense_ms - measured.base_ms)
    csv = folder.parent / "s.csv"
    proc = subprocess.run(
        [
            *cmd,
            "prune",
            str(folder),
            "--task",
            str(csv),
            "--tokens",
            "1500",
            "--max-length",
            "16",
            "--budget",
            "latency",
            "--latency-ms",
            repr(halfway),  # exact: a table too fast to tell sublayers apart gives the base
            "--latency-table",
            str(table),
            *runtime,
            "--latency",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    rec = report["latency_budget"]
    assert rec["predicted_ms"] <= rec["target_ms"] * (1 + 1e-6)
    assert rec["measured_ms"] > 0 and rec["runtime"]["batch"] == 4
    assert "latency    target" in proc.stdout and "predicted" in proc.stdout
