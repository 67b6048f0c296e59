"""Tokenisation and length-bucketed batches with dynamic padding (no padding waste)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch


@dataclass
class Encoded:
    """Token ids (unpadded) of a split, with labels."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self))

    def subset(self, idx: np.ndarray) -> Encoded:
        return Encoded(
            [self.input_ids[i] for i in idx],
            [self.token_type_ids[i] for i in idx],
            self.labels[idx],
            self.pad_id,
        )


def encode(tokenizer, df: pd.DataFrame, max_length: int) -> Encoded:
    """Tokenise ``text`` (and ``text_pair``) without padding, truncated to ``max_length``."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if len(df) == 0:
        return Encoded([], [], df["label"].to_numpy(), pad)
    texts = df["text"].astype(str).tolist()
    pairs = df["text_pair"].astype(str).tolist() if "text_pair" in df.columns else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=False)
    ids = enc["input_ids"]
    types = enc.get("token_type_ids") or [[0] * len(x) for x in ids]
    return Encoded(ids, types, df["label"].to_numpy(), pad)


def bucket_batches(
    lengths: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0, pool: int = 50
) -> list[np.ndarray]:
    """Group examples of similar length into batches.

    Shuffled: a random permutation is cut into pools of ``pool`` batches, each pool is sorted
    by length and cut into batches, and the batch order is shuffled. Not shuffled: sorted.
    """
    n = len(lengths)
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    batches = []
    step = batch_size * pool
    for start in range(0, n, step):
        chunk = perm[start : start + step]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(enc: Encoded, idx: np.ndarray, device: torch.device | str = "cpu") -> dict:
    """Pad one batch to its own longest example; returns model inputs and labels."""
    width = max(len(enc.input_ids[i]) for i in idx)
    ids = torch.full((len(idx), width), enc.pad_id, dtype=torch.long)
    types = torch.zeros((len(idx), width), dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        n = len(enc.input_ids[i])
        ids[row, :n] = torch.tensor(enc.input_ids[i])
        types[row, :n] = torch.tensor(enc.token_type_ids[i])
        mask[row, :n] = 1
    labels = torch.as_tensor(enc.labels[idx])
    return {
        "input_ids": ids.to(device),
        "token_type_ids": types.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
    }


def iterate(
    enc: Encoded,
    batch_size: int,
    device: torch.device | str = "cpu",
    shuffle: bool = False,
    seed: int = 0,
) -> Iterator[tuple[np.ndarray, dict]]:
    """Yield (example indices, padded batch) in length-bucketed order."""
    for idx in bucket_batches(enc.lengths, batch_size, shuffle, seed):
        yield idx, collate(enc, idx, device)
