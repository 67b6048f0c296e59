"""Evaluation of (pruned) models: task metrics, parameter counts, CPU latency."""

from __future__ import annotations

import os
import statistics
import time

import torch
from torch import nn

from kprune.data.batching import encode
from kprune.data.tasks import TaskData
from kprune.errors import KPruneError
from kprune.models.loading import predict
from kprune.train.metrics import compute_metrics


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def evaluate_model(
    model: nn.Module,
    tokenizer,
    task: TaskData,
    split: str = "dev",
    max_length: int = 128,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
) -> dict[str, float]:
    """All metrics of the task kind on one split."""
    if task.spec.kind == "qa":
        raise KPruneError("QA evaluation needs SQuAD-style answers; not supported for this task")
    enc = encode(tokenizer, task.split(split), max_length)
    logits = predict(model, enc, batch_size, device)
    return {k: round(v, 6) for k, v in compute_metrics(logits, enc.labels, task.spec.kind).items()}


@torch.no_grad()
def latency_ms(
    model: nn.Module,
    batch: int = 32,
    seq_len: int = 128,
    repeats: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    device: str = "cpu",
) -> float:
    """Median wall time (ms) of one forward pass on random token ids."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model = model.to(device).eval()
        vocab = model.config.vocab_size
        ids = torch.randint(5, vocab, (batch, seq_len), device=device)
        mask = torch.ones_like(ids)
        times = []
        for i in range(warmup + repeats):
            t = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - t) * 1000)
        return statistics.median(times)
    finally:
        torch.set_num_threads(old)


def compare_latency(
    dense: nn.Module,
    pruned: nn.Module,
    batches: tuple[int, ...] = (1, 32),
    seq_len: int = 128,
    threads: int | None = None,
    repeats: int = 10,
) -> dict:
    """Median latency (ms) of dense and pruned models at each batch size, and the speedups,
    with the machine's 1-minute load average before and after (other work on the cores
    slows both models, and not by the same factor)."""
    out: dict = {"seq_len": seq_len, "threads": threads or torch.get_num_threads()}
    out["load_before"] = round(os.getloadavg()[0], 2)
    for b in batches:
        d = latency_ms(dense, b, seq_len, repeats, threads=threads)
        p = latency_ms(pruned, b, seq_len, repeats, threads=threads)
        out[f"dense_ms_b{b}"] = round(d, 3)
        out[f"pruned_ms_b{b}"] = round(p, 3)
        out[f"speedup_b{b}"] = round(d / p, 3)
    out["load_after"] = round(os.getloadavg()[0], 2)
    return out
