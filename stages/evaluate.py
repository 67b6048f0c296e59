"""Stage evaluate: pruned model vs teacher -> metrics JSON (metric, FLOPs, params, latency)
and plots (kept heads and neurons per layer)."""

from __future__ import annotations

import json
from pathlib import Path

from kprune.atomic import write_json
from kprune.config import EvaluateConfig, section
from kprune.data.tasks import load_task
from kprune.device import resolve_device
from kprune.models.checkpoint import load_model
from kprune.models.loading import load_tokenizer
from kprune.plots import kept_units_plot
from kprune.report import evaluation_fields
from kprune.train.evaluation import compare_latency, count_params, evaluate_model
from stages.common import exit_with, stage_main


def add_args(p):
    p.add_argument("--teacher", required=True)
    p.add_argument("--pruned", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", required=True, help="metrics file (.json)")
    p.add_argument("--plots", required=True, help="folder for PNG plots")


def evaluate(
    teacher: str,
    pruned_dir: str,
    task_name: str,
    data_dir: str | None,
    cfg,
    max_length: int,
    device: str = "auto",
) -> dict:
    """Metrics of the pruned model and its teacher on one split, with FLOPs/params/latency."""
    dev = resolve_device(device)
    task = load_task(task_name, data_dir, metric=cfg.metric or None)
    report = json.loads((Path(pruned_dir) / "report.json").read_text())
    tok = load_tokenizer(teacher)
    dense, pruned = load_model(teacher).to(dev), load_model(pruned_dir).to(dev)
    before = evaluate_model(dense, tok, task, cfg.split, max_length, dev)
    after = evaluate_model(pruned, tok, task, cfg.split, max_length, dev)
    result = evaluation_fields(
        report, task, cfg.split, before, after, count_params(dense), count_params(pruned)
    )
    if cfg.latency:
        result["latency"] = time_both(dense, pruned, cfg)
    return result


def time_both(dense, pruned, cfg: EvaluateConfig) -> dict:
    """Dense and pruned torch latency on the CPU (``cfg``'s length, threads, repeats)."""
    return compare_latency(
        dense.cpu(), pruned.cpu(), seq_len=cfg.seq_len, threads=cfg.threads, repeats=cfg.repeats
    )


def time_folders(teacher: str, pruned_dir: str, cfg: EvaluateConfig, out: str) -> dict:
    """``time_both`` of a teacher folder and a pruned folder, written to ``out`` (JSON)."""
    result = time_both(load_model(teacher), load_model(pruned_dir), cfg)
    write_json(out, result)
    return result


def make(
    teacher: str,
    pruned: str,
    task: str,
    data_dir: str | None,
    out: str,
    plots: str,
    cfg: EvaluateConfig,
    max_length: int,
    device: str = "auto",
) -> dict:
    """Evaluate, plot kept units, write the metrics file; returns the metrics."""
    result = evaluate(teacher, pruned, task, data_dir, cfg, max_length, device)
    report = json.loads((Path(pruned) / "report.json").read_text())
    kept_units_plot(report, Path(plots) / "kept_units.png")
    write_json(out, result)
    return result


def run(args) -> None:
    result = make(
        args.teacher,
        args.pruned,
        args.task,
        args.data_dir,
        args.out,
        args.plots,
        section(args.params, "evaluate"),
        section(args.params, "sample").max_length,
        args.device,
    )
    print(
        f"evaluate: {result['metric']} {result['metric_before']:.4f} -> "
        f"{result['metric_after']:.4f}, FLOPs kept {result['flops_kept']:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    return stage_main(__doc__, add_args, run, argv)


if __name__ == "__main__":
    exit_with(main())
