"""Stage bench: every method x reduction x seed on the demo teachers, side by side.

Each configuration runs in its own process (so its peak RSS is its own); rows are appended to
the CSV as they finish, and a rerun skips rows already there (resumable). Outputs:
docs/benchmarks.csv, docs/benchmarks.md, docs/bench_<task>.png, and an MLflow run.
The headline methods (K-prune and the baselines) run over the whole grid before the
ablations, seed by seed, so a run stopped early still compares them on every task. Two
method names for one computation (``kprune`` and the ablation that spells out its default)
are run once and reported under both (column ``same_run_as``).

    python -m bench --quick     # rt, reductions 0.4 and 0.6, seed 0, 8K-token sample
    python -m bench             # the bench section of params.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench.models import latencies
from bench.rows import (
    COLUMNS,
    TEACHERS,
    TEACHERS_HELP,
    append_row,
    is_stale,
    model_of,
    read_rows,
    tokens_asked,
    utc_stamp,
)
from kprune.config import BenchConfig
from kprune.entry import peak_rss_mb, run_main
from kprune.errors import KPruneError

QUICK = BenchConfig(
    tasks=("rt",),
    methods=("kprune", "kwon", "magnitude", "random"),
    reductions=(0.4, 0.6),
    seeds=(0,),
    tokens=8000,
    repeats=5,
)


def worker(args: argparse.Namespace) -> None:
    """One configuration: prune, evaluate on the split, time the pruned model; print JSON."""
    import torch

    from kprune.config import PruneConfig
    from kprune.data.tasks import load_task
    from kprune.models.loading import load_tokenizer
    from kprune.pruning.assemble import prune
    from kprune.train.evaluation import evaluate_model

    torch.set_num_threads(args.threads)
    teacher = f"{args.teachers}/{args.task}"
    task = load_task(args.task, args.data_dir)
    t0 = time.perf_counter()
    cfg = PruneConfig(reduction=args.reduction, tokens=args.tokens, seed=args.seed)
    pruned, report = prune(
        teacher, task, cfg, device="cpu", progress=False, eval_split=None, method=args.method
    )
    seconds = time.perf_counter() - t0
    tokenizer = load_tokenizer(teacher)
    length = cfg.sample.max_length
    metric = evaluate_model(pruned, tokenizer, task, args.split, length, "cpu")
    dev = evaluate_model(pruned, tokenizer, task, "dev", length, "cpu")  # for choosing settings
    row = {
        "metric": metric[task.spec.metric],
        "dev_metric": dev[task.spec.metric],
        "heads_kept": json.dumps(report["kept_heads_per_layer"]),
        "neurons_kept": json.dumps(report["kept_neurons_per_layer"]),
        "flops_kept": report["flops_kept"],
        "params_kept": report["params_kept"],
        "prune_seconds": round(seconds, 2),
        "tokens": report["sample"]["tokens"],
        "peak_rss_mb": peak_rss_mb(),
    }
    for b, ms in latencies(pruned, args.repeats, args.threads).items():
        row[f"latency_ms_b{b}"] = ms
    # the 1-minute load average as the run ends: about --threads on an otherwise idle machine;
    # more means something else competed for the cores and the timings are inflated
    row["load_1m"] = round(os.getloadavg()[0], 2)
    row["finished_at"] = utc_stamp()
    print("BENCH-ROW " + json.dumps(row))


def dense(args: argparse.Namespace) -> None:
    """The teacher's metric and latency (one per task)."""
    import torch

    from kprune.data.tasks import load_task
    from kprune.models.checkpoint import load_model
    from kprune.models.loading import load_tokenizer
    from kprune.train.evaluation import evaluate_model

    torch.set_num_threads(args.threads)
    teacher = f"{args.teachers}/{args.task}"
    task = load_task(args.task, args.data_dir)
    model = load_model(teacher)
    row = {
        "dense_metric": evaluate_model(
            model, load_tokenizer(teacher), task, args.split, 128, "cpu"
        )[task.spec.metric],
        "metric_name": task.spec.metric,
    }
    for b, ms in latencies(model, args.repeats, args.threads).items():
        row[f"dense_latency_ms_b{b}"] = ms
    print("BENCH-ROW " + json.dumps(row))


def _call(mode: str, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "bench", f"--{mode}", *extra]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "KPRUNE_LOG_LEVEL": "WARNING"}
    )
    rows = [line[10:] for line in proc.stdout.splitlines() if line.startswith("BENCH-ROW ")]
    if proc.returncode != 0 or not rows:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{' '.join(extra)}: {err}")
    return json.loads(rows[-1])


def plan(p: BenchConfig) -> list[tuple[str, float, str, int]]:
    """(task, reduction, method, seed) in run order: the priority methods over the whole grid
    first, seed by seed, so a stopped run still compares K-prune with the baselines on every
    task; then the ablations."""
    first = [m for m in p.methods if m in p.priority]
    rest = [m for m in p.methods if m not in p.priority]
    return [
        (task, reduction, method, seed)
        for group in (first, rest)
        for seed in p.seeds
        for task in p.tasks
        for reduction in p.reductions
        for method in group
    ]


def _key(task: str, reduction: float, method: str, seed: int, tokens: int) -> tuple:
    from kprune.config import PruneConfig
    from kprune.pruning.methods import run_key

    cfg = PruneConfig(reduction=reduction, tokens=tokens, seed=seed)
    return (task, run_key(method, cfg))


def run_bench(
    p: BenchConfig,
    teachers: str,
    data_dir: str,
    out_dir: Path,
    csv_path: Path | None = None,
    dense: dict[str, dict] | None = None,
) -> list[dict]:
    """Run the grid's missing rows, appending each to ``csv_path`` (default
    OUT_DIR/benchmarks.csv) as it finishes; returns them. ``dense``: the teachers' rows by
    task, filled as measured (pass one dict to several calls to measure each teacher once)."""
    from flows.keys import code_digest
    from kprune.pruning.knowledge import SCORE_SCALE

    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = csv_path or out_dir / "benchmarks.csv"
    model = model_of(teachers)
    rows = [
        r
        for r in read_rows(csv_path)
        if r["model"] == model and tokens_asked(r) == p.tokens and not is_stale(r)
    ]
    finished = {(r["task"], r["method"], float(r["reduction"]), int(r["seed"])) for r in rows}
    by_key = {
        _key(r["task"], float(r["reduction"]), r["method"], int(r["seed"]), p.tokens): r
        for r in rows
    }
    code = code_digest()[:12]
    dense = {} if dense is None else dense
    common = [
        "--teachers",
        teachers,
        "--data-dir",
        data_dir,
        "--split",
        p.split,
        "--threads",
        str(p.threads),
        "--repeats",
        str(p.repeats),
    ]
    new = []
    for task, reduction, method, seed in plan(p):
        if (task, method, reduction, seed) in finished:
            continue
        key = _key(task, reduction, method, seed, p.tokens)
        if key in by_key:  # the same computation under another name: reuse its measurement
            twin = by_key[key]
            row = {
                **twin,
                "method": method,
                "same_run_as": twin.get("same_run_as") or twin["method"],
            }
        else:
            if task not in dense:
                try:
                    dense[task] = _call("dense", [*common, "--task", task])
                except RuntimeError as exc:
                    raise KPruneError(f"bench: the dense teacher failed: {exc}") from None
            extra = [
                *common,
                "--task",
                task,
                "--method",
                method,
                "--reduction",
                str(reduction),
                "--seed",
                str(seed),
                "--tokens",
                str(p.tokens),
            ]
            try:
                got = _call("worker", extra)
            except RuntimeError as exc:
                print(f"bench: failed {exc}", file=sys.stderr)
                continue
            row = {
                "task": task,
                "model": model,
                "method": method,
                "reduction": reduction,
                "seed": seed,
                **dense[task],
                **got,
                "tokens_asked": p.tokens,
                "threads": p.threads,
                "same_run_as": "",
                "code": code,
                "score_scale": SCORE_SCALE,
            }
            by_key[key] = row
        new.append(row)
        append_row(csv_path, row, COLUMNS)
        print(
            f"{task:12s} {method:18s} r={reduction:.1f} seed={seed} "
            f"{row['metric_name']}={float(row['metric']):.4f} "
            f"flops={float(row['flops_kept']):.3f} {float(row['prune_seconds']):.0f}s "
            f"rss={float(row['peak_rss_mb']):.0f}MB"
            + (f" (same run as {row['same_run_as']})" if row["same_run_as"] else ""),
            flush=True,
        )
    return new


def with_overrides(cfg: BenchConfig, args: argparse.Namespace) -> BenchConfig:
    """The grid with the command line's --tasks/--methods/--reductions/--seeds/--tokens."""
    from kprune.pruning.methods import get_method

    def items(text: str, cast) -> tuple:
        try:
            return tuple(cast(x.strip()) for x in text.split(",") if x.strip())
        except ValueError as exc:
            raise KPruneError(f"bench: cannot read {text!r}: {exc}") from None

    changes = {}
    for name, cast in (("tasks", str), ("methods", str), ("reductions", float), ("seeds", int)):
        if getattr(args, name):
            changes[name] = items(getattr(args, name), cast)
    if args.tokens and not args.worker:
        changes["tokens"] = args.tokens
    cfg = replace(cfg, **changes)
    for m in cfg.methods:
        get_method(m)  # an unknown name fails here, before any run
    return cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--quick", action="store_true", help="one task, two reductions, one seed")
    p.add_argument("--teachers", default=TEACHERS, help=TEACHERS_HELP)
    p.add_argument("--data-dir", default="data/tasks")
    p.add_argument(
        "--out",
        default=None,
        help="folder for the CSV, report and plots (default docs, or docs/quick)",
    )
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rewrite the markdown and plots from the CSV in --out (and log them)",
    )
    grid = p.add_argument_group("grid overrides (default: the bench section of --params)")
    grid.add_argument("--tasks", help="comma-separated task names, e.g. rt,trec6")
    grid.add_argument("--methods", help="comma-separated method names (see kprune prune --help)")
    grid.add_argument("--reductions", help="comma-separated FLOPs reductions, e.g. 0.4,0.6")
    grid.add_argument("--seeds", help="comma-separated sample seeds, e.g. 0,1,2")
    grid.add_argument("--tokens", type=int, help="pruning sample size in tokens")
    for hidden in ("--worker", "--dense"):
        p.add_argument(hidden, action="store_true", help=argparse.SUPPRESS)
    for name, typ in (
        ("--task", str),
        ("--method", str),
        ("--reduction", float),
        ("--seed", int),
        ("--split", str),
        ("--threads", int),
        ("--repeats", int),
    ):
        p.add_argument(name, type=typ, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return run_main(lambda: worker(args))
    if args.dense:
        return run_main(lambda: dense(args))

    def run() -> None:
        from bench.report import write_report
        from kprune.config import load_section

        cfg = QUICK if args.quick else load_section(args.params, "bench", BenchConfig)
        cfg = with_overrides(cfg, args)
        out = Path(args.out or ("docs/quick" if args.quick else "docs"))
        if args.report_only and not (out / "benchmarks.csv").is_file():
            raise KPruneError(f"{out / 'benchmarks.csv'} does not exist; run the benchmark first")
        rows = [] if args.report_only else run_bench(cfg, args.teachers, args.data_dir, out)
        paths = write_report(read_rows(out / "benchmarks.csv"), out, Path(args.teachers))
        print(f"wrote {', '.join(str(p) for p in paths)}")
        if not args.no_track and (rows or args.report_only):
            from flows.tracking import log_benchmark

            log_benchmark(out, paths)

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())
