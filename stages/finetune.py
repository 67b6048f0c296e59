"""Stage finetune: base model + prepared task -> data/teachers/<task> checkpoint + metrics.json."""

from __future__ import annotations

from kprune.config import FinetuneConfig, section
from kprune.data.tasks import load_task
from kprune.train.finetune import finetune, format_metrics
from stages.common import exit_with, stage_main


def add_args(p):
    p.add_argument("--model", required=True, help="base model folder (or hub name)")
    p.add_argument("--task", required=True)
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
    cfg = section(args.params, "finetune")
    print(format_metrics(make(args.model, args.task, args.data_dir, args.out, cfg, args.device)))


def main(argv: list[str] | None = None) -> int:
    return stage_main(__doc__, add_args, run, argv)


if __name__ == "__main__":
    exit_with(main())
