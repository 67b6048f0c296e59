"""Cleaning a labelled table and splitting it into seeded, stratified train/dev/test parts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kprune.errors import KPruneError

SPLITS = ("train", "dev", "test")


def clean(df: pd.DataFrame) -> pd.DataFrame:
    """Strip texts, drop empty ones and duplicate texts (the first occurrence is kept)."""
    df = df.copy()
    df["text"] = df["text"].astype("string").str.strip()
    keys = ["text"]
    if "text_pair" in df.columns:
        df["text_pair"] = df["text_pair"].astype("string").str.strip()
        keys.append("text_pair")
    df = df.dropna(subset=[*keys, "label"])
    for key in keys:
        df = df[df[key].str.len() > 0]
    return df.drop_duplicates(subset=keys, keep="first").reset_index(drop=True)


def strata(labels: pd.Series, kind: str, bins: int = 10) -> np.ndarray:
    """Stratum of each row: the class, or the quantile bin of a regression score."""
    if kind == "regression":
        ranks = labels.rank(method="first").to_numpy()
        return np.minimum((ranks - 1) * bins // len(labels), bins - 1).astype(int)
    return labels.to_numpy()


def stratified_split(
    df: pd.DataFrame, kind: str, seed: int = 0, fractions: tuple[float, float] = (0.8, 0.1)
) -> dict[str, pd.DataFrame]:
    """Seeded split into train/dev/test keeping each stratum's share in every split."""
    if len(df) < 3:
        raise KPruneError(f"need at least 3 usable examples to split, got {len(df)}")
    rng = np.random.default_rng(seed)
    groups = strata(df["label"], kind)
    # rows ordered by stratum (random within), then dealt out by a golden-ratio sequence,
    # which is equidistributed: every stratum, however small, gets close to its share
    order = np.lexsort((rng.permutation(len(df)), groups))
    phase = (np.arange(len(df)) * 0.6180339887498949 + rng.random()) % 1.0
    cut_train, cut_dev = fractions[0], fractions[0] + fractions[1]
    assign = np.empty(len(df), dtype=object)
    assign[order] = np.where(phase < cut_train, "train", np.where(phase < cut_dev, "dev", "test"))
    out = {}
    for split in SPLITS:
        part = df[assign == split]
        out[split] = part.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return out


def carve_dev(
    df: pd.DataFrame, kind: str, seed: int = 0, dev_fraction: float = 0.1
) -> dict[str, pd.DataFrame]:
    """Splits of a table whose ``split`` column marks an official test set: the test rows
    stay the test split, a seeded stratified ``dev_fraction`` of the others is dev."""
    test = clean(df[df["split"] == "test"].drop(columns="split"))
    rest = clean(df[df["split"] != "test"].drop(columns="split"))
    parts = stratified_split(rest, kind, seed, (1 - dev_fraction, dev_fraction))
    return {"train": parts["train"], "dev": parts["dev"], "test": test.reset_index(drop=True)}
