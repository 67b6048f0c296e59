"""What a pruned model buys where it is deployed: metric and CPU latency of five variants.

For each task and reduction: the dense teacher in torch, the K-prune model in torch, the
K-prune model in ONNX Runtime (fp32, fused) and with dynamic int8 weights, and the dense
teacher in ONNX Runtime int8 for reference. Metric on the test split; latency at batch 1 and
32, length 128, ``--threads`` threads (median of ``--repeats``). One row per variant is
appended to docs/deploy.csv as it is measured (resumable: a measured variant of this code is
not measured again); docs/deploy.md is rewritten from the CSV. Pruned models and ONNX files are
cached under data/deploy/. Time it with the cores to itself: rows record the load average.

  python -m bench.deploy                                   # four tasks at R = 0.6, rt at 0.4 / 0.8
  python -m bench.deploy --runs rt:0.6 --tokens 32000
  python -m bench.deploy --report-only
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.models import cached_kprune, cached_onnx, latencies
from bench.rows import (
    TEACHERS,
    TEACHERS_HELP,
    append_row,
    is_busy,
    model_of,
    read_rows,
    utc_stamp,
)
from kprune.atomic import write_text
from kprune.entry import run_main
from kprune.errors import KPruneError

RUNS = ("rt:0.6", "vader-movie:0.6", "trec6:0.6", "sms-spam:0.6", "rt:0.4", "rt:0.8")
VARIANTS = ("dense-torch", "pruned-torch", "pruned-ort-fp32", "pruned-ort-int8", "dense-ort-int8")
COLUMNS = [
    "task",
    "model",
    "reduction",
    "variant",
    "metric_name",
    "test",
    "ms_b1",
    "ms_b32",
    "bytes",
    "tokens",
    "threads",
    "code_digest",
    "finished_at",
    "load_1m",
]


def _parse_runs(text: str) -> list[tuple[str, float]]:
    runs = []
    for item in text.split(","):
        task, _, r = item.strip().partition(":")
        try:
            runs.append((task, float(r)))
        except ValueError:
            raise KPruneError(f"--runs item {item!r} is not TASK:REDUCTION, e.g. rt:0.6") from None
    return runs


def measure_run(args, task_name: str, reduction: float, done: set, csv_path: Path) -> int:
    """The missing variants of one task and reduction; returns rows written."""
    import torch

    from flows.keys import code_digest
    from kprune.data.tasks import load_task
    from kprune.deploy.export import OrtModel, int8_path
    from kprune.models.checkpoint import load_model
    from kprune.models.loading import load_tokenizer
    from kprune.train.evaluation import evaluate_model

    model_name = model_of(args.teachers)
    todo = [v for v in VARIANTS if (model_name, task_name, reduction, v) not in done]
    if not todo:
        return 0
    teacher = Path(args.teachers) / task_name
    task = load_task(task_name, args.data_dir)
    tok = load_tokenizer(str(teacher))
    pruned = cached_kprune(
        args.store, args.teachers, task_name, reduction, args.tokens, data_dir=args.data_dir
    )
    dense_dir = Path(args.store) / f"{model_name}-{task_name}-dense"
    dense_onnx = cached_onnx(teacher, dense_dir / "model.onnx", True)
    pruned_onnx = cached_onnx(pruned, pruned / "onnx" / "model.onnx", True)
    config = load_model(teacher).config
    digest = code_digest()[:12]
    written = 0
    for variant in todo:
        if variant.endswith("torch"):
            model = load_model(teacher if variant.startswith("dense") else pruned)
            size = sum(p.numel() * p.element_size() for p in model.parameters())
        else:
            path = dense_onnx if variant.startswith("dense") else pruned_onnx
            path = int8_path(path) if variant.endswith("int8") else path
            model = OrtModel(path, threads=args.threads)
            model.config = config  # latency_ms draws token ids from the vocabulary
            size = path.stat().st_size
        with torch.no_grad():
            test = evaluate_model(model, tok, task, "test")[task.spec.metric]
            ms = latencies(model, args.repeats, args.threads)
        row = {
            "task": task_name,
            "model": model_name,
            "reduction": reduction,
            "variant": variant,
            "metric_name": task.spec.metric,
            "test": test,
            "ms_b1": ms[1],
            "ms_b32": ms[32],
            "bytes": size,
            "tokens": args.tokens,
            "threads": args.threads,
            "code_digest": digest,
            "finished_at": utc_stamp(),
            "load_1m": round(os.getloadavg()[0], 2),
        }
        append_row(csv_path, row, COLUMNS)
        print(
            f"{task_name:12s} R={reduction} {variant:16s} test={test:.4f} "
            f"b1={ms[1]:.1f} ms b32={ms[32]:.1f} ms"
        )
        written += 1
    return written


def report(rows: list[dict]) -> str:
    """docs/deploy.md: per base model, task and reduction, each variant's metric, latency and
    speed-up over dense torch."""
    lines = [
        "# Deployment: metric and CPU latency of the pruned model",
        "",
        "Generated by `python -m bench.deploy` from `deploy.csv` beside this file. Test split; "
        "latency: median ms of one forward pass, length 128; speed-up over dense torch of the "
        "same task. Rows measured with a 1-minute load above threads + 1 are marked *busy* "
        "(their times are not comparable).",
        "",
        "| model | task | R | variant | test | Δ vs pruned torch | ms b1 | ms b32 | speed-up b1 | "
        "speed-up b32 | MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["model"], r["task"], float(r["reduction"])), {})[r["variant"]] = r
    for (model, task, reduction), by in sorted(groups.items()):
        dense, pruned = by.get("dense-torch"), by.get("pruned-torch")
        for v in VARIANTS:
            r = by.get(v)
            if r is None:
                continue
            sp = [
                f"{float(dense[k]) / float(r[k]):.2f}x" if dense else "–"
                for k in ("ms_b1", "ms_b32")
            ]
            delta = f"{float(r['test']) - float(pruned['test']):+.4f}" if pruned else "–"
            lines.append(
                f"| {model} | {task} | {reduction} | {v}{' (busy)' if is_busy(r) else ''} | "
                f"{float(r['test']):.4f} | {delta} | {float(r['ms_b1']):.1f} | "
                f"{float(r['ms_b32']):.1f} | {sp[0]} | {sp[1]} | "
                f"{int(float(r['bytes'])) / 1e6:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--runs", default=",".join(RUNS), help="TASK:REDUCTION,... (default: %(default)s)"
    )
    p.add_argument("--tokens", type=int, default=100_000, help="sample tokens of the pruning")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--teachers", default=TEACHERS, help=TEACHERS_HELP)
    p.add_argument("--data-dir", default=None, help="prepared tasks (default data/tasks)")
    p.add_argument("--store", default="data/deploy", help="cached pruned models and ONNX files")
    p.add_argument("--out", default="docs/deploy", help="writes OUT.csv and OUT.md")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)

    def go() -> None:
        csv_path, md = Path(f"{args.out}.csv"), Path(f"{args.out}.md")
        if not args.report_only:
            for task, reduction in _parse_runs(args.runs):
                done = {
                    (r["model"], r["task"], float(r["reduction"]), r["variant"])
                    for r in read_rows(csv_path)
                }
                measure_run(args, task, reduction, done, csv_path)
        rows = read_rows(csv_path)
        write_text(md, report(rows))
        print(f"deploy: {len(rows)} rows -> {md}")

    return run_main(go)


if __name__ == "__main__":
    raise SystemExit(main())
