"""Stage bench_memory: peak RSS of `kprune prune` on a model of a given size, random weights.

Memory does not depend on the weights' values, so a randomly initialised model of the size
of interest (BERT-base by default) stands in for a fine-tuned one. The model gets the demo
teacher's tokenizer (same vocabulary), is pruned by the real `kprune prune` command in its own
process on the task's real sample, and that process's peak RSS is appended to a CSV:

    python -m bench.memory                       # BERT-base, rt, 100K tokens, one-shot
    python -m bench.memory --mode iterative      # the paper's loop (much longer)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.rows import append_row
from kprune.entry import run_main
from kprune.errors import KPruneError
from kprune.models.loading import TOKENIZER_FILES

SIZES = {  # layers, hidden, heads, intermediate
    "bert-base": (12, 768, 12, 3072),
    "bert-large": (24, 1024, 16, 4096),
    "minilm-l6": (6, 384, 12, 1536),
    "tiny": (2, 32, 4, 64),  # for tests
}
COLUMNS = [
    "size",
    "task",
    "tokens",
    "mode",
    "reduction",
    "peak_rss_mb",
    "prune_seconds",
    "params_before",
    "params_after",
    "threads",
    "code",
]


def random_model(size: str, tokenizer_from: Path, num_labels: int, out: Path) -> None:
    """A BERT-architecture classifier of ``size`` with random weights and a real tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    layers, hidden, heads, inter = SIZES[size]
    vocab = json.loads((tokenizer_from / "config.json").read_text()).get("vocab_size", 30522)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        num_labels=num_labels,
    )
    BertForSequenceClassification(cfg).save_pretrained(out)
    for name in os.listdir(tokenizer_from):
        if name in TOKENIZER_FILES or name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(tokenizer_from / name, out / name)


def measure(args: argparse.Namespace) -> dict:
    from flows.keys import code_digest
    from kprune.data.tasks import load_task

    tokenizer_from = Path(args.tokenizer_from)
    if not (tokenizer_from / "config.json").is_file():
        raise KPruneError(
            f"{tokenizer_from} is not a model folder; pass --tokenizer-from a fine-tuned "
            "teacher (e.g. data/teachers/minilm-l6/rt after `dvc repro`)"
        )
    task = load_task(args.task, args.data_dir)
    code = code_digest()[:12]  # the source the subprocess is about to import
    with tempfile.TemporaryDirectory(prefix="kprune-mem-") as tmp:
        model = Path(tmp) / "model"
        random_model(args.size, tokenizer_from, task.spec.num_labels or 1, model)
        cmd = [
            sys.executable,
            "-m",
            "kprune.cli",
            "prune",
            str(model),
            "--task",
            args.task,
            "--data-dir",
            args.data_dir,
            "--reduction",
            str(args.reduction),
            "--tokens",
            str(args.tokens),
            "--mode",
            args.mode,
            "--allow-untrained-head",
            "--device",
            "cpu",
            "--out",
            str(Path(tmp) / "pruned"),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise KPruneError(f"bench_memory: `kprune prune` failed (exit {proc.returncode})")
        report = json.loads((Path(tmp) / "pruned" / "report.json").read_text())
    return {
        "size": args.size,
        "task": args.task,
        "tokens": report["sample"]["tokens"],
        "mode": args.mode,
        "reduction": args.reduction,
        "peak_rss_mb": report["peak_rss_mb"],
        "prune_seconds": round(seconds, 1),
        "params_before": report["params_before"],
        "params_after": report["params_after"],
        "threads": args.threads,
        "code": code,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", choices=sorted(SIZES), default="bert-base")
    p.add_argument("--task", default="rt")
    p.add_argument("--data-dir", default="data/tasks")
    p.add_argument("--tokenizer-from", default="data/teachers/minilm-l6/rt", help="a model folder")
    p.add_argument("--tokens", type=int, default=100_000)
    p.add_argument("--reduction", type=float, default=0.6)
    p.add_argument("--mode", choices=("oneshot", "iterative"), default="oneshot")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="docs/memory.csv", help="CSV the row is appended to")
    args = p.parse_args(argv)

    def run() -> None:
        row = measure(args)
        out = Path(args.out)
        append_row(out, row, COLUMNS)
        print(
            f"{row['size']} ({row['params_before'] / 1e6:.0f} M params), {row['tokens']} tokens, "
            f"{row['mode']}: peak RSS {row['peak_rss_mb']:.0f} MB, {row['prune_seconds']:.0f} s "
            f"-> {out}"
        )

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())
