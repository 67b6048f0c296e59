"""The latency budget, measured: how close the table's prediction is to the pruned model's
measured latency, and what the latency budget's masks buy against the FLOPs budget's.

For each task, runtime setting and speed-up: the teacher's latency table on that runtime
(measured once per base model and setting, cached under ``--store``), K-prune with
``--budget latency --speedup S`` (the prediction), the pruned model timed on the runtime (the
measurement), and K-prune with the FLOPs budget at the FLOPs reduction the latency budget came
to, timed the same way. Test-split metrics of both. One row per (task, runtime, batch,
speed-up) appended to docs/latency.csv as it is measured (resumable); docs/latency-results.md
is written from the CSV. Time it with the cores to itself: rows record the load average.

  python -m bench.latency                                    # four tasks, torch b1 and ort-int8 b32
  python -m bench.latency --tasks rt --runtimes torch:32 --speedups 2 --tokens 32000
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.rows import TEACHERS, TEACHERS_HELP, append_row, model_of, read_rows, utc_stamp
from kprune.atomic import write_text
from kprune.entry import run_main
from kprune.errors import KPruneError

TASKS = ("rt", "vader-movie", "trec6", "sms-spam")
RUNTIMES = ("torch:1", "ort-int8:32")
SPEEDUPS = (2.0, 3.0)
COLUMNS = [
    "task",
    "model",
    "runtime",
    "batch",
    "seq_len",
    "threads",
    "speedup",
    "reduction",
    "target_ms",
    "predicted_ms",
    "measured_ms",
    "error_pct",
    "dense_ms",
    "metric_name",
    "test",
    "flops_test",
    "flops_measured_ms",
    "tokens",
    "table_method",
    "code_digest",
    "finished_at",
    "load_1m",
]
OLD_METHOD = "one-layer"  # rows from before the column: tables timed on one-layer copies


def is_stale(row: dict) -> bool:
    """A row whose latency table was timed another way than this code's: its prediction
    says nothing about the current tables (kept in the CSV, rerun, left out of the report)."""
    from kprune.pruning.latency_table import METHOD

    return (row.get("table_method") or OLD_METHOD) != METHOD


def parse_runtimes(text: str) -> list[tuple[str, int]]:
    """``torch:1,ort-int8:32`` -> [(runtime, batch), ...]."""
    out = []
    for item in text.split(","):
        name, _, batch = item.strip().partition(":")
        try:
            out.append((name, int(batch)))
        except ValueError:
            raise KPruneError(
                f"--runtimes item {item!r} is not RUNTIME:BATCH, e.g. ort-int8:32"
            ) from None
    return out


def measure(args, task_name: str, name: str, batch: int, speedup: float) -> dict:
    """One row: the latency-budget model's prediction and measurement, and the FLOPs-budget
    model at the same FLOPs."""
    from flows.keys import code_digest
    from kprune.config import PruneConfig
    from kprune.data.tasks import load_task
    from kprune.deploy.latency import latency_ms
    from kprune.deploy.runtime import Runtime
    from kprune.models.checkpoint import load_model
    from kprune.models.loading import load_tokenizer
    from kprune.pruning.assemble import prune
    from kprune.pruning.latency_table import METHOD, cached_table
    from kprune.train.evaluation import evaluate_model

    teacher = str(Path(args.teachers) / task_name)
    rt = Runtime(name, batch, args.seq_len, args.threads)
    tables = Path(args.store) / "tables"
    table = cached_table(load_model(teacher), rt, tables, progress=True)
    table_file = tables / f"{rt.key}-{table.key}.json"  # where cached_table keeps it
    task = load_task(task_name, args.data_dir)
    tok = load_tokenizer(teacher)
    common = {"tokens": args.tokens, "seed": args.seed}
    cfg = PruneConfig(
        budget="latency", speedup=speedup, latency_table=str(table_file), **common, **rt_knobs(rt)
    )
    model, report = prune(teacher, task, cfg, eval_split=None, device="cpu")
    budget = report["latency_budget"]
    measured = latency_ms(model, rt, repeats=args.repeats)
    flops_model, _ = prune(
        teacher, task, PruneConfig(reduction=report["reduction"], **common), eval_split=None
    )
    metric = task.spec.metric
    return {
        "task": task_name,
        "model": model_of(args.teachers),
        "runtime": name,
        "batch": batch,
        "seq_len": args.seq_len,
        "threads": args.threads,
        "speedup": speedup,
        "reduction": round(report["reduction"], 4),
        "target_ms": budget["target_ms"],
        "predicted_ms": budget["predicted_ms"],
        "measured_ms": round(measured, 4),
        "error_pct": round(100 * (budget["predicted_ms"] / measured - 1), 2),
        "dense_ms": round(table.dense_ms, 4),
        "metric_name": metric,
        "test": evaluate_model(model, tok, task, "test")[metric],
        "flops_test": evaluate_model(flops_model, tok, task, "test")[metric],
        "flops_measured_ms": round(latency_ms(flops_model, rt, repeats=args.repeats), 4),
        "tokens": args.tokens,
        "table_method": METHOD,
        "code_digest": code_digest()[:12],
        "finished_at": utc_stamp(),
        "load_1m": round(os.getloadavg()[0], 2),
    }


def rt_knobs(rt) -> dict:
    return {"runtime": rt.name, "batch": rt.batch, "seq_len": rt.seq_len, "threads": rt.threads}


def report(rows: list[dict]) -> str:
    """docs/latency-results.md: each row's prediction against its measurement (rows of an
    older table method left out and counted)."""
    stale = [r for r in rows if is_stale(r)]
    rows = [r for r in rows if not is_stale(r)]
    lines = [
        "# Latency budget: predicted against measured",
        "",
        "Generated by `python -m bench.latency` from [latency.csv](latency.csv). K-prune with "
        "`--budget latency --speedup S` on each runtime; predicted: the latency table's sum "
        "over the kept units; measured: the pruned model's median latency on that runtime; "
        "FLOPs budget: K-prune at the FLOPs reduction the latency budget came to, timed the "
        "same way. Test split.",
        "",
        "| model | task | runtime | batch | speed-up | R | target ms | predicted ms | measured "
        "ms | error | test | FLOPs-budget test | FLOPs-budget ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['task']} | {r['runtime']} | {r['batch']} | {r['speedup']} | "
            f"{float(r['reduction']):.3f} | {float(r['target_ms']):.2f} | "
            f"{float(r['predicted_ms']):.2f} | {float(r['measured_ms']):.2f} | "
            f"{float(r['error_pct']):+.1f}% | {float(r['test']):.4f} | "
            f"{float(r['flops_test']):.4f} | {float(r['flops_measured_ms']):.2f} |"
        )
    if stale:
        codes = ", ".join(sorted({r.get("code_digest") or "?" for r in stale}))
        lines += [
            "",
            f"{len(stale)} row(s) whose latency table was timed another way (code {codes}) "
            "are kept in the CSV and left out here.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help="RUNTIME:BATCH,...")
    p.add_argument("--speedups", default=",".join(map(str, SPEEDUPS)))
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--tokens", type=int, default=32_000, help="sample tokens of each prune")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teachers", default=TEACHERS, help=TEACHERS_HELP)
    p.add_argument("--data-dir", default=None, help="prepared tasks (default data/tasks)")
    p.add_argument("--store", default="data/latency-bench", help="cached latency tables")
    p.add_argument("--out", default="docs/latency", help="writes OUT.csv and OUT-results.md")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)

    def go() -> None:
        csv_path, md = Path(f"{args.out}.csv"), Path(f"{args.out}-results.md")
        if not args.report_only:
            speedups = [float(s) for s in args.speedups.split(",")]
            done = {
                (r["model"], r["task"], r["runtime"], r["batch"], r["speedup"])
                for r in read_rows(csv_path)
                if not is_stale(r)
            }
            for task in args.tasks.split(","):
                for name, batch in parse_runtimes(args.runtimes):
                    for speedup in speedups:
                        key = (model_of(args.teachers), task, name, str(batch), str(speedup))
                        if key in done:
                            continue
                        try:
                            row = measure(args, task, name, batch, speedup)
                        except KPruneError as exc:  # e.g. a speed-up the runtime cannot give
                            print(f"{task} {name} b{batch} {speedup}x: skipped: {exc}")
                            continue
                        append_row(csv_path, row, COLUMNS)
                        print(
                            f"{task} {name} b{batch} {speedup}x: predicted "
                            f"{row['predicted_ms']:.2f} ms, measured {row['measured_ms']:.2f} "
                            f"ms ({row['error_pct']:+.1f}%)"
                        )
        rows = read_rows(csv_path)
        write_text(md, report(rows))
        print(f"latency: {len(rows)} rows -> {md}")

    return run_main(go)


if __name__ == "__main__":
    raise SystemExit(main())
