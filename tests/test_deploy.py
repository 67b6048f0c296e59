"""bench.deploy on a tiny rt teacher: five variants measured, resumable, reported."""

from __future__ import annotations

import pytest

from bench.deploy import VARIANTS, main
from bench.rows import read_rows
from tests.helpers import write_rt_project


def test_deploy_measures_five_variants_once_and_reports_them(tmp_path):
    root = write_rt_project(tmp_path / "p")
    out = tmp_path / "deploy"
    args = [
        "--runs", "rt:0.5", "--tokens", "1500", "--repeats", "1",
        "--teachers", str(root / "teachers"), "--data-dir", str(root / "tasks"),
        "--store", str(tmp_path / "store"), "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    rows = read_rows(out.with_suffix(".csv"))
    assert [r["variant"] for r in rows] == list(VARIANTS)
    by = {r["variant"]: r for r in rows}
    # ONNX Runtime fp32 gives the torch model's predictions
    assert by["pruned-ort-fp32"]["test"] == by["pruned-torch"]["test"]
    assert int(by["pruned-ort-int8"]["bytes"]) < int(by["pruned-ort-fp32"]["bytes"])
    assert main(args) == 0  # resumed: nothing measured twice
    assert len(read_rows(out.with_suffix(".csv"))) == len(VARIANTS)
    text = out.with_suffix(".md").read_text()
    assert text.count("| rt | 0.5 |") == len(VARIANTS) and "speed-up b32" in text


def test_latency_bench_predicts_measures_and_resumes(tmp_path):
    """bench.latency on a tiny rt teacher: a latency-budget model's prediction beside its
    measurement and the FLOPs-budget model at the same FLOPs; a rerun measures nothing."""
    from bench.latency import main as latency_main

    root = write_rt_project(tmp_path / "p")
    out = tmp_path / "latency"
    args = [
        "--tasks", "rt", "--runtimes", "torch:2", "--speedups", "1.05", "--seq-len", "16",
        "--threads", "1", "--repeats", "3", "--tokens", "1500",
        "--teachers", str(root / "teachers"), "--data-dir", str(root / "tasks"),
        "--store", str(tmp_path / "store"), "--out", str(out),
    ]  # fmt: skip
    assert latency_main(args) == 0
    rows = read_rows(out.with_suffix(".csv"))
    (r,) = rows  # the tiny model's empty encoder costs about 2/3 of it: 1.05x is reachable
    assert float(r["predicted_ms"]) <= float(r["target_ms"]) * (1 + 1e-6)
    assert float(r["measured_ms"]) > 0 and float(r["flops_measured_ms"]) > 0
    assert latency_main(args) == 0
    assert len(read_rows(out.with_suffix(".csv"))) == len(rows)
    assert "predicted against measured" in (tmp_path / "latency-results.md").read_text()
    # a row whose table was timed another way is stale: out of the report, measured again
    from bench.rows import write_rows

    write_rows(out.with_suffix(".csv"), [{**r, "table_method": "one-layer"}], list(r))
    assert latency_main([*args, "--report-only"]) == 0
    text = (tmp_path / "latency-results.md").read_text()
    assert "1 row(s) whose latency table was timed another way" in text
    assert "| rt |" not in text


def test_target_bench_rows_next_to_the_fixed_recipe_and_resumes(tmp_path):
    """bench.target on a tiny rt teacher: the fixed R = 0.6 row (its prune's seconds) and a
    target row (chosen within its tolerance on dev, its test drop beside), a report with
    the search in prunes; a rerun measures nothing."""
    from bench.target import FIXED
    from bench.target import main as target_main

    root = write_rt_project(tmp_path / "p")
    out = tmp_path / "target"
    args = [
        "--tasks", "rt", "--runtimes", "torch:2", "--tolerances", "3", "--seq-len", "16",
        "--threads", "1", "--tokens", "1500", "--teachers", str(root / "teachers"),
        "--data-dir", str(root / "tasks"), "--out", str(out),
    ]  # fmt: skip
    assert target_main(args) == 0
    fixed, chosen = read_rows(out.with_suffix(".csv"))
    assert fixed["tolerance"] == FIXED and float(fixed["prune_seconds"]) > 0
    assert float(fixed["reduction"]) == 0.6 and fixed["recipe"] == "fp32"
    assert chosen["tolerance"] == "3.0" and chosen["passed"] == "True"
    assert float(chosen["dev_drop"]) <= 3.0 and float(chosen["search_seconds"]) > 0
    assert float(chosen["test_drop"]) == pytest.approx(
        100 * (float(chosen["teacher_test"]) - float(chosen["test"])), abs=1e-3
    )
    assert target_main(args) == 0
    assert len(read_rows(out.with_suffix(".csv"))) == 2
    text = (tmp_path / "target-results.md").read_text()
    assert text.count("| rt | torch | 2 |") == 2
