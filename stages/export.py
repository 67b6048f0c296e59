"""Stage export: the pruned model -> ONNX for ONNX Runtime (fused, verified against torch),
with an int8 copy and the dev metric of each (``kprune.deploy.export``)."""

from __future__ import annotations

from pathlib import Path

from kprune import artifacts as A
from kprune.config import ExportConfig, section
from kprune.data.tasks import load_task
from kprune.deploy.export import export_onnx
from stages.common import exit_with, stage_main


def add_args(p):
    p.add_argument("--pruned", required=True, help="pruned model folder")
    p.add_argument("--task", required=True, help="task whose dev split is measured")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", required=True, help="output folder (model.onnx, its record, int8)")


def make(
    pruned_dir: str,
    task_name: str,
    data_dir: str | None,
    out: str,
    cfg: ExportConfig,
    metric: str = "",
):
    """Export into folder ``out`` (the dev ``metric`` of each graph: empty, the task's
    own); returns the export record."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    task = load_task(task_name, data_dir, metric=metric or None)
    return export_onnx(pruned_dir, folder / A.ONNX, int8=cfg.int8, opset=cfg.opset, task=task)


def run(args) -> None:
    cfg = section(args.params, "export")
    metric = section(args.params, "evaluate").metric
    r = make(args.pruned, args.task, args.data_dir, args.out, cfg, metric)
    print(
        f"export: {args.out}/{r.onnx} ({r.attention_nodes} fused attention nodes, max diff "
        f"{r.max_abs_diff:.1e}){'; int8 too' if r.int8 else ''}"
    )


def main(argv: list[str] | None = None) -> int:
    return stage_main(__doc__, add_args, run, argv)


if __name__ == "__main__":
    exit_with(main())
