"""Compress one checkpoint at one or more reductions: sample -> measure -> search ->
prune_tune -> evaluate -> export, cached on content, tracked in MLflow, summarised in a table.
Without --checkpoint the teacher is fine-tuned first (params.yaml's teacher and finetune
sections), as a cached task of the flow.

    python -m flows.compress                       # rt's teacher at params.yaml's reductions
    python -m flows.compress --checkpoint data/teachers/minilm-l6/trec6 --task trec6 --reductions 0.4 0.6
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from prefect import flow

from flows import settings
from flows import tasks as t
from flows.chain import measure_chain, reduction_chain, sparse_chain, teacher_chain
from flows.guard import flow_main
from kprune import artifacts as A
from kprune.config import prune_config, read_params, section, validate_params
from kprune.data.tasks import REGISTRY, default_data_root
from kprune.errors import KPruneError
from kprune.plots import metric_vs_flops_plot
from kprune.report import COMBINED, sparse_summary
from kprune.train.finetune import format_metrics


def task_files(task: str, data_dir: str | None) -> str:
    """The files a task's data comes from (hashed into cache keys)."""
    if task in REGISTRY:
        return str(Path(data_dir or default_data_root()) / task)
    return task  # a local file or folder (or hf:..., hashed by name)


def check_inputs(checkpoint: str | None, task: str, data_dir: str | None, params: str) -> None:
    validate_params(params)
    if checkpoint is not None and not Path(checkpoint).is_dir():
        raise KPruneError(
            f"checkpoint {checkpoint} does not exist; fine-tune one first "
            "(`kprune finetune`), or leave --checkpoint out to fine-tune it in the flow"
        )
    files = task_files(task, data_dir)
    if task in REGISTRY and not Path(files).is_dir():
        raise KPruneError(
            f"task '{task}' is not prepared ({files} missing); run `dvc repro prepare`"
        )


class StateLog:
    """Calls tasks for their state, so the flow can show which ones were served from cache."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, float]] = []

    def __call__(self, task, *args):
        t0 = time.perf_counter()
        state = task(*args, return_state=True)
        self.entries.append((task.name, state.name, time.perf_counter() - t0))
        return state.result()


@flow(name="kprune-compress")
def compress(
    checkpoint: str | None = None,
    task: str = "rt",
    reductions: list[float] | None = None,
    params: str = "params.yaml",
    data_dir: str | None = None,
    device: str = "auto",
    track: bool = True,
    sparsify: bool | None = None,
) -> dict:
    """Prune one checkpoint (None: the teacher fine-tuned by the flow) at each reduction
    (and, with ``sparsify``, default the compress section's, run SparseBERT on the teacher and
    on each pruned model); returns summary rows, task states, tracking."""
    cfg, ev, ex = prune_config(params), section(params, "evaluate"), section(params, "export")
    reductions = list(reductions or section(params, "compress").reductions)
    if sparsify is None:
        sparsify = section(params, "compress").sparsify
    files = task_files(task, data_dir)
    call = StateLog()
    if checkpoint is None:
        checkpoint = f"{teacher_chain(call, task, files, data_dir, params, device)}/{A.TEACHER}"
    checkpoint = str(Path(checkpoint).resolve())
    metrics = Path(checkpoint) / "metrics.json"  # kprune's fine-tuning writes it
    teacher = json.loads(metrics.read_text()) if metrics.is_file() else {}
    t0 = time.perf_counter()
    measured = measure_chain(call, checkpoint, task, files, data_dir, cfg, device)
    _, rep_dir, pred_dir = measured
    shared = time.perf_counter() - t0
    rows, pruned_dirs = [], {}
    for r in reductions:
        t1 = time.perf_counter()
        at_r = cfg.replace(reduction=r)
        masks_dir, pruned_dir, eval_dir, export_dir = reduction_chain(
            call, checkpoint, task, files, data_dir, measured, at_r, ev, ex, device
        )
        pruned_dirs[r] = pruned_dir
        rows.append(
            summary_row(
                r,
                eval_dir,
                pruned_dir,
                masks_dir,
                rep_dir,
                pred_dir,
                time.perf_counter() - t1,
                shared,
                export_dir,
            )
        )
    sparse_rows = []
    if sparsify:
        sp = section(params, "sparsify")
        done = sparse_chain(call, checkpoint, task, files, data_dir, pruned_dirs, sp, device)
        sparse_rows = [sparse_row(r, folder) for r, folder in done.items()]
    target_dir = None
    if section(params, "compress").target:  # it times its candidates: after all the rest
        target_dir = call(
            t.target, checkpoint, task, files, data_dir, cfg, section(params, "target"),
            ev.metric, device, str(settings.FLOW_DATA),
        )  # fmt: skip
    plot = None
    if rows:
        slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(task).stem)
        plot = Path(rows[0]["artifacts"]["evaluation"]) / f"metric_vs_flops_{slug}.png"
        points = [  # the rows name the metric in "metric"; the plot wants its value there
            {
                "method": cfg.method.name,
                "flops_kept": row["flops_kept"],
                "metric": row["metric_after"],
                "dense_metric": row["dense_metric"],
            }
            for row in rows
        ]
        metric_vs_flops_plot(points, rows[0]["metric"], plot, f"{task}: {cfg.method.name}")
    tracking = None
    if track:
        from flows.tracking import log_compress_runs

        all_params = {
            name: vars(section(params, name))
            for name in (
                "compress",
                "finetune",
                "method",
                "sample",
                "measure",
                "search",
                "prune_tune",
                "evaluate",
                "export",
                "sparsify",
                "latency",
                "target",
            )
        }
        tracking = log_compress_runs(
            rows + sparse_rows, all_params, checkpoint, task, plot, target_dir
        )
    return {
        "task": task,
        "teacher": {**teacher, "path": checkpoint},
        "rows": rows,
        "sparse_rows": sparse_rows,
        "states": call.entries,
        "tracking": tracking,
        "plot": str(plot) if plot else None,
        "target": target_summary(target_dir),
    }


def target_summary(target_dir: str | None) -> dict | None:
    """The target search's summary (its target.json), with the folder it is in."""
    if target_dir is None:
        return None
    folder = Path(target_dir) / A.TARGET
    return {**json.loads((folder / "target.json").read_text()), "folder": str(folder)}


def format_target(record: dict) -> str:
    c = record["chosen"]
    verdict = "within" if record["passed"] else "NOT within"
    return (
        f"target: {verdict} {record['max_drop']:g} points of dev {record['metric']} "
        f"{record['teacher_dev']:.4f} on {c['runtime']}: R = {c['reduction']:.3f} ({c['mode']}), "
        f"recipe {c['recipe']}, dev {c['metric']:.4f} (drop {c['drop']:.2f}), "
        f"{c['speedup']:.2f}x dense torch; {record['folder']}"
    )


def format_states(entries: list[tuple[str, str, float]]) -> str:
    """One line: each task's final state and time (cached tasks show ``cached``)."""
    return "tasks: " + ", ".join(f"{n} {s.lower()} ({sec:.1f} s)" for n, s, sec in entries)


def format_result(result: dict) -> str:
    teacher = result["teacher"]
    lines = [format_metrics(teacher)] if "task" in teacher else ["teacher"]
    lines += [f"  {teacher['path']}", "", format_table(result["rows"], result["task"])]
    if result.get("sparse_rows"):
        lines.append(format_sparse(result["sparse_rows"]))
    if result.get("target"):
        lines.append(format_target(result["target"]))
    lines.append(format_states(result["states"]))
    if result.get("plot"):
        lines.append(f"plot: {result['plot']}")
    tr = result.get("tracking")
    if tr:
        from flows.tracking import EXPERIMENT

        lines.append(
            f"MLflow: experiment '{EXPERIMENT}' at {tr['tracking_uri']} "
            f"(parent run {tr['parent']}); `mlflow ui --backend-store-uri "
            f"{tr['tracking_uri']}` to browse"
        )
    return "\n".join(lines)


def summary_row(
    r: float,
    eval_dir: str,
    pruned_dir: str,
    masks_dir: str,
    rep_dir: str,
    pred_dir: str,
    seconds: float | None,
    shared: float | None,
    export_dir: str | None = None,
    timing_dir: str | None = None,
) -> dict:
    """A reduction's row: its evaluation, pruning report, export record and (a flow that
    deferred its timings) the timing in ``timing_dir``; ``None`` seconds: not measured (a
    batch's tasks overlap, so no wall time is one reduction's)."""
    ev = json.loads((Path(eval_dir) / A.EVAL_METRICS).read_text())
    report = json.loads((Path(pruned_dir) / A.MODEL / "report.json").read_text())
    if timing_dir is not None:
        lat = json.loads((Path(timing_dir) / A.TIMING).read_text())
    else:
        lat = ev.get("latency") or {}
    onnx: dict = {}
    if export_dir is not None:  # the export's verification, as metrics
        record = json.loads((Path(export_dir) / f"{A.ONNX}.json").read_text())
        onnx = {
            "onnx_max_abs_diff": record["max_abs_diff"],
            "onnx_attention_nodes": record["attention_nodes"],
            **{f"onnx_dev_{k}": v for k, v in record["metric"].items() if isinstance(v, float)},
        }
        if record.get("int8"):
            onnx["onnx_int8_max_abs_diff"] = record["int8"]["max_abs_diff"]
    row = {
        "kind": "kprune",
        "reduction": r,
        "metric": ev["metric"],
        "metric_before": ev["metric_before"],
        "metric_after": ev["metric_after"],
        "dense_metric": ev["metric_before"],
        "flops_kept": ev["flops_kept"],
        "params_kept": ev["params_kept"],
        "flops_before": ev["flops_before"],
        "flops_after": ev["flops_after"],
        "params_before": ev["params_before"],
        "params_after": ev["params_after"],
        "speedup_b32": lat.get("speedup_b32"),
        "speedup_b1": lat.get("speedup_b1"),
        "latency": lat,
        "prune_seconds": sum(report["seconds_per_phase"].values()),
        "wall_seconds": None if seconds is None else round(seconds, 2),
        "shared_seconds": None if shared is None else round(shared, 2),
        "seconds": report["seconds_per_phase"],
        "artifacts": {
            "evaluation": eval_dir,
            "model": f"{pruned_dir}/{A.MODEL}",
            "scores": f"{pruned_dir}/{A.ITERATIONS}",
            "scores_rep": f"{rep_dir}/{A.K_REP}",
            "scores_pred": f"{pred_dir}/{A.K_PRED}",
            "masks": f"{masks_dir}/{A.MASKS}",
        },
        "method": report.get("method", "kprune"),
        **onnx,
    }
    if export_dir is not None:
        row["artifacts"]["onnx"] = export_dir
    if timing_dir is not None:
        row["artifacts"]["timing"] = timing_dir
    budget = report.get("latency_budget")
    if budget:  # the table the search read, and its target and prediction
        row["artifacts"]["latency_table"] = report["config"]["latency"]["table"]
        row["latency_target_ms"] = budget["target_ms"]
        row["latency_predicted_ms"] = budget["predicted_ms"]
    return row


def sparse_row(reduction: float | None, sparse_dir: str) -> dict:
    """A SparseBERT model's summary (a K-prune + SparseBERT one names its reduction)."""
    report = json.loads((Path(sparse_dir) / A.MODEL / "report.json").read_text())
    return {
        "reduction": reduction if reduction is not None else 0.0,
        **sparse_summary(report),
        "artifacts": {"model": f"{sparse_dir}/{A.MODEL}"},
    }


def format_sparse(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        where = "teacher" if r["method"] != COMBINED else f"K-prune R={r['reduction']}"
        lines.append(
            f"{r['method']} ({where}) sparsity {r['sparsity']}: dev {r['metric']} "
            f"{r['metric_before']:.4f} -> {r['metric_after']:.4f}, encoder matrices "
            f"{100 * r['matrix_nonzero_fraction']:.1f}% of dense nonzero, {r['train_seconds']:.0f} s"
        )
    return "\n".join(lines)


def format_table(rows: list[dict], task: str) -> str:
    if not rows:
        return "no reductions"
    m = rows[0]["metric"]
    head = (
        f"{'reduction':>9}  {m + ' before':>16}  {m + ' after':>15}  {'FLOPs kept':>10}  "
        f"{'params kept':>11}  {'speedup b32':>11}  {'prune s':>8}  {'wall s':>7}"
    )
    lines = [f"K-prune of '{task}'", head, "-" * len(head)]
    for r in rows:
        sp = f"{r['speedup_b32']:.2f}x" if r.get("speedup_b32") else "n/a"
        wall = "-" if r["wall_seconds"] is None else f"{r['wall_seconds']:.1f}"
        lines.append(
            f"{r['reduction']:>9.2f}  {r['metric_before']:>16.4f}  {r['metric_after']:>15.4f}  "
            f"{100 * r['flops_kept']:>9.1f}%  {100 * r['params_kept']:>10.1f}%  {sp:>11}  "
            f"{r['prune_seconds']:>8.1f}  {wall:>7}"
        )
    if rows[0]["shared_seconds"] is not None:
        lines.append(
            f"(sample + measurement: {rows[0]['shared_seconds']:.1f} s wall, shared by all "
            "reductions; cached stages take ~0 s)"
        )
    else:  # a batch: its checkpoints' tasks overlap
        lines.append(
            "(tasks of the batch overlap: no wall time per reduction; timings ran one at a "
            "time after all other tasks, the load beside each in the row's latency)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="fine-tuned teacher folder (default: fine-tune params.yaml's teacher.base_model "
        "on the task first, a cached task of the flow)",
    )
    p.add_argument("--task", default=None, help="task (default compress.task of params.yaml)")
    p.add_argument("--reductions", type=float, nargs="*", help="default compress.reductions")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument(
        "--sparsify",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run SparseBERT (params.yaml sparsify section) on the teacher and on each "
        "K-prune model (default: compress.sparsify)",
    )
    args = p.parse_args(argv)

    def run() -> None:
        read_params(args.params)
        task = args.task or section(args.params, "compress").task
        check_inputs(args.checkpoint, task, args.data_dir, args.params)
        result = compress(
            args.checkpoint,
            task,
            args.reductions,
            args.params,
            args.data_dir,
            args.device,
            not args.no_track,
            args.sparsify,
        )
        print(format_result(result))

    return flow_main(run)


if __name__ == "__main__":
    sys.exit(main())
