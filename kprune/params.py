"""The params file: one typed, validated dataclass per ``params.yaml`` section.

An unknown section or key, or a value of the wrong type, is rejected with a message naming
it. The pruning sections (sample, measure, search, prune_tune) are ``kprune.config``'s.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kprune.config import PRUNE_SECTIONS, FinetuneConfig, PruneConfig, SparsifyConfig
from kprune.errors import KPruneError

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


# The other sections of params.yaml (the pruning ones are kprune.config's).


@dataclass(frozen=True)
class PrepareParams:
    tasks: tuple[str, ...] = ("rt", "vader-movie", "trec6", "sms-spam")
    seed: int = 0


@dataclass(frozen=True)
class TeacherParams:
    base_model: str = "data/raw/minilm-l6"


@dataclass(frozen=True)
class EvaluateParams:
    split: str = "dev"
    latency: bool = True
    threads: int = 2
    repeats: int = 10
    seq_len: int = 128


@dataclass(frozen=True)
class ExportParams:
    int8: bool = True  # also a dynamic-int8 copy of the fused graph
    opset: int | None = None  # None: the exporter's default


@dataclass(frozen=True)
class CompressParams:
    task: str = "rt"
    reductions: tuple[float, ...] = (0.6,)
    sparsify: bool = False  # also SparseBERT on the teacher and on each K-prune model


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
        "kprune-remeasure-layer",
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
    **PRUNE_SECTIONS,
    "evaluate": EvaluateParams,
    "export": ExportParams,
    "sparsify": SparsifyConfig,
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


def prune_config(params: str | Path | dict[str, Any]) -> PruneConfig:
    """The pruning configuration of a params file: its sample, measure, search and
    prune_tune sections."""
    data = params if isinstance(params, dict) else read_params(params)
    return PruneConfig(
        **{name: load_section(data, name, cls) for name, cls in PRUNE_SECTIONS.items()}
    )
