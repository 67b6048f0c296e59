"""Parquet score tables: one row per unit, with the knowledge that the search consumes.

Columns: iteration, layer, sublayer (mha|ffn), unit (head|neuron), index, flops, and the
knowledge columns the table holds (k_rep, k_pred or both). The file's metadata names the
model, the sample's fingerprint, gamma, the predictive form, the score scale
(``knowledge.SCORE_SCALE``) and a content hash. A table of another score scale is refused:
its numbers mean something else to lambda and mu, so it is rebuilt, never mixed in.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from kprune.atomic import atomic_path
from kprune.errors import KPruneError
from kprune.flops import FlopsModel
from kprune.knowledge import SCORE_SCALE, Knowledge

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
    with atomic_path(path) as tmp:
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
