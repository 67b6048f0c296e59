"""Typed, validated configuration sections read from ``params.yaml``.

Each section maps onto a frozen dataclass; an unknown key or a value of the wrong type is
rejected with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kprune.errors import KPruneError
from kprune.finetune import FinetuneConfig
from kprune.knowledge import PASS_TOKENS, PRED_FORMS, REP_FORMS

T = TypeVar("T")


def read_params(path: str | Path) -> dict[str, Any]:
    """Read a params YAML file into a dict, with a clear error if missing or malformed."""
    p = Path(path)
    if not p.is_file():
        raise KPruneError(f"params file {p} does not exist; pass --params PATH to a params.yaml")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise KPruneError(f"params file {p} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise KPruneError(f"params file {p} must hold a mapping of sections, got {type(data)}")
    return data


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        inner = args[0] if args else Any
        return isinstance(value, list | tuple) and all(_type_ok(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def from_mapping(cls: type[T], data: dict[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types name the key."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key, value in data.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise KPruneError(f"unknown key '{where}.{key}' in params; known keys: {known}")
        if not _type_ok(value, hints[key]):
            raise KPruneError(
                f"'{where}.{key}' must be {_type_name(hints[key])}, got {value!r}; fix params.yaml"
            )
        if isinstance(value, list) and typing.get_origin(hints[key]) is tuple:
            data[key] = tuple(value)
    try:
        return cls(**data)
    except (TypeError, ValueError) as exc:
        raise KPruneError(f"invalid '{where}' section: {exc}") from None


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def load_section(params: str | Path | dict[str, Any], section: str, cls: type[T]) -> T:
    """Read one section of a params file (or dict) into dataclass ``cls``."""
    data = params if isinstance(params, dict) else read_params(params)
    value = data.get(section, {})
    if value is not None and not isinstance(value, dict):
        raise KPruneError(f"'{section}' in params must be a mapping of keys, got {value!r}")
    return from_mapping(cls, value, section)


@dataclass(frozen=True)
class PruneConfig:
    """Knobs of one pruning run (``prune`` section of params.yaml); paper defaults."""

    reduction: float = 0.6
    tokens: int = 100_000
    gamma: float = 2.0
    lam: float = 2.5e-4
    mu: float = 64.0
    seed: int = 0
    batch_size: int = 32
    max_length: int = 128
    pred_form: str = "paper"
    rep_form: str = "paper"  # or exact: whole-head removal error (an ablation)
    ridge: float = 1e-4
    use_pred: bool = True
    use_rep: bool = True
    tune: bool = True
    mode: str = "iterative"
    search_strategy: str = "kpms"
    measure_dtype: str = "float32"  # or bfloat16 for the measurement passes
    # rows x padded length per autograd pass: bounds memory, does not change the result
    # (0: a whole batch per pass)
    pass_tokens: int = PASS_TOKENS
    # the straightforward loop (whole depth at every step, as the authors' code): same
    # result, about twice the time; for checking the fast loop
    reference_loop: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.reduction < 1:
            raise KPruneError(
                f"reduction must be in [0, 1) (fraction of FLOPs removed), got {self.reduction}"
            )
        for name in ("gamma", "lam", "mu", "ridge"):
            if getattr(self, name) < 0:
                raise KPruneError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.gamma == 0:
            raise KPruneError("gamma (temperature) must be > 0")
        if self.tokens < 1 or self.batch_size < 1 or self.max_length < 8:
            raise KPruneError("tokens and batch_size must be >= 1 and max_length >= 8")
        if self.pass_tokens < 0:
            raise KPruneError(
                f"pass_tokens must be >= 0 (0: whole batches), got {self.pass_tokens}"
            )
        if self.measure_dtype not in ("float32", "bfloat16"):
            raise KPruneError(
                f"measure_dtype must be float32 or bfloat16, got {self.measure_dtype!r}"
            )
        if self.search_strategy not in ("kpms", "uniform"):
            raise KPruneError(
                f"search_strategy must be kpms or uniform, got {self.search_strategy!r}"
            )
        if self.mode not in ("iterative", "oneshot"):
            raise KPruneError(f"mode must be iterative or oneshot, got {self.mode!r}")
        if self.pred_form not in PRED_FORMS:
            raise KPruneError(f"pred_form must be one of {PRED_FORMS}, got {self.pred_form!r}")
        if self.rep_form not in REP_FORMS:
            raise KPruneError(f"rep_form must be one of {REP_FORMS}, got {self.rep_form!r}")


# The sections of params.yaml, one dataclass each (validated on construction).


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


@dataclass(frozen=True)
class BenchParams:
    tasks: tuple[str, ...] = ("rt", "vader-movie", "trec6", "sms-spam")
    methods: tuple[str, ...] = (
        "kprune",
        "kwon",
        "magnitude",
        "random",
        "kprune-no-pred",
        "kprune-no-rep",
        "kprune-no-kpms",
        "kprune-no-tune",
        "kprune-paper-pred",
        "kprune-fisher-pred",
        "kprune-oneshot",
        "kprune-bf16",
        "kprune-exact-rep",
    )
    reductions: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7, 0.8)
    seeds: tuple[int, ...] = (0, 1, 2)
    tokens: int = 32_000
    split: str = "test"
    threads: int = 2
    repeats: int = 10
    # run these methods over the whole grid before the others (the headline comparison)
    priority: tuple[str, ...] = ("kprune", "kwon", "magnitude", "random")


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
    "bench": BenchParams,
}


def section(params_path: str, name: str):
    """Section ``name`` of the params file, typed and validated."""
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
    for name, cls in SECTIONS.items():
        load_section(data, name, cls)
