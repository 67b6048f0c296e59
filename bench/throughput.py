"""Training throughput of a base model on this machine: tokens per second of fine-tuning
steps (forward, backward, AdamW), the figure a teacher's epochs and training subset are
chosen by. One row per (model, batch, length, threads) is appended to docs/throughput.csv.

  python -m bench.throughput --model data/extra/mpnet-base
  python -m bench.throughput --model data/raw/minilm-l6 --batch 32 --length 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from bench.rows import append_row, utc_stamp
from kprune.entry import run_main

COLUMNS = [
    "model",
    "params",
    "batch",
    "length",
    "threads",
    "steps",
    "seconds_per_step",
    "tokens_per_second",
    "code_digest",
    "finished_at",
    "load_1m",
]


def measure(model_dir: str, batch: int, length: int, threads: int, steps: int) -> dict:
    """The median seconds of ``steps`` training steps (after one warm-up) on random token
    ids, every sequence ``length`` long: a real step's cost, padding included."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from flows.keys import code_digest
    from kprune.models.loading import check_model_source

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        check_model_source(model_dir)
    ).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    vocab = model.config.vocab_size
    ids = torch.randint(5, vocab, (batch, length))
    labels = torch.randint(0, model.config.num_labels, (batch,))
    times = []
    for step in range(steps + 1):
        t = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step:  # the first step allocates: not timed
            times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    return {
        "model": Path(model_dir).name,
        "params": sum(p.numel() for p in model.parameters()),
        "batch": batch,
        "length": length,
        "threads": threads,
        "steps": steps,
        "seconds_per_step": round(seconds, 4),
        "tokens_per_second": round(batch * length / seconds, 1),
        "code_digest": code_digest()[:12],
        "finished_at": utc_stamp(),
        "load_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="a base model folder")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=64, help="tokens per sequence")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=4, help="timed steps (the median is kept)")
    p.add_argument("--out", default="docs/throughput.csv")
    args = p.parse_args(argv)

    def run() -> None:
        row = measure(args.model, args.batch, args.length, args.threads, args.steps)
        append_row(Path(args.out), row, COLUMNS)
        print(
            f"{row['model']}: {row['tokens_per_second']:.0f} tokens/s "
            f"({row['seconds_per_step']} s per step of {args.batch} x {args.length}, "
            f"{args.threads} threads, 1-min load {row['load_1m']}) -> {args.out}"
        )

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())
