"""Checks on a user's data files before they become a task: each refusal is one line naming
the file and the fix (the hostile-input table of docs/reliability.md lists them)."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import pandas as pd

from kprune.errors import KPruneError

log = logging.getLogger(__name__)

# a text longer than this is cut (the tokenizer keeps at most a few hundred tokens of it, and
# tokenizing a 100 MB line first would take minutes and gigabytes)
MAX_TEXT_CHARS = 100_000
_SNIFF_BYTES = 8192
_MAGIC = {
    b"\x1f\x8b": "gzip-compressed; unpack it (gunzip) first",
    b"PK\x03\x04": "a zip archive; unpack it first",
    b"BZh": "bzip2-compressed; unpack it first",
    b"\xfd7zXZ": "xz-compressed; unpack it first",
    b"PAR1": "a Parquet file; name it .parquet",
}


def sniff_data_file(path: Path) -> None:
    """Refuse a file whose bytes are not what its name says: compressed, an archive, binary,
    or (for a text format) Parquet; a Parquet name on a text file."""
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    parquet = path.suffix.lower() == ".parquet"
    for magic, what in _MAGIC.items():
        if head.startswith(magic) and not (parquet and magic == b"PAR1"):
            raise KPruneError(f"data file {path} is {what}")
    if parquet:
        if head and not head.startswith(b"PAR1"):
            raise KPruneError(f"data file {path} is not Parquet (no PAR1 header); check its name")
        return
    nul = head.find(b"\x00")
    if nul >= 0:
        raise KPruneError(
            f"data file {path} holds binary bytes (NUL at offset {nul}), not text; export it "
            "as UTF-8 CSV/JSON"
        )


def first_bad_json_line(path: Path) -> None:
    """Name the first line of a JSON Lines file that is not one JSON object (if any)."""
    import json

    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise KPruneError(
                    f"data file {path}: line {number} is not JSON ({exc}); fix or remove it"
                ) from None
            if not isinstance(row, dict):
                raise KPruneError(
                    f"data file {path}: line {number} is not a JSON object of fields; fix it"
                )


def check_header(path: Path, sep: str) -> None:
    """A CSV/TSV header must name each column once (pandas would silently rename a repeat)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f, delimiter=sep), [])
    repeated = sorted(name for name, n in Counter(header).items() if n > 1)
    if repeated:
        raise KPruneError(
            f"data file {path} names column(s) {', '.join(map(repr, repeated))} more than once; "
            "give each column its own name"
        )


def drop_unusable(df: pd.DataFrame, origin: object) -> pd.DataFrame:
    """Rows without a text (or pair text) or a label are dropped with a warning; texts longer
    than MAX_TEXT_CHARS are cut with a warning. No usable row left -> KPruneError."""
    keys = ["text", "text_pair"] if "text_pair" in df.columns else ["text"]
    usable = df["label"].notna()
    for key in keys:
        usable &= df[key].notna() & (df[key].str.strip().str.len() > 0).fillna(False)
    if not usable.all():
        n_bad = int((~usable).sum())
        if not usable.any():
            raise KPruneError(
                f"{origin}: none of its {len(df)} rows has both a non-empty text and a label; "
                "check --text-field and --label-field"
            )
        log.warning("%s: dropped %d of %d rows with an empty text or no label", origin, n_bad, len(df))
        df = df[usable].reset_index(drop=True)
    for key in keys:
        long = df[key].str.len() > MAX_TEXT_CHARS
        if long.any():
            log.warning(
                "%s: cut %d text(s) longer than %d characters (the longest: %d)",
                origin,
                int(long.sum()),
                MAX_TEXT_CHARS,
                int(df[key].str.len().max()),
            )
            df = df.copy()
            df[key] = df[key].str.slice(0, MAX_TEXT_CHARS)
    return df


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def check_label_types(name: str, labels: pd.Series) -> None:
    """Labels are all numbers or all names: a mix (``1`` beside ``pos``) is a broken export."""
    if pd.api.types.is_numeric_dtype(labels):
        return
    kinds = labels.map(_is_number)
    if kinds.any() and not kinds.all():
        numbers = sorted({str(v) for v in labels[kinds]})[:3]
        names = sorted({str(v) for v in labels[~kinds]})[:3]
        raise KPruneError(
            f"task '{name}' mixes numeric labels ({', '.join(numbers)}) with named ones "
            f"({', '.join(names)}); use one kind of label"
        )


def check_labels_seen(frames: dict[str, pd.DataFrame], spec, origin: object) -> None:
    """Every class label of dev and test occurs in train (no model can learn one that does not)."""
    if spec.kind != "classification":
        return
    seen = {str(v) for v in frames["train"]["label"].dropna().unique()}
    for split in ("dev", "test"):
        if split not in frames:
            continue
        unseen = sorted({str(v) for v in frames[split]["label"].dropna().unique()} - seen)
        if unseen:
            raise KPruneError(
                f"{origin}: {split} label(s) {', '.join(unseen[:5])} never occur in train; "
                "fix the labels or add train examples of them"
            )
