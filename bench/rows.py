"""Results CSVs: rows appended durably as runs finish, read back, and which rows are stale."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

# the benchmarks read the teachers of one base model: data/teachers/<model>/<task>
TEACHERS = "data/teachers/minilm-l6"
TEACHERS_HELP = "folder of one base model's <task> teachers (data/teachers/<model>)"

COLUMNS = [
    "task",
    "model",
    "method",
    "reduction",
    "seed",
    "metric_name",
    "metric",
    "dense_metric",
    "flops_kept",
    "params_kept",
    "prune_seconds",
    "peak_rss_mb",
    "latency_ms_b1",
    "latency_ms_b32",
    "dense_latency_ms_b1",
    "dense_latency_ms_b32",
    "tokens",
    "tokens_asked",
    "same_run_as",
    "code",
    "finished_at",
    "threads",
    "load_1m",
    "score_scale",
    "dev_metric",
    "heads_kept",
    "neurons_kept",
]


def model_of(teachers: str | Path) -> str:
    """The base model of a teachers folder (data/teachers/<model>): the rows' ``model``."""
    return Path(teachers).resolve().name


def main_model(rows: list[dict], teachers: str | Path) -> str:
    """The base model whose rows a report's own page holds (benchmarks.md, sparse.md): the
    default teachers' (MiniLM) when the rows have any, else that of ``teachers``; another
    model's rows get pages of their own."""
    default = model_of(TEACHERS)
    return default if any(r["model"] == default for r in rows) else model_of(teachers)


def reads_scores(method: str) -> bool:
    """K-prune and its ablations read the knowledge scores; the baselines do not."""
    return method == "kprune" or method.startswith("kprune-")


def of_current_scale(row: dict) -> bool:
    """The row's scores were measured with this code's score scale (rows written before the
    column have none: scale 1)."""
    from kprune.pruning.knowledge import SCORE_SCALE

    scale = str(row.get("score_scale") or "1").strip()
    scale = "1" if scale.lower() == "nan" else scale
    return int(float(scale)) == SCORE_SCALE


def is_stale(row: dict) -> bool:
    """A K-prune row of another score scale than this code's. Its metric says nothing about
    the current algorithm: it is rerun by the bench and left out of every table, plot and
    conclusion of the report."""
    return reads_scores(str(row["method"])) and not of_current_scale(row)


def tokens_asked(row: dict) -> int:
    """The sample size a row was asked for (rows from before that column: what it got)."""
    return int(float(row.get("tokens_asked") or row["tokens"]))


def is_busy(row: dict) -> bool:
    """The row's timings were taken while something else competed for the cores: its
    1-minute load average was above its threads + 1 (rows without the columns: not busy)."""
    try:
        return float(row["load_1m"]) > float(row["threads"]) + 1
    except (KeyError, TypeError, ValueError):
        return False


def utc_stamp() -> str:
    """Now, in UTC, as the rows' time columns hold it (``finished_at``, ``retimed_at``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_rows(path: Path) -> list[dict]:
    """The rows of a results CSV, or none if it does not exist yet."""
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_rows(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Write a whole results CSV with ``columns`` (values kept where the names match; missing
    ones empty) through a temporary file and a rename: a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore", restval="")
        w.writeheader()
        w.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def append_row(path: Path, row: dict, columns: list[str]) -> None:
    """Append one row to a results CSV, durably. A file written with other columns (an older
    version of the stage) is first rewritten with ``columns``, its old values kept where the
    names match."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    if not new:
        with open(path, newline="") as fh:
            header = next(csv.reader(fh), [])
        if header != columns:
            write_rows(path, read_rows(path), columns)
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore", restval="")
        if new:
            w.writeheader()
        w.writerow(row)
        fh.flush()
        os.fsync(fh.fileno())
