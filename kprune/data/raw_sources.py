"""Readers for the raw files that ``fetch`` extracts: each returns a frame of text and label."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

TREC_COARSE = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
SNLI_LABELS = ("entailment", "neutral", "contradiction")


def read_rt(raw: Path) -> pd.DataFrame:
    """Rotten Tomatoes snippets: fresh -> 1, rotten -> 0, plot summaries dropped."""
    df = pd.read_csv(raw / "rt.csv.bz2", compression="bz2")
    df = df[df["category"].isin(["fresh", "rotten"])]
    return pd.DataFrame({"text": df["text"], "label": (df["category"] == "fresh").astype("int64")})


def read_vader_movie(raw: Path) -> pd.DataFrame:
    """VADER movie snippets with a human sentiment score in [-4, 4]."""
    text = (raw / "vader-movie.tsv").read_bytes().decode("utf-8", errors="replace")
    rows = []
    for line in text.splitlines()[1:]:
        parts = line.split("\t", 2)
        if len(parts) == 3:
            rows.append((parts[2], float(parts[1])))
    return pd.DataFrame(rows, columns=["text", "label"])


def read_trec(raw: Path) -> pd.DataFrame:
    """TREC questions; label = index of the coarse class in ``TREC_COARSE``."""
    rows = []
    for line in (raw / "trec.txt").read_bytes().decode("utf-8", errors="replace").splitlines():
        head, _, question = line.partition(" ")
        coarse = head.split(":", 1)[0]
        if coarse in TREC_COARSE:
            rows.append((question, TREC_COARSE.index(coarse)))
    return pd.DataFrame(rows, columns=["text", "label"])


def read_sms_spam(raw: Path) -> pd.DataFrame:
    """SMS messages; label 1 = spam."""
    data = (raw / "sms-spam.csv").read_bytes().decode("utf-8", errors="replace")
    df = pd.read_csv(io.StringIO(data))
    return pd.DataFrame({"text": df["text"], "label": df["spam"].astype("int64")})


def read_snli(raw: Path) -> pd.DataFrame:
    """SNLI premise/hypothesis pairs: the 100,000-pair training subset and the official test
    set (column ``split``: its dev split is carved from the training pairs); pairs without a
    gold label ('-': the annotators did not agree) dropped."""
    parts = []
    for split, name in (("train", "snli_train.jsonl"), ("test", "snli_test.jsonl")):
        rows = [json.loads(line) for line in (raw / name).read_text().splitlines() if line]
        df = pd.DataFrame(rows)
        df = df[df["gold_label"].isin(SNLI_LABELS)]
        parts.append(
            pd.DataFrame(
                {
                    "text": df["sentence1"],
                    "text_pair": df["sentence2"],
                    "label": df["gold_label"].map(SNLI_LABELS.index).astype("int64"),
                    "split": split,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)
