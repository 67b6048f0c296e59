"""Latency of a model on the runtime it will serve on: torch fp32, ONNX Runtime fp32, or ONNX
Runtime with int8 weights (dynamic quantization, as ``kprune export --int8`` writes it).

A ``Runtime`` names the runtime, the batch size, the sequence length and the thread count;
``latency_ms`` times one forward pass of an in-memory model there (the median of
``repeats`` passes on random token ids after ``warmup`` passes). For ONNX Runtime the model is
exported and fused exactly as ``kprune export`` does it (and quantized for ``ort-int8``) into
a temporary folder first.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from kprune.deploy.runtime import Runtime


def random_batch(model: nn.Module, batch: int, seq_len: int) -> dict[str, torch.Tensor]:
    """Token ids drawn from the model's vocabulary (above the special tokens), no padding."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (batch, seq_len), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def median_ms(forward: Callable[[], object], repeats: int, warmup: int) -> float:
    """Median wall time (ms) of ``forward()`` over ``repeats`` calls after ``warmup`` calls."""
    times = []
    for i in range(warmup + repeats):
        t = time.perf_counter()
        forward()
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def onnx_file(model: nn.Module, folder: Path, int8: bool) -> Path:
    """``model`` exported and fused as ``kprune export`` does it (its int8 graph with
    ``int8``), written in ``folder``; not verified (for timing only)."""
    import onnx

    from kprune.deploy.export import _export_graph
    from kprune.deploy.quantize import Recipe, quantize

    names = ("input_ids", "attention_mask")
    probe = random_batch(model, 2, 16)
    graph, _ = _export_graph(model.eval(), {k: probe[k] for k in names}, ("logits",), None)
    fp32 = folder / "model.onnx"
    onnx.save(graph, fp32)
    if not int8:
        return fp32
    q8 = folder / "model.int8.onnx"
    quantize(fp32, q8, Recipe())
    return q8


@contextmanager
def runner(model: nn.Module, rt: Runtime) -> Iterator[Callable[[], object]]:
    """A call that runs one forward pass of ``model`` (on the CPU) on ``rt``, with no
    arguments, usable while the context is open: torch with ``rt.threads`` threads, or an
    ONNX Runtime session of the model exported (and quantized for ``ort-int8``) into a
    temporary folder. Random token ids, no padding."""
    if rt.name == "torch":
        batch = random_batch(model, rt.batch, rt.seq_len)
        model = model.eval()
        old = torch.get_num_threads()
        torch.set_num_threads(rt.threads)

        def forward() -> object:
            with torch.no_grad():
                return model(**batch)

        try:
            yield forward
        finally:
            torch.set_num_threads(old)
        return
    with tempfile.TemporaryDirectory(prefix="kprune-latency-") as tmp:
        path = onnx_file(model, Path(tmp), int8=rt.name == "ort-int8")
        with graph_runner(path, rt, model.config.vocab_size) as forward:
            yield forward


@contextmanager
def graph_runner(path: Path, rt: Runtime, vocab: int) -> Iterator[Callable[[], object]]:
    """A call that runs the ONNX graph at ``path`` once on ``rt``'s threads, batch and length
    (random token ids below ``vocab``, no padding), usable while the context is open."""
    from kprune.deploy.export import OrtModel

    ort_model = OrtModel(path, threads=rt.threads)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (rt.batch, rt.seq_len), generator=gen)
    feed = {
        "input_ids": ids.numpy(),
        "attention_mask": torch.ones_like(ids).numpy(),
        "token_type_ids": torch.zeros_like(ids).numpy(),
    }
    feed = {k: v for k, v in feed.items() if k in ort_model.input_names}
    session = ort_model.session
    yield lambda: session.run(None, feed)


def graph_latency_ms(
    path: Path, rt: Runtime, vocab: int, repeats: int = 10, warmup: int = 2
) -> float:
    """Median ms of one run of the ONNX graph at ``path`` on ``rt``."""
    with graph_runner(path, rt, vocab) as forward:
        return median_ms(forward, repeats, warmup)


def latency_ms(model: nn.Module, rt: Runtime, repeats: int = 10, warmup: int = 2) -> float:
    """Median ms of one forward pass of ``model`` (on the CPU) on runtime ``rt``."""
    with runner(model, rt) as forward:
        return median_ms(forward, repeats, warmup)
