"""The pruning sample: ~N tokens of training data, bucketed, with the teacher's outputs.

Holds, per batch, the student's and the teacher's input to the current sublayer (so only
sublayers >= s are ever recomputed) and the teacher's logits. Memory stays at two hidden
states per token, whatever the depth: teacher sublayer targets are streamed, not stored.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from kprune.models.adapters import Adapter
from kprune.data.batching import bucket_batches, collate, encode
from kprune.errors import KPruneError

if TYPE_CHECKING:
    from kprune.config import SampleConfig
    from kprune.data.tasks import TaskData

log = logging.getLogger(__name__)


@dataclass
class SampleBatch:
    attend: torch.Tensor  # (B, 1, 1, T) bool: keys that may be attended
    valid: torch.Tensor  # (B, T) bool: real tokens
    student: torch.Tensor  # (B, T, d): student's input to the current sublayer
    teacher: torch.Tensor  # (B, T, d): teacher's input to the current sublayer
    # (B, C) or (B, T, 2) for QA; None until the loop's first measurement (see draw_sample)
    teacher_logits: torch.Tensor | None
    labels: torch.Tensor | None = None  # ground truth (classification / regression only)

    def rows(self, part: slice) -> SampleBatch:
        """Examples ``part`` of this batch (views, not copies)."""
        labels = None if self.labels is None else self.labels[part]
        logits = None if self.teacher_logits is None else self.teacher_logits[part]
        return SampleBatch(
            self.attend[part],
            self.valid[part],
            self.student[part],
            self.teacher[part],
            logits,
            labels,
        )


@dataclass
class Sample:
    batches: list[SampleBatch]
    n_examples: int
    n_tokens: int
    avg_len: float
    order: list[list[int]]  # per batch, the sample examples of its rows


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


@dataclass
class SampleData:
    """The drawn sample, device-free: token ids per example and the teacher's logits."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    # per example: (C,) or (T, 2) for QA; None: to come from the loop's first measurement
    teacher_logits: list[torch.Tensor] | None
    meta: dict
    labels: torch.Tensor | None = None  # ground-truth labels, for Kwon et al.'s importance

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64)


@torch.no_grad()
def draw_sample(
    model,
    tokenizer,
    df: pd.DataFrame,
    tokens: int,
    seed: int,
    batch_size: int,
    max_length: int,
    device: torch.device,
    teacher_logits: bool = True,
) -> SampleData:
    """Choose ~``tokens`` tokens of examples (seeded) and run the teacher once on them.

    ``teacher_logits=False`` skips that forward: the K-prune loop's first measurement runs
    the same teacher over the same sample anyway and fills them in (``fill_teacher_logits``);
    the fingerprint is set then. Only that loop (float32, measuring its first step) may take
    such a sample."""
    from kprune.models.adapters import get_adapter

    if tokens < 1:
        raise KPruneError(f"--tokens must be >= 1, got {tokens}")
    adapter = get_adapter(model)
    enc = encode(tokenizer, df, max_length)
    chosen = choose_examples(df, enc.lengths, tokens, seed)
    if len(chosen) < 2:
        raise KPruneError(
            f"the sample has {len(chosen)} example(s); need at least 2 (more data or more --tokens)"
        )
    enc = enc.subset(chosen)
    model.eval()
    logits: list[torch.Tensor | None] = [None] * len(enc)
    batches = bucket_batches(enc.lengths, batch_size, shuffle=False) if teacher_logits else []
    for idx in batches:
        inp = collate(enc, idx, device)
        out = (
            _qa_logits(model, inp)
            if _is_qa(adapter, model)
            else model(**_inputs(model, inp)).logits
        )
        for row, i in enumerate(idx):
            logits[i] = _example_logits(out[row], len(enc.input_ids[i]))
    lengths = enc.lengths
    meta = {
        "examples": len(enc),
        "tokens": int(lengths.sum()),
        "avg_len": float(lengths.mean()),
        "seed": seed,
        "requested_tokens": tokens,
        "max_length": max_length,
        "head": adapter.head_type(model),
    }
    labels = torch.as_tensor(np.asarray(enc.labels)) if meta["head"] == "seq" else None
    data = SampleData(
        enc.input_ids, enc.token_type_ids, logits if teacher_logits else None, meta, labels
    )
    data.meta["fingerprint"] = _fingerprint(data) if teacher_logits else None
    return data


def task_sample(
    model,
    tokenizer,
    task: TaskData,
    config: SampleConfig,
    device: torch.device,
    teacher_logits: bool = True,
) -> SampleData:
    """The pruning sample of ``task``'s training split under ``config`` (see ``draw_sample``
    for ``teacher_logits``), its metadata naming the task, its kind and its main metric."""
    c = config
    train = task.split("train")
    data = draw_sample(
        model, tokenizer, train, c.tokens, c.seed, c.batch_size, c.max_length, device, teacher_logits
    )
    data.meta.update(task=task.spec.name, kind=task.spec.kind, metric=task.spec.metric)
    return data


def _example_logits(z: torch.Tensor, length: int) -> torch.Tensor:
    """One batch row's logits as the sample keeps them: float32 on the CPU, QA positions cut
    to the example's own ``length``."""
    z = z.float().cpu()
    return z[:length] if z.dim() == 2 else z


def fill_teacher_logits(data: SampleData, sample: Sample) -> None:
    """Give a sample drawn without teacher logits those of its materialised batches (set by
    the loop's first measurement), and its fingerprint."""
    logits: list[torch.Tensor | None] = [None] * len(data.input_ids)
    for batch, idx in zip(sample.batches, sample.order, strict=True):
        if batch.teacher_logits is None:
            raise KPruneError("the sample's teacher logits were never measured")
        for row, i in enumerate(idx):
            logits[i] = _example_logits(batch.teacher_logits[row], len(data.input_ids[i]))
    data.teacher_logits = logits
    data.meta["fingerprint"] = _fingerprint(data)


@torch.no_grad()
def materialise(
    model, adapter: Adapter, data: SampleData, batch_size: int, device: torch.device
) -> Sample:
    """Bucket the sample into batches and embed it: both caches start at the embeddings."""
    from kprune.data.batching import Encoded

    enc = Encoded(data.input_ids, data.token_type_ids, np.zeros(len(data.input_ids)), 0)
    pad = getattr(model.config, "pad_token_id", None) or 0
    enc.pad_id = pad
    batches, order = [], []
    for idx in bucket_batches(enc.lengths, batch_size, shuffle=False):
        inp = collate(enc, idx, device)
        valid = inp["attention_mask"].bool()
        hidden = adapter.embed(model, inp["input_ids"], inp["token_type_ids"]).float()
        width = valid.shape[1]
        logits = None
        if data.teacher_logits is not None:
            rows = []
            for i in idx:
                z = data.teacher_logits[i]
                if z.dim() == 2:  # QA: pad positions to the batch width
                    z = torch.cat([z, z.new_zeros(width - len(z), 2)])
                rows.append(z)
            logits = torch.stack(rows).to(device)
        order.append([int(i) for i in idx])
        labels = data.labels[torch.as_tensor(idx)].to(device) if data.labels is not None else None
        batches.append(
            SampleBatch(valid[:, None, None, :], valid, hidden, hidden.clone(), logits, labels)
        )
    n_tokens = int(enc.lengths.sum())
    return Sample(batches, len(enc), n_tokens, n_tokens / len(enc), order)


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
    """Draw and materialise in one go (a convenience for callers that need no saved sample)."""
    data = draw_sample(model, tokenizer, df, tokens, seed, batch_size, max_length, device)
    return materialise(model, adapter, data, batch_size, device)


def save_sample(data: SampleData, path: str | Path) -> None:
    """Write the sample as safetensors (atomically), with its content hash in the metadata."""
    from safetensors.torch import save_file

    from kprune.atomic import atomic_path

    if data.teacher_logits is None:
        raise KPruneError("a sample without teacher logits cannot be saved; draw it with them")
    tensors = _to_tensors(data)
    meta = {k: json.dumps(v) for k, v in data.meta.items()}
    meta["content_sha256"] = json.dumps(_tensor_digest(tensors))
    needs = sum(t.numel() * t.element_size() for t in tensors.values())
    with atomic_path(path, needs=needs) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_sample(path: str | Path) -> SampleData:
    """Read a sample; a missing, truncated or altered file is a KPruneError."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise KPruneError(f"sample {p} does not exist; run the sample stage first")
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = {k: json.loads(v) for k, v in (fh.metadata() or {}).items()}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:
        raise KPruneError(
            f"sample {p} is corrupt ({type(exc).__name__}); delete it and rerun the sample stage"
        ) from None
    if meta.pop("content_sha256", None) != _tensor_digest(tensors):
        raise KPruneError(
            f"sample {p} fails its content hash (corrupt); delete it and rerun the sample stage"
        )
    return _from_tensors(tensors, meta)


def _to_tensors(data: SampleData) -> dict[str, torch.Tensor]:
    lengths = torch.as_tensor(data.lengths)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    logits = data.teacher_logits
    qa = logits[0].dim() == 2
    return {
        "input_ids": torch.as_tensor([t for x in data.input_ids for t in x], dtype=torch.int32),
        "token_type_ids": torch.as_tensor(
            [t for x in data.token_type_ids for t in x], dtype=torch.int8
        ),
        "offsets": offsets,
        "teacher_logits": torch.cat(logits) if qa else torch.stack(logits),
        **({"labels": data.labels} if data.labels is not None else {}),
    }


def _from_tensors(t: dict[str, torch.Tensor], meta: dict) -> SampleData:
    off = t["offsets"].tolist()
    ids = t["input_ids"].tolist()
    types = t["token_type_ids"].tolist()
    spans = list(itertools.pairwise(off))
    logits = t["teacher_logits"]
    qa = meta.get("head") == "qa"
    return SampleData(
        [ids[a:b] for a, b in spans],
        [types[a:b] for a, b in spans],
        [logits[a:b] for a, b in spans] if qa else list(logits),
        meta,
        t.get("labels"),
    )


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().numpy().tobytes())
    return h.hexdigest()


def _is_qa(adapter: Adapter, model) -> bool:
    return adapter.head_type(model) == "qa"


def _qa_logits(model, inp) -> torch.Tensor:
    out = model(**_inputs(model, inp))
    return torch.stack([out.start_logits, out.end_logits], dim=-1)


def _inputs(model, inp: dict) -> dict:
    from kprune.models.loading import model_inputs

    return model_inputs(model, inp)


def _fingerprint(data: SampleData) -> str:
    """Hash of the sample's token ids and teacher logits (names the sample in score tables)."""
    h = hashlib.sha256()
    for ids, z in zip(data.input_ids, data.teacher_logits, strict=True):
        h.update(np.asarray(ids, dtype=np.int32).tobytes())
        h.update(z.numpy().astype(np.float32).tobytes())
    return h.hexdigest()[:16]
