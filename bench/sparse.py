"""SparseBERT rows of the benchmark: metric, nonzero encoder weights, FLOPs, training time and
CPU latency (sparse kernels) of each sparsify method, beside K-prune.

One row per (task, method, sparsity, reduction, seed) is appended to docs/sparse.csv as it
finishes (resumable: a finished row of this code is not run again); docs/sparse.md and
docs/plots/sparse_<task>.png are rewritten from the CSV and the K-prune rows of
docs/benchmarks.csv. Runs go in the order that answers the first question first: SparseBERT
at 0.9 and K-prune + SparseBERT on every task, then the other sparsities, then the ablations.
Latency: the sparse model with CSR kernels (kprune.sparse.kernels) and with ordinary dense
matmuls, against the dense teacher, in torch, length 128, ``--threads`` threads; time it with
the cores to itself, or train on busy cores and ``--retime`` later (each row's model is kept
under ``--store``).

  python -m bench.sparse                                  # the whole plan
  python -m bench.sparse --tasks rt --plan sparsebert:0.9
  python -m bench.sparse --tasks trec6 --plan sparsebert:0.9 --set logit_weight=0.17
  python -m bench.sparse --retime                         # every kept row's latency again
  python -m bench.sparse --retime --tasks trec6 --plan kprune+sparsebert:0.8:0.6  # one row
  python -m bench.sparse --report-only
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench.models import BATCHES, cached_kprune, cached_onnx, latencies
from bench.rows import (
    TEACHERS,
    TEACHERS_HELP,
    append_row,
    main_model,
    model_of,
    read_rows,
    utc_stamp,
    write_rows,
)
from bench.sparse_report import write_report
from kprune.data.tasks import REGISTRY
from kprune.entry import run_main
from kprune.errors import KPruneError
from kprune.report import COMBINED, sparse_summary

TASKS = tuple(REGISTRY)
# method:sparsity[:reduction], in the order they run
PLAN = (
    "sparsebert:0.9",
    f"{COMBINED}:0.8:0.6",
    "sparsebert:0.8",
    "sparsebert:0.95",
    "sparsebert-from-teacher:0.9",
    "sparsebert-no-kd:0.9",
    "sparsebert-logits-kd:0.9",
)
COLUMNS = [
    "task",
    "model",
    "method",
    "sparsity",
    "reduction",
    "seed",
    "metric_name",
    "dev",
    "test",
    "dense_dev",
    "dense_test",
    "nonzero_params",
    "matrix_params",
    "flops_kept",
    "train_seconds",
    "epochs",
    "knobs",
    "latency_ms_b1",
    "latency_ms_b32",
    "dense_kernel_ms_b1",
    "dense_kernel_ms_b32",
    "dense_latency_ms_b1",
    "dense_latency_ms_b32",
    "ort_ms_b1",
    "ort_ms_b32",
    "dense_ort_ms_b1",
    "dense_ort_ms_b32",
    "kernel",
    "dev_curve",
    "code_digest",
    "finished_at",
    "threads",
    "load_1m",
    "retimed_at",
]


def parse_plan(text: str) -> list[tuple[str, float, float]]:
    """``method:sparsity[:reduction]`` items -> (method, sparsity, reduction or 0)."""
    from kprune.pruning.methods import SPARSIFY_METHODS

    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            method, sparsity = parts[0], float(parts[1])
            reduction = float(parts[2]) if len(parts) > 2 else 0.0
        except (IndexError, ValueError):
            raise KPruneError(
                f"--plan item {item!r} is not METHOD:SPARSITY[:REDUCTION], e.g. sparsebert:0.9"
            ) from None
        if method not in SPARSIFY_METHODS and method != COMBINED:
            raise KPruneError(f"--plan method {method!r} is not a sparsify method")
        if (method == COMBINED) != (reduction > 0):
            raise KPruneError(f"--plan item {item!r}: only {COMBINED} takes a reduction")
        out.append((method, sparsity, reduction))
    return out


# knobs with a flag or a plan field of their own, not settable through --set
_OWN_FLAGS = ("method", "sparsity", "seed", "epochs")


def _knob_types() -> dict:
    """Each SparsifyConfig knob's name -> its value type (the default's), for --set and the
    ``knobs`` column alike."""
    import dataclasses

    from kprune.config import SparsifyConfig

    return {f.name: type(f.default) for f in dataclasses.fields(SparsifyConfig)}


def parse_knobs(items: list[str] | None, methods: list[str]) -> str:
    """``--set KEY=VALUE`` items -> the row's ``knobs`` text ("k=v;k=v", sorted, values in
    their knob's type; empty for none). Refused: a name that is not a sparsify knob, one that
    has its own flag, a value of the wrong type or holding the column's separator ';', and a
    knob a planned method sets itself (the method would silently win)."""
    from kprune.config import SparsifyConfig
    from kprune.pruning.methods import SPARSIFY_METHODS

    kinds = _knob_types()
    knobs = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in kinds or name in _OWN_FLAGS:
            settable = ", ".join(n for n in kinds if n not in _OWN_FLAGS)
            raise KPruneError(f"--set {item!r} is not KNOB=VALUE with a knob of: {settable}")
        if ";" in text:
            raise KPruneError(f"--set {item!r}: a value may not hold ';'; rename the folder")
        kind = kinds[name]
        try:
            knobs[name] = kind(text)
        except ValueError:
            kind_name = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
            raise KPruneError(f"--set {item!r}: {name} takes {kind_name}") from None
        for m in methods:
            if name in SPARSIFY_METHODS[m].overrides:
                raise KPruneError(f"--set {name}: method {m} sets it itself; plan another method")
    SparsifyConfig(**knobs)  # the config's own bounds, in its one-line error
    return ";".join(f"{k}={knobs[k]}" for k in sorted(knobs))


def knobs_of(text: str) -> dict:
    """The SparsifyConfig keyword arguments of a row's ``knobs`` text."""
    kinds = _knob_types()
    pairs = (kv.split("=", 1) for kv in str(text or "").split(";") if kv)
    return {k: kinds[k](v) for k, v in pairs}


def _key(model, task, method, sparsity, reduction, seed, epochs, knobs="") -> tuple:
    return (
        model,
        task,
        method,
        round(float(sparsity), 4),
        round(float(reduction or 0), 4),
        int(seed),
        round(float(epochs), 3),
        str(knobs or ""),
    )


KEY = ("model", "task", "method", "sparsity", "reduction", "seed", "epochs", "knobs")


def _row_key(row: dict) -> tuple:
    return _key(*(row.get(c) for c in KEY))


def _epochs(args) -> float:
    """The training epochs of this invocation's rows (--epochs, or the config's default)."""
    from kprune.config import SparsifyConfig

    return float(args.epochs or SparsifyConfig().epochs)


def _model_dir(args, model, task, method, sparsity, reduction, seed, epochs, knobs="") -> Path:
    """Where a row's sparse model is kept, so that its latency can be measured again."""
    name = f"{model}-{task}-{method}-s{sparsity}-R{reduction}-seed{seed}-e{float(epochs):g}"
    if knobs:
        name += "-" + str(knobs).replace(";", "-")
    return Path(args.store) / "models" / name


def curve(report: dict) -> list[list[float]]:
    """[fraction of training, sparsity, dev metric] after each epoch of a sparsify report
    (older reports lack the sparsity: the schedule's value at the last mask raise)."""
    from kprune.sparse.schedule import cubic_sparsity, update_steps

    cfg, total, m = report["config"], report["steps"], report["metric"]
    raises = update_steps(total, cfg["mask_updates"]) if report["sparsity"] > 0 else []
    out = []
    for h in report["history"]:
        done = [u for u in raises if u <= h["step"]]
        s = h.get("sparsity", cubic_sparsity(done[-1], total, report["sparsity"]) if done else 0)
        out.append([round(h["step"] / total, 4), round(s, 4), h["dev"][m]])
    return out


def fill_curves(args, csv_path: Path) -> int:
    """Give rows written before the dev_curve column theirs, from their kept model's
    report.json; returns how many."""
    rows, filled = read_rows(csv_path), 0
    for r in rows:
        keep = _model_dir(args, *(r.get(c) for c in KEY))
        if not r.get("dev_curve") and (keep / "report.json").is_file():
            r["dev_curve"] = json.dumps(curve(json.loads((keep / "report.json").read_text())))
            filled += 1
    if filled:
        write_rows(csv_path, rows, COLUMNS)
    return filled


def timings(args, keep: Path, teacher: Path) -> dict:
    """A row's latency columns, from its kept model folder ``keep``: the sparse model with
    ordinary dense matmuls (for K-prune + SparseBERT: the pruned architecture's speed), with
    CSR kernels, and in ONNX Runtime (fp32, fused graph: dense initializers, so zeros cost
    what other weights cost); the dense teacher in torch and in ONNX Runtime; with the threads
    and the 1-minute load they were measured under."""
    import torch

    from kprune.deploy.export import OrtModel
    from kprune.models.checkpoint import load_model
    from kprune.sparse.kernels import use_sparse_kernels

    graphs = {
        "ort": cached_onnx(keep, keep / "onnx" / "model.onnx"),
        "dense_ort": cached_onnx(
            teacher, Path(args.store) / f"{teacher.name}-dense" / "model.onnx"
        ),
    }
    model = load_model(keep)
    with torch.no_grad():
        ms = {
            "dense_kernel": latencies(model, args.repeats, args.threads),
            "latency": latencies(use_sparse_kernels(model, "csr"), args.repeats, args.threads),
            "dense_latency": latencies(load_model(teacher), args.repeats, args.threads),
        }
        for name, path in graphs.items():
            session = OrtModel(path, threads=args.threads)
            session.config = model.config  # latency_ms draws token ids from the vocabulary
            ms[name] = latencies(session, args.repeats, args.threads)
    row = {"kernel": "csr", "threads": args.threads, "load_1m": round(os.getloadavg()[0], 2)}
    for name, by_batch in ms.items():
        for b in BATCHES:
            row[f"{name}_ms_b{b}"] = by_batch[b]
    return row


def run_one(
    args, task: str, method: str, sparsity: float, reduction: float, seed: int, knobs: str = ""
) -> dict:
    """Train one sparse model, keep it, and measure it; returns its row."""
    from flows.keys import code_digest
    from kprune.config import SparsifyConfig
    from kprune.data.tasks import load_task
    from kprune.sparse.sparsebert import save_sparse, sparsify

    teacher = Path(args.teachers) / task
    start = None
    if reduction:
        start = cached_kprune(
            args.store, args.teachers, task, reduction, args.tokens, seed, args.data_dir,
            args.device,
        )  # fmt: skip
    name = "sparsebert" if start is not None else method
    cfg = SparsifyConfig(
        method=name, sparsity=sparsity, seed=seed, epochs=_epochs(args), **knobs_of(knobs)
    )
    model, report = sparsify(
        teacher, load_task(task, args.data_dir), cfg, start, device=args.device
    )
    base = model_of(args.teachers)
    keep = _model_dir(args, base, task, method, sparsity, reduction, seed, cfg.epochs, knobs)
    save_sparse(model, keep, report)
    s = sparse_summary(report)
    return {
        "task": task,
        "model": base,
        "method": s["method"],
        "sparsity": sparsity,
        "reduction": reduction,
        "seed": seed,
        "metric_name": s["metric"],
        "dev": s["metric_after"],
        "test": s["test_after"],
        "dense_dev": s["metric_before"],
        "dense_test": s["test_before"],
        "nonzero_params": s["matrix_nonzero"],
        "matrix_params": s["matrix_params"],
        "flops_kept": s["flops_kept"],
        "train_seconds": s["train_seconds"],
        "epochs": cfg.epochs,
        "knobs": knobs,
        "dev_curve": json.dumps(curve(report)),
        "code_digest": code_digest()[:12],
        "finished_at": utc_stamp(),
        **timings(args, keep, teacher),
    }


def retime(args, csv_path: Path, wanted=lambda row: True) -> int:
    """Measure again the latency of every ``wanted`` row whose model is kept (run it with the
    cores to itself: rows trained while other work ran have inflated times, and the 1-minute
    load at a row's end does not always show it) and stamp it ``retimed_at``; returns the
    rows retimed."""

    rows, done = read_rows(csv_path), 0
    for r in rows:
        if not wanted(r):
            continue
        keep = _model_dir(args, *(r.get(c) for c in KEY))
        if not keep.is_dir():
            print(f"{r['task']} {r['method']} {r['sparsity']}: no kept model at {keep}; skipped")
            continue
        r.update(timings(args, keep, Path(args.teachers) / r["task"]))
        r["retimed_at"] = utc_stamp()
        write_rows(csv_path, rows, COLUMNS)
        done += 1
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.sparse",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--tasks", help=f"comma-separated (default: {','.join(TASKS)})")
    p.add_argument(
        "--plan",
        help=f"METHOD:SPARSITY[:R],... run in order (default: {','.join(PLAN)}); with --retime "
        "and --tasks: which rows to retime",
    )
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=float, help="override sparsify.epochs")
    p.add_argument(
        "--set",
        action="append",
        metavar="KNOB=VALUE",
        help="another sparsify knob for every planned row (repeatable), e.g. logit_weight=0.17; "
        "the rows carry it in their knobs column and label",
    )
    p.add_argument("--tokens", type=int, default=32_000, help="K-prune sample of the combination")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--teachers", default=TEACHERS, help=TEACHERS_HELP)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--store", default="data/sparse-bench", help="cached K-prune models")
    p.add_argument("--out", default="docs/sparse", help="writes OUT.csv and OUT.md")
    p.add_argument("--benchmarks", default="docs/benchmarks.csv", help="K-prune grid rows")
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--retime",
        action="store_true",
        help="only measure again the latency of every row whose model is kept (quiet cores); "
        "--tasks and --plan, when given, narrow it to their rows",
    )
    args = p.parse_args(argv)

    def go() -> None:
        csv_path, md = Path(f"{args.out}.csv"), Path(f"{args.out}.md")
        base = model_of(args.teachers)  # the base model of the teachers: the rows' model
        plan = parse_plan(args.plan or ",".join(PLAN))
        tasks = (args.tasks or ",".join(TASKS)).split(",")
        knobs = parse_knobs(args.set, [("sparsebert" if r else m) for m, _, r in plan])
        seeds = [int(s) for s in args.seeds.split(",")]
        if args.retime:
            cells = {(m, round(s, 6), round(r, 6)) for m, s, r in plan}

            def wanted(row: dict) -> bool:
                cell = (row["method"], round(float(row["sparsity"]), 6))
                cell += (round(float(row["reduction"] or 0), 6),)
                mine = row["model"] == base  # the teachers timed against
                return (
                    mine
                    and (not args.tasks or row["task"] in tasks)
                    and (not args.plan or cell in cells)
                )

            print(f"sparse: {retime(args, csv_path, wanted)} rows retimed")
        elif not args.report_only:
            for method, sparsity, reduction in plan:
                for task in tasks:
                    for seed in seeds:
                        done = {_row_key(r) for r in read_rows(csv_path)}
                        key = _key(
                            base, task, method, sparsity, reduction, seed,
                            _epochs(args), knobs,
                        )  # fmt: skip
                        if key in done:
                            continue
                        row = run_one(args, task, method, sparsity, reduction, seed, knobs)
                        append_row(csv_path, row, COLUMNS)
                        print(
                            f"{task:12s} {method:24s} s={sparsity} R={reduction} "
                            f"test={row['test']:.4f} nonzero={row['nonzero_params']} "
                            f"{row['train_seconds']:.0f} s",
                            flush=True,
                        )
        fill_curves(args, csv_path)
        # one page per base model: the default's OUT.md, another's OUT-<model>.md
        every = read_rows(csv_path)
        rows = [r for r in every if r["model"] == base]
        plots = md.parent / "plots"
        if base != main_model(every, args.teachers):
            md, plots = md.with_name(f"{md.stem}-{base}.md"), plots / base
        if rows:
            write_report(rows, md, Path(args.benchmarks), plots, Path(args.teachers))
        print(f"sparse: {len(rows)} rows -> {md}")

    return run_main(go)


if __name__ == "__main__":
    raise SystemExit(main())
