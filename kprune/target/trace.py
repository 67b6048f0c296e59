"""The trace of a target search: every candidate as a CSV row, the Pareto front of metric
against latency, and the summary (``target.json``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from kprune.atomic import atomic_path, write_json
from kprune.target.search import Candidate, Outcome

TRACE = "trace.csv"
SUMMARY = "target.json"
PLOT = "trace.png"


def pareto(candidates: Sequence[Candidate]) -> list[int]:
    """Indices of the candidates no other one beats on both latency (lower) and metric
    (higher), fastest first."""
    timed = [c for c in candidates if not (math.isnan(c.latency_ms) or math.isnan(c.metric))]
    front, best = [], -math.inf
    for c in sorted(timed, key=lambda c: (c.latency_ms, -c.metric)):
        if c.metric > best:
            front.append(c.index)
            best = c.metric
    return front


def trace_frame(outcome: Outcome) -> pd.DataFrame:
    front = set(pareto(outcome.candidates))
    rows = [{**asdict(c), "pareto": c.index in front} for c in outcome.candidates]
    frame = pd.DataFrame(rows)
    frame["chosen"] = frame["index"] == outcome.chosen.index
    return frame


def write_trace(outcome: Outcome, folder: Path) -> None:
    with atomic_path(folder / TRACE) as tmp:
        trace_frame(outcome).to_csv(tmp, index=False)


def summary(outcome: Outcome, target: dict, runtime: dict) -> dict:
    c = outcome.chosen
    return {
        "passed": outcome.passed,
        "metric": outcome.metric_name,
        "teacher_dev": outcome.teacher_metric,
        "max_drop": target["max_drop"],
        "runtime": runtime,
        "chosen": asdict(c),
        "dense_torch_ms": round(outcome.dense_torch_ms, 4),
        "candidates": len(outcome.candidates) - 1,
        "seconds": outcome.seconds,
        "target": target,
    }


def write_summary(record: dict, folder: Path) -> None:
    write_json(folder / SUMMARY, record)
