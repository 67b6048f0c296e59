"""Export a pruned model to ONNX for ONNX Runtime: fused, verified, optionally int8.

1. ``torch.onnx.export`` (dynamo) of the physically pruned model, dynamic batch and sequence
   axes; inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids`` where the family has
   them), outputs named as transformers names them (``logits``; QA: ``start_logits``,
   ``end_logits``).
2. onnxscript's ONNX Runtime fusions (attention, skip LayerNorm, bias GELU). They read each
   layer's head count from its own weights, so layers pruned to different head counts fuse
   correctly (ONNX Runtime's older transformer optimizer takes one global head count and gets
   pruned layers silently wrong); a layer with no heads has no attention to fuse. Then the
   passes of ``kprune.deploy.onnx_graph``: weights folded to constants, Attention nodes the quantizer
   accepts, skip LayerNorm split again where the fused CPU kernel is slower.
3. Verification before anything is written: the graph runs in an ONNX Runtime session on
   real token ids (the model's tokenizer on a few sentences, padded, so masks matter) and its
   outputs must equal the torch model's within ``tolerance``; else a one-line error.
4. ``int8``: dynamic quantization of the fused graph (int8 weights with a scale per output
   channel, activations quantized at run time), written beside it, with its own output difference (and, given a task, the
   metric on the dev split of torch, ONNX fp32 and ONNX int8).

A JSON record of all that is written next to the file (``FILE.onnx.json``).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from kprune.atomic import scratch_dir, space_checked, write_json
from kprune.deploy.quantize import Recipe, quantize
from kprune.errors import KPruneError, first_line
from kprune.extras import ONNX, require
from kprune.models.adapters import get_adapter

PROBE_TEXTS = (
    "a gripping, beautifully acted film that earns every minute of its length",
    "dull.",
    "the plot is thin, but the performances carry it further than it deserves to go",
    "what is the capital of australia ?",
    "free entry in a weekly competition to win cup final tickets, text now",
    "i will call you later tonight, the meeting ran long",
)
MIN_OPSET = 18  # the dynamo exporter's lowest; lower ones it silently leaves unconverted
FP32_TOLERANCE = 1e-4  # max abs output difference of the fused fp32 graph to torch


@dataclass
class ExportRecord:
    """What ``export_onnx`` wrote and how it checked it (saved as FILE.onnx.json). ``source``
    and the graphs are named relative to the record's folder, so a record stays true when its
    folder is written elsewhere and renamed into place, or moved."""

    source: str
    onnx: str
    opset: int
    inputs: list[str]
    outputs: list[str]
    fusions: dict[str, int]
    attention_nodes: int
    layers_with_heads: int
    max_abs_diff: float
    tolerance: float
    export_seconds: float
    int8: dict | None = None
    metric: dict = field(default_factory=dict)


class _Outputs(nn.Module):
    """The task model with positional inputs and the transformers output names as a tuple."""

    def __init__(self, model: nn.Module, names: tuple[str, ...], qa: bool):
        super().__init__()
        self.model, self.names, self.qa = model, names, qa

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        out = self.model(**batch)
        return (out.start_logits, out.end_logits) if self.qa else out.logits


class OrtModel(nn.Module):
    """An ONNX Runtime session with a transformers-like forward (``.logits``), so that the
    evaluation code runs it as it runs a torch model."""

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        require(ONNX, "onnxruntime", purpose="running an ONNX graph")
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, **inputs: torch.Tensor) -> list[np.ndarray]:
        if "token_type_ids" in self.input_names and inputs.get("token_type_ids") is None:
            inputs = {**inputs, "token_type_ids": torch.zeros_like(inputs["input_ids"])}
        feed = {k: inputs[k].cpu().numpy().astype(np.int64) for k in self.input_names}
        return self.session.run(None, feed)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        out = [torch.from_numpy(o) for o in self.run(**batch)]
        return SimpleNamespace(logits=out[0] if len(out) == 1 else torch.stack(out, -1))


def _input_names(model: nn.Module) -> tuple[str, ...]:
    import inspect

    params = inspect.signature(model.forward).parameters
    return tuple(n for n in ("input_ids", "attention_mask", "token_type_ids") if n in params)


def _probe(tokenizer, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    enc = tokenizer(list(PROBE_TEXTS), padding=True, truncation=True, max_length=64)
    batch = {k: torch.tensor(enc[k]) for k in names if k in enc}
    if "token_type_ids" in names and "token_type_ids" not in batch:
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    return batch


def _torch_outputs(model: nn.Module, batch: dict, qa: bool) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(**batch)
    if qa:
        return [out.start_logits.numpy(), out.end_logits.numpy()]
    return [out.logits.numpy()]


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def _export_graph(model: nn.Module, batch: dict, outputs: tuple[str, ...], opset: int | None):
    """The dynamo export, fused for ONNX Runtime and prepared for quantization (kprune.deploy.onnx_graph):
    (ONNX model, counts of each fusion and pass)."""
    import warnings

    import onnx
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    names = tuple(batch)
    qa = len(outputs) == 2
    newest = onnx.defs.onnx_opset_version()
    if opset is not None and not MIN_OPSET <= opset <= newest:
        raise KPruneError(
            f"opset {opset} is not supported by the exporter; choose {MIN_OPSET} to {newest} "
            "or leave out --opset"
        )
    dims = {n: {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")} for n in names}
    kwargs = {} if opset is None else {"opset_version": opset}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                _Outputs(model, names, qa),
                tuple(batch.values()),
                dynamo=True,
                input_names=list(names),
                output_names=list(outputs),
                dynamic_shapes=dims,
                verbose=False,
                **kwargs,
            )
    except Exception as exc:  # the exporter's errors are long; its first line says what
        first = first_line(exc)
        hint = " (try the default opset: leave out --opset)" if opset is not None else ""
        raise KPruneError(f"ONNX export failed: {first}{hint}") from None
    import onnx_ir as ir

    from kprune.deploy.onnx_graph import fold_weights, unfuse_skip_layer_norm, uniform_attention

    fused, counts = optimize_for_ort(program.model)
    fold_weights(fused)
    proto = ir.to_proto(fused)
    counts = {**counts, "attention_made_uniform": uniform_attention(proto)}
    counts["skip_layer_norm_unfused"] = unfuse_skip_layer_norm(proto)
    return proto, {k: v for k, v in counts.items() if v}


def export_onnx(
    pruned_dir: str | Path,
    out: str | Path,
    int8: bool = False,
    opset: int | None = None,
    task=None,
    tolerance: float = FP32_TOLERANCE,
) -> ExportRecord:
    """Export the pruned model of ``pruned_dir`` to ``out`` (and ``out``'s ``.int8.onnx``
    sibling with ``int8``), verified against torch; returns the record also written to
    ``out``.json. ``task`` (a TaskData) adds the dev-split metric of each."""
    require(ONNX, "onnx", "onnxscript", "onnxruntime", purpose="ONNX export")
    import onnx

    from kprune.models.checkpoint import load_model, weight_bytes
    from kprune.models.loading import load_tokenizer
    from kprune.models.pruned_modeling import HEADS_KEY

    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix != ".onnx":
        raise KPruneError(f"{out}: the output file must end in .onnx")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KPruneError(
            f"cannot create {out.parent} ({exc.strerror}); choose another --out"
        ) from None
    if not os.access(out.parent, os.W_OK):
        raise KPruneError(f"{out.parent} is not writable; choose another --out")
    model = load_model(pruned_dir)  # a pruned folder; a dense checkpoint exports as well
    tokenizer = load_tokenizer(str(pruned_dir))
    qa = get_adapter(model).head_type(model) == "qa"
    outputs = ("start_logits", "end_logits") if qa else ("logits",)
    batch = _probe(tokenizer, _input_names(model))
    graph, fusions = _export_graph(model, batch, outputs, opset)
    want = _torch_outputs(model, batch, qa)
    layers = len(get_adapter(model).layers(model))
    kept_heads = getattr(model.config, HEADS_KEY, None) or [1] * layers
    with (
        scratch_dir(out) as tmp,
        space_checked(out, Path(tmp), needs=weight_bytes(model) * (5 if int8 else 4) // 4),
    ):
        fp32 = Path(tmp) / "model.onnx"
        onnx.save(graph, fp32)
        diff = _max_diff(OrtModel(fp32).run(**batch), want)
        if not diff <= tolerance:
            raise KPruneError(
                f"the exported graph's outputs differ from the torch model's by {diff:.2e} "
                f"(> {tolerance:g}); nothing written. Report it with the model folder"
            )
        record = ExportRecord(
            source=os.path.relpath(pruned_dir, out.parent),
            onnx=out.name,
            opset=next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), 0),
            inputs=list(batch),
            outputs=list(outputs),
            fusions=fusions,
            attention_nodes=sum(
                1 for n in graph.graph.node if n.op_type in ("Attention", "MultiHeadAttention")
            ),
            layers_with_heads=sum(1 for h in kept_heads if h > 0),
            max_abs_diff=diff,
            tolerance=tolerance,
            export_seconds=0.0,
        )
        files = {out: fp32}
        if int8:
            q8 = Path(tmp) / "model.int8.onnx"
            quantize(fp32, q8, Recipe())
            record.int8 = {
                "onnx": int8_path(out).name,
                "max_abs_diff": _max_diff(OrtModel(q8).run(**batch), want),
                "bytes": q8.stat().st_size,
            }
            files[int8_path(out)] = q8
        if task is not None:
            record.metric = _metrics(model, tokenizer, task, files)
        record.export_seconds = round(time.perf_counter() - t0, 2)
        for final, built in files.items():  # complete files, renamed into place
            os.replace(built, final)
    write_json(Path(f"{out}.json"), asdict(record))
    return record


def int8_path(out: Path) -> Path:
    return out.with_name(out.stem + ".int8.onnx")


def _metrics(model, tokenizer, task, files: dict[Path, Path]) -> dict:
    """The dev-split metric of torch and of every exported graph."""
    from kprune.train.evaluation import evaluate_model

    metric = task.spec.metric
    result = {"split": "dev", "name": metric}
    result["torch"] = evaluate_model(model, tokenizer, task, "dev")[metric]
    for final, built in files.items():
        label = "onnx_int8" if final.name.endswith(".int8.onnx") else "onnx_fp32"
        result[label] = evaluate_model(OrtModel(built), tokenizer, task, "dev")[metric]
    return result
