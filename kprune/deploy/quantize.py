"""Quantization recipes of an exported graph for ONNX Runtime int8.

A ``Recipe`` says how the fused fp32 graph becomes an int8 one:

- ``dynamic``: weights int8 per output channel, activations quantized on the fly (what
  ``kprune export --int8`` writes);
- ``static``: weights int8 per output channel and activations with scales calibrated on
  examples of the pruning sample (MinMax, QDQ format); only the matrix products are
  quantized, so LayerNorm, GELU, the residual adds and the pre-softmax add stay fp32;
- either of them with ``fallback``: named nodes left in fp32.

``quantizable_nodes`` lists what a fallback may name: the graph's matrix products (MatMul,
Gemm, the fused Attention) and embedding lookups with a weight table, in graph order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KINDS = ("dynamic", "static")
QUANTIZABLE = ("MatMul", "Gemm", "Attention", "Gather")
STATIC_OPS = ["MatMul", "Gemm"]  # the matrix products; everything else stays fp32
CALIBRATION_EXAMPLES = 128
CALIBRATION_BATCH = 16


@dataclass(frozen=True)
class Recipe:
    """How an fp32 graph is quantized: ``kind`` (dynamic or static) and the nodes left in
    fp32 (``fallback``, by name)."""

    kind: str = "dynamic"
    fallback: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.kind + (f"+fp32x{len(self.fallback)}" if self.fallback else "")

    def with_fallback(self, nodes: tuple[str, ...]) -> Recipe:
        return Recipe(self.kind, tuple(nodes))


def quantizable_nodes(graph) -> list[str]:
    """Names of the nodes of the ONNX ``graph`` (a ModelProto) an int8 recipe quantizes and
    a fallback may keep in fp32, in graph order (empty-weight nodes left out: a sublayer
    pruned to nothing)."""
    inits = {t.name: t for t in graph.graph.initializer}
    names = []
    for node in graph.graph.node:
        if node.op_type not in QUANTIZABLE:
            continue
        weights = [inits[i] for i in node.input if i in inits]
        if not weights or any(0 in w.dims for w in weights):
            continue  # no weight, or a sublayer pruned to nothing
        if node.op_type == "Gather" and len(weights[0].dims) != 2:
            continue  # an index lookup, not an embedding table
        names.append(node.name)
    return names


def empty_weight_nodes(graph) -> list[str]:
    """Nodes of the ONNX ``graph`` with a zero-size weight (a sublayer pruned to nothing): the
    per-channel quantizer cannot take them, and there is nothing to gain there."""
    empty = {t.name for t in graph.graph.initializer if 0 in t.dims}
    return [n.name for n in graph.graph.node if empty & set(n.input)]


@contextmanager
def _quiet() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs every tensor at INFO, advice at WARNING
    try:
        yield
    finally:
        root.setLevel(level)


def calibration_feeds(
    data, pad_id: int, inputs: list[str], examples: int = CALIBRATION_EXAMPLES
) -> list[dict[str, np.ndarray]]:
    """Padded batches of the first ``examples`` examples of the sample (a
    ``kprune.data.sample.SampleData``), as ONNX feeds of the graph's ``inputs``."""
    feeds = []
    ids_all, types_all = data.input_ids[:examples], data.token_type_ids[:examples]
    for start in range(0, len(ids_all), CALIBRATION_BATCH):
        ids = ids_all[start : start + CALIBRATION_BATCH]
        types = types_all[start : start + CALIBRATION_BATCH]
        width = max(len(x) for x in ids)
        batch = {
            "input_ids": np.full((len(ids), width), pad_id, dtype=np.int64),
            "attention_mask": np.zeros((len(ids), width), dtype=np.int64),
            "token_type_ids": np.zeros((len(ids), width), dtype=np.int64),
        }
        for row, (x, t) in enumerate(zip(ids, types, strict=True)):
            batch["input_ids"][row, : len(x)] = x
            batch["attention_mask"][row, : len(x)] = 1
            batch["token_type_ids"][row, : len(t)] = t
        feeds.append({k: v for k, v in batch.items() if k in inputs})
    return feeds


class _Reader:
    """The calibration batches as ONNX Runtime's CalibrationDataReader wants them."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - called by some calibrators only
        pass


def quantize(
    fp32: Path, q8: Path, recipe: Recipe, feeds: list[dict[str, np.ndarray]] | None = None
) -> Path:
    """Write the int8 graph of ``fp32`` under ``recipe`` to ``q8`` (``feeds``: calibration
    batches, needed by a static recipe)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    exclude = empty_weight_nodes(onnx.load(str(fp32), load_external_data=False))
    exclude += [n for n in recipe.fallback if n not in exclude]
    with _quiet():
        if recipe.kind == "dynamic":
            # per output channel: on the pruned rt models it lost less than one scale per
            # tensor (R = 0.6: test 0.8290 against 0.8212; sms-spam F1 0.9423 against 0.9216)
            quantize_dynamic(
                str(fp32),
                str(q8),
                weight_type=QuantType.QInt8,
                per_channel=True,
                nodes_to_exclude=exclude,
            )
            return q8
        if not feeds:
            raise ValueError("a static recipe needs calibration batches")
        reader = type("Reader", (_Reader, CalibrationDataReader), {})(feeds)
        quantize_static(
            str(fp32),
            str(q8),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=STATIC_OPS,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True},
        )
    return q8
