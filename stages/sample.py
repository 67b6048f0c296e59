"""Stage sample: teacher + task -> the ~100K-token sample with the teacher's logits."""

from __future__ import annotations

from kprune.api import load_model
from kprune.device import resolve_device
from kprune.modeling import load_tokenizer
from kprune.sample import draw_sample, save_sample
from kprune.tasks import load_task
from stages.common import exit_with, section, stage_main


def add_args(p):
    p.add_argument("--teacher", required=True, help="fine-tuned teacher folder")
    p.add_argument("--task", required=True)
    p.add_argument("--data-dir", default=None, help="root of prepared tasks")
    p.add_argument("--out", required=True, help="sample file (.safetensors)")


def run(args) -> None:
    cfg = section(args.params, "sample")
    device = resolve_device(args.device)
    model = load_model(args.teacher).to(device)
    task = load_task(args.task, args.data_dir)
    data = draw_sample(model, load_tokenizer(args.teacher), task.split("train"), cfg.tokens,
                       cfg.seed, cfg.batch_size, cfg.max_length, device)
    data.meta.update({"task": task.spec.name, "kind": task.spec.kind})
    save_sample(data, args.out)
    print(f"sample: {data.meta['examples']} examples, {data.meta['tokens']} tokens -> {args.out}")


def main(argv: list[str] | None = None) -> int:
    return stage_main(__doc__, add_args, run, argv)


if __name__ == "__main__":
    exit_with(main())
