"""The pruning sample: ~N tokens of training data, bucketed, with the teacher's outputs.

Holds, per batch, the student's and the teacher's input to the current sublayer (so only
sublayers >= s are ever recomputed) and the teacher's logits. Memory stays at two hidden
states per token, whatever the depth: teacher sublayer targets are streamed, not stored.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from kprune.adapters import Adapter
from kprune.batching import bucket_batches, collate, encode
from kprune.errors import KPruneError

log = logging.getLogger(__name__)


@dataclass
class SampleBatch:
    attend: torch.Tensor  # (B, 1, 1, T) bool: keys that may be attended
    valid: torch.Tensor  # (B, T) bool: real tokens
    student: torch.Tensor  # (B, T, d): student's input to the current sublayer
    teacher: torch.Tensor  # (B, T, d): teacher's input to the current sublayer
    teacher_logits: torch.Tensor  # (B, C) or (B, T, 2) for QA


@dataclass
class Sample:
    batches: list[SampleBatch]
    n_examples: int
    n_tokens: int
    avg_len: float
    fingerprint: str


def choose_examples(df: pd.DataFrame, lengths: np.ndarray, tokens: int, seed: int) -> np.ndarray:
    """Seeded choice of round(tokens / avg_len) examples (all of them if that is more)."""
    if len(df) == 0:
        raise KPruneError("the sample is empty: the training split has no examples")
    n = max(1, round(tokens / float(lengths.mean())))
    if n >= len(df):
        if n > len(df):
            log.warning(
                "asked for %d sample tokens but the training split has %d; using all %d examples",
                tokens,
                int(lengths.sum()),
                len(df),
            )
        return np.arange(len(df))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(df), size=n, replace=False))


@torch.no_grad()
def build_sample(
    model,
    adapter: Adapter,
    tokenizer,
    df: pd.DataFrame,
    tokens: int,
    seed: int,
    batch_size: int,
    max_length: int,
    device: torch.device,
) -> Sample:
    """Encode the sample, embed it, and run the teacher once for its logits."""
    if tokens < 1:
        raise KPruneError(f"--tokens must be >= 1, got {tokens}")
    enc = encode(tokenizer, df, max_length)
    chosen = choose_examples(df, enc.lengths, tokens, seed)
    if len(chosen) < 2:
        raise KPruneError(
            f"the sample has {len(chosen)} example(s); need at least 2 (more data or more --tokens)"
        )
    enc = enc.subset(chosen)
    model.eval()
    batches = []
    for idx in bucket_batches(enc.lengths, batch_size, shuffle=False):
        inp = collate(enc, idx, device)
        valid = inp["attention_mask"].bool()
        hidden = adapter.embed(model, inp["input_ids"], inp["token_type_ids"])
        logits = (
            model(**_inputs(model, inp)).logits
            if not _is_qa(adapter, model)
            else _qa_logits(model, inp)
        )
        batches.append(
            SampleBatch(
                valid[:, None, None, :],
                valid,
                hidden.float(),
                hidden.float().clone(),
                logits.float(),
            )
        )
    n_tokens = int(enc.lengths.sum())
    digest = _fingerprint(enc)
    return Sample(batches, len(enc), n_tokens, n_tokens / len(enc), digest)


def _is_qa(adapter: Adapter, model) -> bool:
    return adapter.head_type(model) == "qa"


def _qa_logits(model, inp) -> torch.Tensor:
    out = model(**_inputs(model, inp))
    return torch.stack([out.start_logits, out.end_logits], dim=-1)


def _inputs(model, inp: dict) -> dict:
    from kprune.modeling import model_inputs

    return model_inputs(model, inp)


def _fingerprint(enc) -> str:
    import hashlib

    h = hashlib.sha256()
    for ids in enc.input_ids:
        h.update(np.asarray(ids, dtype=np.int32).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def iterate_valid(batch: SampleBatch, tensor: torch.Tensor) -> torch.Tensor:
    """Rows of a (B, T, k) tensor at real tokens: (n_tokens, k)."""
    return tensor[batch.valid]


def ceil_div(a: int, b: int) -> int:
    return math.ceil(a / b)
