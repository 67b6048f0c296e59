"""The benchmark runs every configuration in its own process, resumes, and reports."""

import csv
from dataclasses import replace

import pytest

from bench.grid import run_bench
from bench.report import write_report
from kprune.config import BenchConfig
from tests.helpers import make_tiny_model, write_rt_project, write_task


def test_bench_rows_resume_and_report(tmp_path):
    write_rt_project(tmp_path, epochs=2)  # the bench looks for teachers/<task>
    cfg = BenchConfig(
        tasks=("rt",),
        methods=("kprune", "random"),
        reductions=(0.5,),
        seeds=(0,),
        tokens=400,
        repeats=1,
        threads=1,
    )
    out = tmp_path / "docs"
    rows = run_bench(cfg, str(tmp_path / "teachers"), str(tmp_path / "tasks"), out)
    assert [r["method"] for r in rows] == ["kprune", "random"]
    with open(out / "benchmarks.csv") as fh:
        saved = list(csv.DictReader(fh))
    assert len(saved) == 2 and float(saved[0]["flops_kept"]) <= 0.5 + 1e-9
    assert float(saved[0]["peak_rss_mb"]) > 50 and float(saved[0]["latency_ms_b32"]) > 0
    assert saved[0]["finished_at"].endswith("Z") and float(saved[0]["load_1m"]) >= 0
    assert run_bench(cfg, str(tmp_path / "teachers"), str(tmp_path / "tasks"), out) == []
    # a method that names the default explicitly is the same computation: reused, not rerun
    twin = replace(cfg, methods=("kprune", "kprune-paper-pred"))
    [row] = run_bench(twin, str(tmp_path / "teachers"), str(tmp_path / "tasks"), out)
    assert row["method"] == "kprune-paper-pred" and row["same_run_as"] == "kprune"
    assert row["prune_seconds"] == saved[0]["prune_seconds"]
    with open(out / "benchmarks.csv") as fh:
        saved = list(csv.DictReader(fh))
    paths = write_report(saved, out, tmp_path / "teachers")
    text = (out / "benchmarks.md").read_text()
    assert "| kprune |" in text and "| random |" in text and "| kprune-paper-pred |" in text
    assert "at or above the baseline" in text
    assert (out / "bench_rt.png") in paths and (out / "bench_rt.png").stat().st_size > 1000
    assert "stale" not in text


def test_rows_of_an_older_score_scale_are_rerun_and_left_out(tmp_path):
    """K-prune rows from before the published-scale fix (no score_scale) are stale: the bench
    reruns them, the report leaves them out; baseline rows stay valid."""
    from bench.rows import COLUMNS, append_row
    from kprune.pruning.knowledge import SCORE_SCALE

    write_rt_project(tmp_path, epochs=1)
    out = tmp_path / "docs"
    old = {c: "" for c in COLUMNS if c != "score_scale"}
    old.update(
        task="rt",
        model="teachers",  # the base model: the name of the teachers' folder
        reduction=0.5,
        seed=0,
        metric_name="accuracy",
        metric=0.123,
        dense_metric=0.5,
        flops_kept=0.5,
        tokens=400,
        code="oldcode00000",
    )
    for method, metric in (("kprune", 0.123), ("random", 0.321)):
        append_row(out / "benchmarks.csv", {**old, "method": method, "metric": metric}, [*old])
    cfg = BenchConfig(
        tasks=("rt",),
        methods=("kprune", "random"),
        reductions=(0.5,),
        seeds=(0,),
        tokens=400,
        repeats=1,
        threads=1,
    )
    rows = run_bench(cfg, str(tmp_path / "teachers"), str(tmp_path / "tasks"), out)
    assert [r["method"] for r in rows] == ["kprune"]  # the random row is still valid
    assert rows[0]["score_scale"] == SCORE_SCALE
    with open(out / "benchmarks.csv") as fh:
        saved = list(csv.DictReader(fh))
    assert len(saved) == 3  # the stale row is kept in the CSV
    write_report(saved, out, tmp_path / "teachers")
    text = (out / "benchmarks.md").read_text()
    assert "1 stale rows left out" in text and "oldcode00000" in text
    assert "0.1230" not in text and "0.3210" in text  # the stale metric is in no table


def test_plan_runs_the_headline_methods_over_the_grid_first():
    from bench.grid import plan

    p = BenchConfig(
        tasks=("rt", "trec6"),
        methods=("kprune", "kprune-no-rep", "random"),
        reductions=(0.4, 0.6),
        seeds=(0, 1),
        priority=("kprune", "random"),
    )
    order = plan(p)
    assert len(order) == 2 * 3 * 2 * 2 and len(set(order)) == len(order)
    first_ablation = next(i for i, c in enumerate(order) if c[2] == "kprune-no-rep")
    assert first_ablation == 2 * 2 * 2 * 2  # every (seed, task, R) of kprune and random first
    assert order[:4] == [
        ("rt", 0.4, "kprune", 0),
        ("rt", 0.4, "random", 0),
        ("rt", 0.6, "kprune", 0),
        ("rt", 0.6, "random", 0),
    ]


def test_memory_bench_prunes_a_random_model_of_the_size_and_records_its_peak(tmp_path):
    from bench.memory import main

    teacher, data_dir = make_tiny_model(tmp_path / "t"), write_task(tmp_path / "tasks")
    out = tmp_path / "memory.csv"
    args = ["--size", "tiny", "--tokens", "300", "--data-dir", str(data_dir), "--out", str(out)]
    assert main([*args, "--tokenizer-from", str(teacher)]) == 0
    with open(out) as fh:
        [row] = list(csv.DictReader(fh))
    assert row["size"] == "tiny" and float(row["peak_rss_mb"]) > 50
    assert int(row["params_after"]) < int(row["params_before"])
    assert main([*args, "--tokenizer-from", str(tmp_path / "nowhere")]) == 2


def test_bench_says_which_teacher_is_missing(tmp_path, capsys):
    from bench.grid import main

    args = ["--tasks", "rt", "--methods", "random", "--seeds", "0", "--reductions", "0.5"]
    assert main([*args, "--teachers", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dense teacher failed" in err[0]


def test_headline_names_every_place_kprune_is_below_and_leaves_out_undefined_metrics():
    import pandas as pd

    from bench.report import headline

    df = pd.DataFrame(
        [
            ("rt", 0.4, 0, "kprune", 0.80),
            ("rt", 0.4, 0, "kwon", 0.82),
            ("rt", 0.4, 0, "random", 0.50),
            ("vm", 0.4, 0, "kprune", 0.70),
            ("vm", 0.4, 0, "random", float("nan")),
        ],
        columns=["task", "reduction", "seed", "method", "metric"],
    )
    text = "\n".join(headline(df))
    assert "in 1 of 2" in text and "rt R=0.4: kprune 0.8000 < kwon 0.8200" in text
    assert "Left out: 1 comparison" in text


def test_report_names_runs_over_their_flops_budget():
    import pandas as pd

    from bench.report import over_budget

    df = pd.DataFrame(
        [("rt", "kprune", 0.6, 0, 0.39995), ("rt", "kprune-no-kpms", 0.6, 1, 0.4055)],
        columns=["task", "method", "reduction", "seed", "flops_kept"],
    )
    text = "\n".join(over_budget(df))
    assert "1 of 2 runs kept more FLOPs" in text
    assert "rt kprune-no-kpms R=0.6 seed 1: 0.4055" in text and "seed 0" not in text
    assert over_budget(df.iloc[:1]) == []


def test_ablation_table_gives_the_mean_difference_at_each_reduction():
    import pandas as pd

    from bench.report import ablation_table

    rows = [("rt", 0.4, s, "kprune", 0.80) for s in (0, 1)]
    rows += [("rt", 0.8, s, "kprune", 0.70) for s in (0, 1)]
    rows += [("rt", 0.4, 0, "kprune-no-tune", 0.78), ("rt", 0.4, 1, "kprune-no-tune", 0.76)]
    rows += [("rt", 0.8, 0, "kprune-no-tune", 0.40), ("rt", 0.8, 1, "kprune-no-tune", 0.80)]
    df = pd.DataFrame(rows, columns=["task", "reduction", "seed", "method", "metric"])
    df["same_run_as"] = ""
    text = ablation_table(df)
    assert "| R=0.4 | R=0.8 |" in text[4]
    # mean -0.065 over the four runs; -0.03 at R=0.4, -0.10 at R=0.8 (-0.30 and +0.10)
    assert (
        text[6] == "| kprune-no-tune | 4 | -0.0650 | -0.0300 | -0.1000 | -0.3000 | +0.1000 | 1 | |"
    )


def test_kpms_table_gives_kprunes_lead_per_task_and_reduction_with_the_seeds_ahead():
    import pandas as pd

    from bench.report import paired_table

    rows = [("rt", 0.6, s, "kprune", m) for s, m in ((0, 0.80), (1, 0.82), (2, 0.81))]
    rows += [("rt", 0.6, s, "kprune-no-kpms", m) for s, m in ((0, 0.79), (1, 0.83), (2, 0.78))]
    rows += [("trec6", 0.8, 0, "kprune", 0.90), ("trec6", 0.8, 0, "kprune-no-kpms", 0.91)]
    rows += [("trec6", 0.8, 1, "kprune", 0.88)]  # no uniform run for seed 1: not compared
    df = pd.DataFrame(rows, columns=["task", "reduction", "seed", "method", "metric"])
    text = paired_table(df, "kprune-no-kpms", "What KPMS buys", "a uniform ratio")
    assert text[4] == "| task | R=0.6 | R=0.8 | all R |"
    # rt: +1, -1, +3 points -> mean +1.00, ahead on 2 of 3 seeds
    assert text[6] == ("| rt | +1.00 (2/3; -1.00 to +3.00) |  | +1.00 (2/3; -1.00 to +3.00) |")
    assert text[7] == "| trec6 |  | -1.00 (0/1) | -1.00 (0/1) |"
    assert text[8].startswith("| all tasks | +1.00 (2/3; -1.00 to +3.00) | -1.00 (0/1) |")
    assert paired_table(df, "kprune-no-tune", "t", "w") == []


def test_component_table_gives_each_ablations_lead_per_task_and_skips_the_defaults_twin():
    import pandas as pd

    from bench.report import component_table

    rows = [("rt", r, 0, "kprune", 0.80, "") for r in (0.4, 0.8)]
    rows += [("rt", 0.4, 0, "kprune-no-tune", 0.70, ""), ("rt", 0.8, 0, "kprune-no-tune", 0.82, "")]
    rows += [("trec6", 0.4, 0, "kprune", 0.90, ""), ("trec6", 0.4, 0, "kprune-no-tune", 0.85, "")]
    rows += [("rt", 0.4, 0, "kprune-paper-pred", 0.80, "kprune")]  # the default under a name
    cols = ["task", "reduction", "seed", "method", "metric", "same_run_as"]
    text = component_table(pd.DataFrame(rows, columns=cols))
    assert text[4] == "| ablation | rt | trec6 |"
    # rt: +10 and -2 points -> +4.00, ahead in 1 of 2; trec6: +5
    assert text[6] == "| kprune-no-tune | +4.00 (1/2; -2.00 to +10.00) | +5.00 (1/1) |"
    assert len(text) == 8 and not any("paper-pred" in line for line in text)


def test_report_only_rewrites_from_the_csv_and_runs_nothing(tmp_path):
    from bench.grid import main
    from bench.rows import COLUMNS
    from kprune.pruning.knowledge import SCORE_SCALE

    out = tmp_path / "docs"
    assert main(["--report-only", "--out", str(out), "--no-track"]) == 2  # no CSV yet
    out.mkdir()
    row = dict.fromkeys(COLUMNS, "")
    row.update(task="rt", method="kprune", reduction="0.5", seed="0", metric_name="accuracy")
    row.update(model="minilm-l6", metric="0.8", dense_metric="0.84", flops_kept="0.5")
    row.update(params_kept="0.7")
    row.update(prune_seconds="1", peak_rss_mb="900", tokens="100", latency_ms_b32="1")
    row.update(dense_latency_ms_b32="2", threads="2", load_1m="1.5", score_scale=SCORE_SCALE)
    with open(out / "benchmarks.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerow(row)
    assert main(["--report-only", "--out", str(out), "--no-track"]) == 0
    assert "| kprune | 0.8000 |" in (out / "benchmarks.md").read_text()
    assert len(list(out.iterdir())) == 3  # csv, md, png: no runs

    # with SparseBERT rows beside it: their section, K-prune's nonzero weights from its units
    from bench.rows import append_row
    from bench.sparse import COLUMNS as SPARSE_COLUMNS

    # (the teachers of this tiny project: their folder's name is the rows' model)
    sparse = dict(task="rt", model="teachers", method="sparsebert", sparsity=0.9, reduction=0)
    sparse.update(seed=0, test=0.7, dense_test=0.84, nonzero_params=1_060_000)
    append_row(out / "sparse.csv", sparse, SPARSE_COLUMNS)
    row.update(heads_kept="[1, 2]", neurons_kept="[3, 4]", model="teachers")
    with open(out / "benchmarks.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerow(row)
    (tmp_path / "teachers" / "rt").mkdir(parents=True)
    config = '{"hidden_size": 8, "num_attention_heads": 2}'
    (tmp_path / "teachers" / "rt" / "config.json").write_text(config)
    args = ["--report-only", "--out", str(out), "--no-track", "--teachers"]
    (out / "plots").mkdir()
    (out / "plots" / "sparse_latency.png").write_bytes(b"")  # bench.sparse's figure, linked
    assert main([*args, str(tmp_path / "teachers")]) == 0
    text = (out / "benchmarks.md").read_text()
    assert "(plots/sparse_latency.png)" in text and "sparse_ablations" not in text
    assert "| sparsebert | 0.9 | 0 | 0.7000 (1.06) |" in text
    assert "| kprune | 0 | 0.5 | 0.8000 (0.00) |" in text
    # a second base model's rows get a page of their own, never mixed into this one
    row.update(model="mpnet-base", metric="0.9")
    append_row(out / "benchmarks.csv", row, COLUMNS)
    assert main([*args, str(tmp_path / "teachers")]) == 0
    assert "0.9000" not in (out / "benchmarks.md").read_text()
    other = (out / "benchmarks-mpnet-base.md").read_text()
    assert other.startswith("# Benchmarks: mpnet-base teachers") and "| kprune | 0.9000 |" in other
    from bench.sparse_report import kprune_points, teacher_dims

    teachers = tmp_path / "teachers"
    [point] = kprune_points(out / "benchmarks.csv", teachers, lambda t: teacher_dims(teachers, t))
    assert point["nonzero_params"] == 3 * 4 * 4 * 8 + 7 * 2 * 8  # heads x 4 matrices, neurons


def test_every_method_of_the_grid_gets_its_own_colour():
    from kprune.config import BenchConfig
    from kprune.plots import method_colors

    methods = BenchConfig().methods
    colors = method_colors(methods)
    assert len(set(colors.values())) == len(methods) == len(colors)


def test_headline_compares_over_the_seeds_kprune_has():
    """While K-prune's rows are being rerun, a baseline's other seeds do not enter."""
    import pandas as pd

    from bench.report import headline

    rows = [("rt", 0.6, 0, "kprune", 0.80), ("rt", 0.6, 0, "kwon", 0.79)]
    rows += [("rt", 0.6, 1, "kwon", 0.99)]  # K-prune has no seed 1 yet
    df = pd.DataFrame(rows, columns=["task", "reduction", "seed", "method", "metric"])
    assert "in 1 of 1 (task, reduction, baseline) comparisons" in "\n".join(headline(df))


def test_sparse_bench_writes_resumable_rows_and_a_report(tmp_path, capsys):
    """bench.sparse on a tiny project: SparseBERT and K-prune + SparseBERT rows with their
    nonzero weights, latencies and dev curves, the report and plots; a rerun runs nothing."""
    import csv
    import json

    import pytest

    from bench.sparse import main
    from tests.helpers import write_rt_project

    root = write_rt_project(tmp_path)
    args = [
        "--tasks",
        "rt",
        "--plan",
        "sparsebert:0.5,kprune+sparsebert:0.5:0.5",
        "--epochs",
        "1",
        "--tokens",
        "600",
        "--repeats",
        "1",
        "--device",
        "cpu",
        "--teachers",
        str(root / "teachers"),
        "--data-dir",
        str(root / "tasks"),
        "--store",
        str(root / "store"),
        "--out",
        str(root / "docs" / "sparse"),
        "--benchmarks",
        str(root / "none.csv"),
    ]
    assert main(args) == 0
    with open(root / "docs" / "sparse.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == ["sparsebert", "kprune+sparsebert"]
    dense, both = rows
    assert int(dense["nonzero_params"]) == int(dense["matrix_params"]) // 2
    assert float(both["flops_kept"]) < 1 and int(both["matrix_params"]) < int(
        dense["matrix_params"]
    )
    for r in rows:
        assert float(r["latency_ms_b32"]) > 0 and float(r["dense_kernel_ms_b32"]) > 0
        assert float(r["ort_ms_b32"]) > 0 and float(r["dense_ort_ms_b1"]) > 0  # ONNX Runtime
        [(fraction, sparsity, _)] = json.loads(r["dev_curve"])  # one epoch: one point
        assert fraction == 1.0 and sparsity == pytest.approx(0.5, abs=0.01)
    plots = root / "docs" / "plots"
    assert (plots / "sparse_curves.png").is_file() and (plots / "sparse_latency.png").is_file()
    md = (root / "docs" / "sparse.md").read_text()
    assert "kprune+sparsebert" in md and (plots / "sparse_rt.png").is_file()
    assert "](plots/sparse_rt.png)" in md
    mtime = (root / "docs" / "sparse.csv").stat().st_mtime_ns
    assert main(args) == 0
    assert (root / "docs" / "sparse.csv").stat().st_mtime_ns == mtime  # nothing rerun
    # --retime with --plan measures only the planned rows again, from their kept models
    retime = [a if a != args[3] else "sparsebert:0.5" for a in args] + ["--retime"]
    assert main(retime) == 0
    assert "sparse: 1 rows retimed" in capsys.readouterr().out
    with open(root / "docs" / "sparse.csv", newline="") as fh:
        again = list(csv.DictReader(fh))
    assert again[1] == rows[1] and again[0]["latency_ms_b32"] != rows[0]["latency_ms_b32"]
    assert again[0]["retimed_at"] >= again[0]["finished_at"] and not rows[0]["retimed_at"]
    assert "retimed |" in (root / "docs" / "sparse.md").read_text()

    # --retime times every row again from its kept model; nothing else of a row changes
    from bench.rows import write_rows
    from bench.sparse import COLUMNS

    busy = {**both, "load_1m": "99", "latency_ms_b32": "-1"}
    write_rows(root / "docs" / "sparse.csv", [dense, busy], COLUMNS)
    assert main([*args, "--retime"]) == 0
    with open(root / "docs" / "sparse.csv", newline="") as fh:
        again = list(csv.DictReader(fh))
    assert float(again[1]["latency_ms_b32"]) > 0 and float(again[1]["load_1m"]) < 99
    for old, new in zip([dense, both], again, strict=True):
        kept = [k for k in old if "ms_" not in k and k not in ("load_1m", "retimed_at")]
        assert {k: old[k] for k in kept} == {k: new[k] for k in kept} and new["retimed_at"]

    # --set: a knob beside the method makes a row of its own, kept apart and labelled
    assert main([*args, "--plan", "sparsebert:0.5", "--set", "logit_weight=0.25"]) == 0
    with open(root / "docs" / "sparse.csv", newline="") as fh:
        *first_two, third = list(csv.DictReader(fh))
    assert len(first_two) == 2 and third["knobs"] == "logit_weight=0.25"
    assert all(r["knobs"] == "" for r in first_two)
    kept = root / "store" / "models" / "teachers-rt-sparsebert-s0.5-R0.0-seed0-e1-logit_weight=0.25"
    assert json.loads((kept / "report.json").read_text())["config"]["logit_weight"] == 0.25
    assert "| sparsebert (1 ep) [logit_weight=0.25] |" in (root / "docs" / "sparse.md").read_text()


def test_sparse_bench_knobs_are_checked_before_anything_runs():
    import pytest

    from bench.sparse import knobs_of, parse_knobs
    from kprune.errors import KPruneError

    assert parse_knobs(None, ["sparsebert"]) == ""
    text = parse_knobs(["temperature=2", "logit-weight=0.17"], ["sparsebert"])
    assert text == "logit_weight=0.17;temperature=2.0"
    assert knobs_of(text) == {"logit_weight": 0.17, "temperature": 2.0}
    assert knobs_of(parse_knobs(["base=data/raw/m", "att_weight=0"], ["sparsebert"])) == {
        "att_weight": 0.0,
        "base": "data/raw/m",
    }
    for items, methods, says in [
        (["logit_weight"], ["sparsebert"], "is not KNOB=VALUE"),
        (["nope=1"], ["sparsebert"], "is not KNOB=VALUE"),
        (["sparsity=0.5"], ["sparsebert"], "is not KNOB=VALUE"),  # the plan sets it
        (["mask_updates=many"], ["sparsebert"], "takes an integer"),
        (["logit_weight=0.5"], ["sparsebert", "sparsebert-no-kd"], "sets it itself"),
        (["lr=-1"], ["sparsebert"], "sparsify.lr must be > 0"),
        (["base=data/a;b"], ["sparsebert"], "may not hold ';'"),  # would split the column
    ]:
        with pytest.raises(KPruneError, match=says):
            parse_knobs(items, methods)


def test_sparse_ablation_figure_compares_like_with_like(tmp_path, monkeypatch):
    """The ablation figure puts each ablation beside the recipe at one sparsity, seed 0, the
    task's longest training and no extra knobs; a task without both draws no panel."""
    import bench.sparse_report as sparse

    def row(task, method, test, sparsity="0.9", seed="0", epochs="12.0", knobs=""):
        return dict(task=task, method=method, sparsity=sparsity, seed=seed, epochs=epochs,
                    knobs=knobs, test=str(test), dev=str(test + 0.01), dense_test="0.9",
                    dense_dev="0.91", metric_name="accuracy")  # fmt: skip

    drawn = []
    monkeypatch.setattr("kprune.plots.bars_plot", lambda panels, *a, **k: drawn.extend(panels))
    rows = [
        row("rt", "sparsebert", 0.8),
        row("rt", "sparsebert-no-kd", 0.7),
        row("rt", "sparsebert-no-kd", 0.1, seed="1"),  # another seed
        row("rt", "sparsebert-logits-kd", 0.1, epochs="3.0"),  # shorter training
        row("rt", "sparsebert-from-teacher", 0.1, knobs="lr=0.001"),  # other knobs
        row("rt", "sparsebert-logits-kd", 0.1, sparsity="0.8"),  # no recipe at 0.8
        row("trec6", "sparsebert", 0.8),  # the recipe alone
    ]
    assert sparse.ablation_plot_of(rows, tmp_path / "a.png") == tmp_path / "a.png"
    [panel] = drawn
    assert panel["groups"] == ["sparsebert", "sparsebert-no-kd"]
    assert panel["series"][0] == {"label": "test", "values": [0.8, 0.7]}
    assert panel["ref"] == {"dense test": 0.9, "dense dev": 0.91}
    assert sparse.ablation_plot_of(rows[-1:], tmp_path / "b.png") is None


def test_sparse_latency_figure_divides_each_rows_csr_time_by_its_own_teacher_time(tmp_path):
    """The latency figure: per batch and teacher runtime, one line per task of the recipe's
    CSR time over the dense teacher's time in the same row, by sparsity; ablations, other
    seeds, shorter trainings and rows without timings stay out."""
    import bench.sparse_report as sparse

    def row(sparsity, csr, teacher, ort, method="sparsebert", seed="0", epochs="12.0"):
        times = {}
        for b, scale in ((1, 1), (32, 10)):
            times |= {f"latency_ms_b{b}": str(csr * scale), f"dense_ort_ms_b{b}": str(ort * scale)}
            times[f"dense_latency_ms_b{b}"] = str(teacher * scale)
        return dict(task="rt", method=method, sparsity=sparsity, seed=seed, epochs=epochs,
                    knobs="", **times)  # fmt: skip

    rows = [
        row("0.95", 6, 8, 5),
        row("0.8", 9, 6, 4),
        row("0.9", 1, 100, 100, method="sparsebert-no-kd"),
        row("0.9", 1, 100, 100, seed="1"),
        row("0.9", 1, 100, 100, epochs="3.0"),
        {**row("0.9", 1, 1, 1), "dense_ort_ms_b1": "", "dense_ort_ms_b32": ""},
    ]
    panels = {p["title"]: p for p in sparse.latency_panels(rows)}
    assert len(panels) == 4 and all(p["hline"] == 1.0 for p in panels.values())
    [torch] = panels["batch 32: CSR against the teacher in torch"]["lines"]
    assert torch == {"label": "rt", "x": [0.8, 0.9, 0.95], "y": [1.5, 1.0, 0.75]}
    [ort] = panels["batch 1: CSR against the teacher in ONNX Runtime"]["lines"]
    assert ort == {"label": "rt", "x": [0.8, 0.95], "y": [9 / 4, 6 / 5]}
    assert sparse.latency_plot_of(rows, tmp_path / "l.png") == tmp_path / "l.png"
    assert (tmp_path / "l.png").is_file() and sparse.latency_plot_of(rows[2:3], tmp_path) is None


def test_tokens_study_copies_the_grids_runs_runs_the_rest_and_finds_enough(tmp_path):
    """bench.tokens: a grid row of the same cell is copied, not rerun; the missing size is
    run by the grid's worker; a rerun runs nothing; the report names the smallest size within
    the seeds' spread of the largest."""
    from bench.rows import COLUMNS, append_row
    from bench.tokens import enough, main, summary
    from kprune.pruning.knowledge import SCORE_SCALE

    write_rt_project(tmp_path, epochs=1)
    (tmp_path / "params.yaml").write_text("bench:\n  threads: 1\n  repeats: 1\n")
    grid = tmp_path / "grid.csv"
    copied = dict.fromkeys(COLUMNS, "")
    copied.update(task="rt", model="teachers", method="kprune", reduction=0.5, seed=0)
    copied.update(metric_name="accuracy")
    copied.update(metric=0.625, dev_metric=0.75, dense_metric=0.8, prune_seconds=1.5)
    copied.update(tokens=612, tokens_asked=600, score_scale=SCORE_SCALE, threads=1, load_1m=0)
    append_row(grid, copied, COLUMNS)
    args = ["--params", str(tmp_path / "params.yaml"), "--tasks", "rt", "--reductions", "0.5"]
    args += ["--seeds", "0", "--tokens", "300,600", "--grid", str(grid)]
    args += ["--teachers", str(tmp_path / "teachers"), "--data-dir", str(tmp_path / "tasks")]
    args += ["--out", str(tmp_path / "docs")]
    assert main(args) == 0
    with open(tmp_path / "docs" / "tokens.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(int(r["tokens_asked"]) for r in rows) == [300, 600]
    assert [r["metric"] for r in rows if r["tokens_asked"] == "600"] == ["0.625"]
    mtime = (tmp_path / "docs" / "tokens.csv").stat().st_mtime_ns
    assert main(args) == 0
    assert (tmp_path / "docs" / "tokens.csv").stat().st_mtime_ns == mtime
    md = (tmp_path / "docs" / "tokens.md").read_text()
    assert "| rt | 0.5 | 600 |" in md
    # the copied run ran elsewhere: its metric counts, its seconds do not
    assert "| 0.6250 ± 0.0000 | – |" in md
    own = {**copied, "seed": "1", "prune_seconds": "9.0", "finished_at": "later"}
    twin = {**own, "seed": "2", "prune_seconds": "100", "same_run_as": "seed 1 (whole split)"}
    mixed = [{k: str(v) for k, v in copied.items()}, own, twin]
    (cell,) = summary(mixed, copied=[mixed[0]])
    assert cell["seeds"] == [0, 1, 2] and cell["seconds"] == 9.0
    mixed = mixed[:2]
    assert summary(mixed)[0]["seconds"] == 5.25
    assert (tmp_path / "docs" / "plots" / "tokens_rt.png").is_file()

    def cell(tokens, dev, std=0.0):
        return {"tokens": tokens, "dev": dev, "dev_std": std}

    assert enough([cell(8, 0.70), cell(16, 0.796), cell(32, 0.80, 0.002)]) == 16
    assert enough([cell(8, 0.70), cell(16, 0.78), cell(32, 0.80, 0.03)]) == 16
    assert enough([cell(8, 0.70), cell(16, 0.78), cell(32, 0.80)]) == 32
    assert enough([cell(32, 0.80)]) is None


def test_dev_curve_takes_the_recorded_sparsity_or_the_schedules_at_the_last_raise():
    from bench.sparse import curve

    report = {"config": {"mask_updates": 4}, "steps": 8, "metric": "accuracy", "sparsity": 0.9}
    report["history"] = [
        {"step": 4, "dev": {"accuracy": 0.5}},
        {"step": 8, "dev": {"accuracy": 0.6}},
    ]
    # raises at steps 2, 4, 6, 8: at step 4 the mask holds 0.9 (1 - (1 - 4/8)^3) = 0.7875
    assert curve(report) == [[0.5, 0.7875, 0.5], [1.0, 0.9, 0.6]]
    report["history"][0]["sparsity"] = 0.7
    assert curve(report)[0] == [0.5, 0.7, 0.5]


def test_profile_runs_one_measurement_pass_at_each_pass_size_and_reports_its_rate(tmp_path, capsys):
    from bench.profile import main

    root = write_rt_project(tmp_path, epochs=1)
    capsys.readouterr()  # the teacher's fine-tuning log
    common = ["--teacher", str(root / "teachers" / "rt"), "--data-dir", str(root / "tasks")]
    for pass_tokens in ("0", "64"):
        assert main([*common, "--tokens", "400", "--rows", "3", "--pass-tokens", pass_tokens]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if " pass over " in x)
        assert f"pass tokens {pass_tokens}," in line and "GFLOP/s" in line


def test_tokens_study_copies_a_whole_split_run_to_the_other_seeds(tmp_path):
    """A size that draws the whole training split (two asked sizes drew the same tokens) is
    the same sample for every seed: the other seeds' rows are copies, marked; a size below it
    and a task whose split is not exhausted are left to run."""
    from bench.rows import COLUMNS, append_row, read_rows
    from bench.tokens import copy_whole_split_runs, whole_split
    from kprune.pruning.knowledge import SCORE_SCALE

    csv_path = tmp_path / "tokens.csv"
    base = dict.fromkeys(COLUMNS, "")
    base.update(method="kprune", seed=0, score_scale=SCORE_SCALE, metric=0.9, dev_metric=0.91)
    for task, asked, got in [
        ("trec6", 32000, 31902),
        ("trec6", 64000, 58271),
        ("trec6", 100000, 58271),
        ("rt", 64000, 64223),
        ("rt", 100000, 100886),
    ]:
        for red in (0.6, 0.8):
            row = {**base, "task": task, "reduction": red, "tokens": got, "tokens_asked": asked}
            append_row(csv_path, {**row, "metric": {0.6: 0.84, 0.8: 0.82}[red]}, COLUMNS)
    assert whole_split(read_rows(csv_path)) == {"trec6": (64000, 58271)}
    # two seeds at one size: the same tokens and metric mean the whole split; another metric
    # (another sample that happened to have as many tokens) does not
    spam = {**base, "task": "sms-spam", "reduction": 0.6, "tokens": 90293, "tokens_asked": 100000}
    alike = tmp_path / "alike.csv"
    for seed, metric in [(0, 0.97), (1, 0.97), (0, 0.95)]:
        path = alike if metric == 0.97 else tmp_path / "unlike.csv"
        append_row(path, {**spam, "seed": seed, "metric": metric}, COLUMNS)
    append_row(tmp_path / "unlike.csv", {**spam, "seed": 1, "metric": 0.96}, COLUMNS)
    assert whole_split(read_rows(alike)) == {"sms-spam": (100000, 90293)}
    assert whole_split(read_rows(tmp_path / "unlike.csv")) == {}
    tasks, reds = ("rt", "trec6"), (0.6, 0.8)
    assert copy_whole_split_runs(csv_path, tasks, reds, 1, 32000) == 0
    assert copy_whole_split_runs(csv_path, tasks, reds, 1, 100000) == 2
    assert copy_whole_split_runs(csv_path, tasks, reds, 1, 100000) == 0  # resumable
    new = [r for r in read_rows(csv_path) if r["seed"] == "1"]
    assert {(r["task"], r["reduction"], r["tokens_asked"], r["metric"]) for r in new} == {
        ("trec6", "0.6", "100000", "0.84"),
        ("trec6", "0.8", "100000", "0.82"),
    }
    assert all("whole split" in r["same_run_as"] for r in new)


def test_throughput_row_says_what_it_measured(tmp_path):
    """bench.throughput appends one row: the model's name and size, the step's shape, and
    tokens per second consistent with the seconds per step; a missing folder is one line."""
    from bench.throughput import main

    folder = make_tiny_model(tmp_path / "tiny-base", "mpnet")
    out = tmp_path / "throughput.csv"
    args = ["--model", str(folder), "--batch", "4", "--length", "16", "--steps", "2"]
    assert main([*args, "--threads", "1", "--out", str(out)]) == 0
    with open(out) as fh:
        [row] = list(csv.DictReader(fh))
    assert row["model"] == "tiny-base" and int(row["params"]) > 1000
    assert float(row["tokens_per_second"]) == pytest.approx(
        4 * 16 / float(row["seconds_per_step"]), rel=0.05
    )
    assert main(["--model", str(tmp_path / "nope"), "--out", str(out)]) == 2


def test_the_own_pages_hold_the_default_teachers_rows_whatever_was_run_last():
    """benchmarks.md / sparse.md hold MiniLM's rows even after a run on MPNet's teachers; a
    CSV of one model's rows only gives that model the page."""
    from bench.rows import main_model

    both = [{"model": "minilm-l6"}, {"model": "mpnet-base"}]
    assert main_model(both, "data/teachers/mpnet-base") == "minilm-l6"
    assert main_model(both[1:], "data/teachers/mpnet-base") == "mpnet-base"
