"""Score tables: the knowledge of every unit as a Parquet table, one row per unit. Iteration 0
is measured here on the teacher (``measure_initial``) and read back by the loop
(``read_knowledge``: the DVC path's hand-over between its measure and prune_tune stages); the
loop writes one table per iteration with the same columns.

Columns: iteration, layer, sublayer (mha|ffn), unit (head|neuron), index, flops, and the
knowledge columns the table holds (k_rep, k_pred or both). The file's metadata names the
model, the sample's fingerprint, gamma, the predictive form, the score scale
(``knowledge.SCORE_SCALE``) and a content hash. A table of another score scale is refused:
its numbers mean something else to lambda and mu, so it is rebuilt, never mixed in.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from kprune.atomic import atomic_path
from kprune.data.sample import SampleData, materialise
from kprune.errors import KPruneError
from kprune.models.adapters import get_adapter
from kprune.models.loading import frozen
from kprune.pruning.flops import FlopsModel, flops_of
from kprune.pruning.knowledge import SCORE_SCALE, Knowledge, MeasureSpec, measure
from kprune.version import __version__

COLUMNS = ("iteration", "layer", "sublayer", "unit", "index", "flops")


def knowledge_frame(
    k: Knowledge,
    flops: FlopsModel,
    iteration: int = 0,
    start: int = 0,
    columns: tuple[str, ...] = ("k_pred", "k_rep"),
) -> pd.DataFrame:
    """Rows for every unit of sublayers >= ``start``."""
    frames = []
    layers = k.rep_heads.shape[0]
    for s in range(start, 2 * layers):
        layer, is_mha = s // 2, s % 2 == 0
        pred = (k.pred_heads if is_mha else k.pred_neurons)[layer]
        rep = (k.rep_heads if is_mha else k.rep_neurons)[layer]
        n = len(rep)
        data = {
            "iteration": iteration,
            "layer": layer,
            "sublayer": "mha" if is_mha else "ffn",
            "unit": "head" if is_mha else "neuron",
            "index": range(n),
            "flops": flops.head if is_mha else flops.neuron,
        }
        if "k_pred" in columns:
            data["k_pred"] = pred.double().numpy()
        if "k_rep" in columns:
            data["k_rep"] = rep.double().numpy()
        frames.append(pd.DataFrame(data))
    df = pd.concat(frames, ignore_index=True)
    return df.astype({"iteration": "int32", "layer": "int32", "index": "int32"})


def to_knowledge(
    df: pd.DataFrame, layers: int, heads: int, neurons: int, iteration: int | None = None
) -> Knowledge:
    """Scores of one iteration back into [L, H] / [L, N] tensors (missing columns -> 0)."""
    if iteration is not None:
        df = df[df["iteration"] == iteration]
    k = Knowledge.zeros(layers, heads, neurons)
    for unit, (pred, rep) in (
        ("head", (k.pred_heads, k.rep_heads)),
        ("neuron", (k.pred_neurons, k.rep_neurons)),
    ):
        part = df[df["unit"] == unit]
        li = torch.as_tensor(part["layer"].to_numpy().copy(), dtype=torch.long)
        ui = torch.as_tensor(part["index"].to_numpy().copy(), dtype=torch.long)
        if (li >= layers).any() or (ui >= (heads if unit == "head" else neurons)).any():
            raise KPruneError(
                "score table does not fit the model (layer or unit index out of "
                "range); was it measured on another model?"
            )
        for col, target in (("k_pred", pred), ("k_rep", rep)):
            if col in part:
                target[li, ui] = torch.as_tensor(part[col].to_numpy().copy(), dtype=torch.float32)
    return k


def _digest(df: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).values.tobytes()).hexdigest()


def write_scores(df: pd.DataFrame, path: str | Path, meta: dict) -> None:
    """Write a score table atomically with ``meta``, the score scale and a content hash in
    its metadata."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    full = {**meta, "score_scale": SCORE_SCALE, "content_sha256": _digest(df)}
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"kprune": json.dumps(full).encode()}
    )
    with atomic_path(path, needs=table.nbytes) as tmp:  # Parquet: about the Arrow size or less
        pq.write_table(table, tmp)


def read_scores(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read a score table; missing, unreadable or altered files, and tables of another score
    scale, are a KPruneError."""
    p = Path(path)
    if not p.is_file():
        raise KPruneError(f"score table {p} does not exist; run the measure stage first")
    try:
        table = pq.read_table(p)
        meta = json.loads(table.schema.metadata[b"kprune"])
    except Exception as exc:
        raise KPruneError(
            f"score table {p} is corrupt ({type(exc).__name__}); delete it and "
            "rerun the measure stage"
        ) from None
    df = table.to_pandas()
    if meta.get("content_sha256") != _digest(df):
        raise KPruneError(f"score table {p} fails its content hash; delete it and rerun measure")
    scale = meta.get("score_scale", 1)
    if scale != SCORE_SCALE:
        raise KPruneError(
            f"score table {p} holds scores of scale v{scale}, this kprune computes "
            f"v{SCORE_SCALE} (the published K_rep/K_pred normalisation); delete it and rerun "
            "the measure stage (`dvc repro`)"
        )
    return df, meta


def check_tables_match(rep_meta: dict, pred_meta: dict, m=None) -> None:
    """The K_rep and K_pred tables come from one sample and, given ``m``, were measured with
    the forms and gamma of params.yaml (else the loop would mix two definitions)."""
    if rep_meta.get("sample") != pred_meta.get("sample"):
        raise KPruneError(
            "the K_rep and K_pred tables come from different samples; rerun the measure stage"
        )
    if m is None:
        return
    for key, meta in (("rep_form", rep_meta), ("pred_form", pred_meta), ("gamma", pred_meta)):
        if meta.get(key) != getattr(m, key):
            raise KPruneError(
                f"the score table was measured with measure.{key}={meta.get(key)!r} but "
                f"params.yaml says {getattr(m, key)!r}; rerun the measure stage (`dvc repro`)"
            )


def measure_knowledge(
    model,
    data: SampleData,
    spec: MeasureSpec,
    batch_size: int,
    device: torch.device | str,
    dtype: str = "float32",
) -> Knowledge:
    """Knowledge of every unit on the unpruned model (iteration 0); with ``dtype`` bfloat16
    the passes run on a bf16 copy, as the loop's measurements do. The model is the sample's
    teacher, so the paper's K_pred is zero without a backward (see ``measure``)."""
    model = frozen(model, device)
    adapter = get_adapter(model)
    sample = materialise(model, adapter, data, batch_size, device)
    m_model = copy.deepcopy(model).to(torch.bfloat16) if dtype == "bfloat16" else model
    views = adapter.views(m_model)
    head_fn = lambda h: adapter.logits(m_model, h)  # noqa: E731
    return measure(views, head_fn, sample, 0, adapter.dims(model), spec, at_teacher=True)


def measure_initial(
    model,
    data: SampleData,
    spec: MeasureSpec,
    batch_size: int,
    device: torch.device | str,
    columns: tuple[str, ...],
    dtype: str = "float32",
) -> tuple[pd.DataFrame, dict]:
    """Iteration-0 knowledge as a score table with its metadata."""
    k = measure_knowledge(model, data, spec, batch_size, device, dtype)
    dims = get_adapter(model).dims(model)
    flops = flops_of(model, data)
    meta = {
        "sample": data.meta["fingerprint"],
        "gamma": spec.gamma,
        "pred_form": spec.pred_form,
        "rep_form": spec.rep_form,
        "dtype": dtype,
        "columns": list(columns),
        "flops_model": asdict(flops),
        "dims": list(dims),
        "nonfinite_batches": k.nonfinite,
        "kprune_version": __version__,
    }
    return knowledge_frame(k, flops, 0, 0, columns), meta


def knowledge_from_tables(
    rep: pd.DataFrame | None, pred: pd.DataFrame | None, dims: tuple
) -> Knowledge:
    """Iteration-0 knowledge from the K_rep and K_pred tables (a missing one counts as 0)."""
    layers, heads, _, _, neurons = dims
    k = Knowledge.zeros(layers, heads, neurons)
    if rep is not None:
        r = to_knowledge(rep, layers, heads, neurons, 0)
        k.rep_heads, k.rep_neurons = r.rep_heads, r.rep_neurons
    if pred is not None:
        p = to_knowledge(pred, layers, heads, neurons, 0)
        k.pred_heads, k.pred_neurons = p.pred_heads, p.pred_neurons
    return k


def read_knowledge(rep_path, pred_path, m=None) -> tuple[Knowledge, pd.DataFrame, dict]:
    """The iteration-0 knowledge stored in the K_rep and K_pred tables at these paths, checked
    to come from one sample and (given the measure section ``m``) from its forms and gamma;
    also the K_rep table and its metadata (dims and FLOPs model)."""
    rep, rep_meta = read_scores(rep_path)
    pred, pred_meta = read_scores(pred_path)
    check_tables_match(rep_meta, pred_meta, m)
    return knowledge_from_tables(rep, pred, tuple(rep_meta["dims"])), rep, rep_meta
