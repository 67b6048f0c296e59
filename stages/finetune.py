"""Stage finetune: base model + prepared task -> data/teachers/<task> checkpoint + metrics.json."""

from __future__ import annotations

import argparse
import sys

from kprune.config import FinetuneConfig
from kprune.entry import run_main
from kprune.finetune import finetune, format_metrics
from kprune.params import load_section
from kprune.tasks import load_task


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--model", required=True, help="base model folder")
    p.add_argument("--task", required=True)
    p.add_argument("--data-dir", required=True, help="root of prepared tasks")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    def run() -> None:
        cfg = load_section(args.params, "finetune", FinetuneConfig)
        metrics = finetune(
            args.model, load_task(args.task, args.data_dir), args.out, cfg, args.device
        )
        print(format_metrics(metrics))

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())
