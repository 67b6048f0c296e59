"""Stage finetune: one teachers entry of params.yaml (base model, task, finetune knobs) ->
data/teachers/<model>/<task> checkpoint + metrics.json."""

from __future__ import annotations

from kprune.config import FinetuneConfig, teacher_runs
from kprune.data.tasks import load_task
from kprune.errors import KPruneError
from kprune.train.finetune import finetune, format_metrics
from stages.common import exit_with, stage_main


def add_args(p):
    p.add_argument("--teacher", required=True, help="a key of params.yaml's teachers section")
    p.add_argument("--data-dir", default=None, help="root of prepared tasks")
    p.add_argument("--out", required=True, help="teacher folder, replaced atomically")


def make(
    model: str,
    task_name: str,
    data_dir: str | None,
    out: str,
    cfg: FinetuneConfig,
    device: str = "auto",
) -> dict:
    """Fine-tune the base model on the task into ``out``; returns its metrics."""
    return finetune(model, load_task(task_name, data_dir), out, cfg, device)


def run(args) -> None:
    runs = teacher_runs(args.params)
    if args.teacher not in runs:
        raise KPruneError(
            f"no teacher '{args.teacher}' in {args.params}; its teachers: {', '.join(runs)}"
        )
    t = runs[args.teacher]
    print(format_metrics(make(t.base, t.task, args.data_dir, args.out, t.finetune, args.device)))


def main(argv: list[str] | None = None) -> int:
    return stage_main(__doc__, add_args, run, argv)


if __name__ == "__main__":
    exit_with(main())
