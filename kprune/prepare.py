"""Turn raw task data into fixed, seeded, stratified train/dev/test Parquet splits."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from kprune.atomic import atomic_path
from kprune.errors import KPruneError
from kprune.tasks import REGISTRY, SPLITS, TaskSpec

log = logging.getLogger(__name__)


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


def prepare_task(spec: TaskSpec, raw_dir: Path, out_dir: Path, seed: int = 0) -> dict[str, int]:
    """Read one registered task's raw data, clean, split and write Parquet atomically."""
    if spec.raw_reader is None:
        raise KPruneError(f"task '{spec.name}' has no raw reader; it cannot be prepared")
    if not raw_dir.is_dir():
        raise KPruneError(f"raw data folder {raw_dir} does not exist; run the fetch stage first")
    try:
        df = spec.raw_reader(raw_dir)
    except FileNotFoundError as exc:
        raise KPruneError(
            f"raw file for '{spec.name}' missing ({exc.filename}); rerun fetch"
        ) from None
    df = clean(df)
    splits = stratified_split(df, spec.kind, seed=seed)
    with atomic_path(out_dir / spec.name, is_dir=True) as tmp:
        for split, part in splits.items():
            part.to_parquet(tmp / f"{split}.parquet", index=False)
    sizes = {split: len(part) for split, part in splits.items()}
    log.info("prepared %s: %s", spec.name, sizes)
    return sizes


def prepare_all(
    raw_dir: str | Path, out_dir: str | Path, tasks: list[str] | None = None, seed: int = 0
) -> dict[str, dict[str, int]]:
    """Prepare every registered task (or the named ones)."""
    names = tasks or list(REGISTRY)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise KPruneError(f"unknown task(s) {unknown}; registered: {sorted(REGISTRY)}")
    return {n: prepare_task(REGISTRY[n], Path(raw_dir), Path(out_dir), seed) for n in names}
