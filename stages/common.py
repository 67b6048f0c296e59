"""What every stage shares: the params sections as typed dataclasses, and the entry wrapper."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kprune.cli import run_main
from kprune.config import load_section, read_params
from kprune.errors import KPruneError
from kprune.finetune import FinetuneConfig
from kprune.knowledge import REP_FORMS


@dataclass(frozen=True)
class PrepareParams:
    tasks: tuple[str, ...] = ("rt", "vader-movie", "trec6", "sms-spam")
    seed: int = 0


@dataclass(frozen=True)
class TeacherParams:
    base_model: str = "data/raw/minilm-l6"


@dataclass(frozen=True)
class SampleParams:
    tokens: int = 100_000
    seed: int = 0
    batch_size: int = 32
    max_length: int = 128

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.batch_size < 1 or self.max_length < 8:
            raise KPruneError("sample.tokens and sample.batch_size must be >= 1, max_length >= 8")


@dataclass(frozen=True)
class MeasureParams:
    gamma: float = 2.0
    pred_form: str = "paper"
    rep_form: str = "paper"

    def __post_init__(self) -> None:
        if self.gamma <= 0:
            raise KPruneError(f"measure.gamma must be > 0, got {self.gamma}")
        if self.pred_form not in ("paper", "fisher"):
            raise KPruneError(f"measure.pred_form must be paper or fisher, got {self.pred_form!r}")
        if self.rep_form not in REP_FORMS:
            raise KPruneError(f"measure.rep_form must be paper or exact, got {self.rep_form!r}")


def check_tables_match(rep_meta: dict, pred_meta: dict, m: MeasureParams | None = None) -> None:
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


@dataclass(frozen=True)
class SearchParams:
    reduction: float = 0.6
    lam: float = 2.5e-4
    mu: float = 64.0
    use_pred: bool = True
    use_rep: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.reduction < 1:
            raise KPruneError(f"search.reduction must be in [0, 1), got {self.reduction}")
        if self.lam < 0 or self.mu < 0:
            raise KPruneError(f"search.lam and search.mu must be >= 0, got {self.lam}, {self.mu}")


@dataclass(frozen=True)
class PruneTuneParams:
    mode: str = "iterative"
    tune: bool = True
    ridge: float = 1e-4


@dataclass(frozen=True)
class EvaluateParams:
    split: str = "dev"
    latency: bool = True
    threads: int = 2
    repeats: int = 10
    seq_len: int = 128


@dataclass(frozen=True)
class CompressParams:
    task: str = "rt"
    reductions: tuple[float, ...] = (0.6,)


SECTIONS = {
    "prepare": PrepareParams,
    "teacher": TeacherParams,
    "finetune": FinetuneConfig,
    "sample": SampleParams,
    "measure": MeasureParams,
    "search": SearchParams,
    "prune_tune": PruneTuneParams,
    "evaluate": EvaluateParams,
    "compress": CompressParams,
    "bench": None,  # validated by stages.bench (BenchParams)
}


def section(params_path: str, name: str):
    return load_section(params_path, name, SECTIONS[name])


def validate_params(params_path: str) -> None:
    """Every known section parses (unknown keys and wrong types name the key)."""
    data = read_params(params_path)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise KPruneError(
            f"unknown section '{unknown[0]}' in {params_path}; known sections: "
            f"{', '.join(SECTIONS)}"
        )
    from stages.bench import BenchParams

    for name, cls in SECTIONS.items():
        load_section(data, name, cls or BenchParams)


def stage_main(
    doc: str,
    add_args: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], None],
    argv: list[str] | None,
) -> int:
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    add_args(parser)
    args = parser.parse_args(argv)
    return run_main(lambda: run(args))


def exit_with(code: int) -> None:
    sys.exit(code)


def read_rows(path: Path) -> list[dict]:
    """The rows of a results CSV, or none if it does not exist yet."""
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def append_row(path: Path, row: dict, columns: list[str]) -> None:
    """Append one row to a results CSV, durably. A file written with other columns (an older
    version of the stage) is first rewritten with ``columns``, its old values kept where the
    names match, through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    if not new:
        with open(path, newline="") as fh:
            header = next(csv.reader(fh), [])
        if header != columns:
            old = read_rows(path)
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore", restval="")
                w.writeheader()
                w.writerows(old)
            os.replace(tmp, path)
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore", restval="")
        if new:
            w.writeheader()
        w.writerow(row)
        fh.flush()
        os.fsync(fh.fileno())
