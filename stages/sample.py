"""Stage sample: teacher + task -> the ~100K-token sample with the teacher's logits."""

from __future__ import annotations

from kprune.config import SampleConfig, section
from kprune.data.sample import save_sample, task_sample
from kprune.data.tasks import load_task
from kprune.device import resolve_device
from kprune.models.checkpoint import load_model
from kprune.models.loading import load_tokenizer
from stages.common import exit_with, stage_main


def add_args(p):
    p.add_argument("--teacher", required=True, help="fine-tuned teacher folder")
    p.add_argument("--task", required=True)
    p.add_argument("--data-dir", default=None, help="root of prepared tasks")
    p.add_argument("--out", required=True, help="sample file (.safetensors)")


def make(
    teacher: str,
    task_name: str,
    data_dir: str | None,
    out: str,
    cfg: SampleConfig,
    device: str = "auto",
) -> dict:
    """Draw the sample and save it; returns its metadata."""
    dev = resolve_device(device)
    model = load_model(teacher).to(dev)
    task = load_task(task_name, data_dir)
    data = task_sample(model, load_tokenizer(teacher), task, cfg, dev)
    save_sample(data, out)
    return data.meta


def run(args) -> None:
    meta = make(
        args.teacher,
        args.task,
        args.data_dir,
        args.out,
        section(args.params, "sample"),
        args.device,
    )
    print(f"sample: {meta['examples']} examples, {meta['tokens']} tokens -> {args.out}")


def main(argv: list[str] | None = None) -> int:
    return stage_main(__doc__, add_args, run, argv)


if __name__ == "__main__":
    exit_with(main())
