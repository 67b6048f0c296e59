"""Task registry and task loading: registered names, local files or folders, hub data sets.

``load_task(spec)`` accepts
- a registered name (``rt``, ``vader-movie``, ``trec6``, ``sms-spam``; ``snli``, fetched on
  demand): the prepared Parquet splits under ``data/tasks/<name>/``;
- a local CSV/JSON/JSONL/Parquet file (split seeded and stratified) or a folder holding
  ``train`` and ``dev`` (and optionally ``test``) files;
- ``hf:NAME[/CONFIG]`` for a ``datasets`` hub set (needs a network).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from kprune.data import raw_sources
from kprune.errors import KPruneError, first_line
from kprune.hub import require_hub
from kprune.data.splits import SPLITS, clean, stratified_split
from kprune.data.validate import (
    check_header,
    check_label_types,
    check_labels_seen,
    drop_unusable,
    first_bad_json_line,
    sniff_data_file,
)

KINDS = ("classification", "regression", "qa")
# the main metrics a user may choose (--metric), per task kind (kprune.train.metrics)
METRICS = {
    "classification": ("accuracy", "f1", "macro-f1", "mcc"),
    "regression": ("spearman", "pearson"),
}
METRIC_CHOICES = tuple(m for names in METRICS.values() for m in names)
DATA_SUFFIXES = (".parquet", ".csv", ".tsv", ".json", ".jsonl")


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: its kind, label count and metric, and how to read its raw data."""

    name: str
    kind: str
    num_labels: int
    metric: str
    label_names: tuple[str, ...] = ()
    pair: bool = False
    raw_reader: Callable[[Path], pd.DataFrame] | None = field(default=None, compare=False)
    # the on-demand fetch source (kprune.data.fetch.EXTRA) holding its raw files; None: the
    # default fetch's folder
    source: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise KPruneError(f"task kind must be one of {KINDS}, got {self.kind!r}")


REGISTRY: dict[str, TaskSpec] = {
    "rt": TaskSpec(
        "rt", "classification", 2, "accuracy", ("rotten", "fresh"), False, raw_sources.read_rt
    ),
    "vader-movie": TaskSpec(
        "vader-movie", "regression", 1, "spearman", (), False, raw_sources.read_vader_movie
    ),
    "trec6": TaskSpec(
        "trec6",
        "classification",
        6,
        "accuracy",
        raw_sources.TREC_COARSE,
        False,
        raw_sources.read_trec,
    ),
    "sms-spam": TaskSpec(
        "sms-spam", "classification", 2, "f1", ("ham", "spam"), False, raw_sources.read_sms_spam
    ),
    "snli": TaskSpec(
        "snli",
        "classification",
        3,
        "accuracy",
        raw_sources.SNLI_LABELS,
        True,
        raw_sources.read_snli,
        source="snli",
    ),
}
# the tasks of the default fetch (what `make run` and `dvc repro prepare` prepare)
DEFAULT_TASKS = tuple(name for name, spec in REGISTRY.items() if spec.source is None)


@dataclass
class TaskData:
    """A task and its splits; each split has columns ``text`` (, ``text_pair``) and ``label``."""

    spec: TaskSpec
    splits: dict[str, pd.DataFrame]

    def split(self, name: str) -> pd.DataFrame:
        if name not in self.splits:
            raise KPruneError(
                f"task '{self.spec.name}' has no '{name}' split; available: {sorted(self.splits)}"
            )
        return self.splits[name]


@dataclass(frozen=True)
class Fields:
    """Column names in user data: text, optional text pair, label."""

    text: str | None = None
    text_pair: str | None = None
    label: str | None = None


def default_data_root() -> Path:
    return Path(os.environ.get("KPRUNE_DATA_DIR", "data")) / "tasks"


def load_task(
    spec: str,
    data_root: str | Path | None = None,
    fields: Fields | None = None,
    seed: int = 0,
    metric: str | None = None,
) -> TaskData:
    """Resolve a ``--task`` value into a TaskData with train/dev/test splits (its main metric
    ``metric`` if given, else the task's own)."""
    task = _load(spec, data_root, fields, seed)
    return with_metric(task, metric) if metric else task


def with_metric(task: TaskData, metric: str) -> TaskData:
    """``task`` reporting ``metric`` as its main metric (one of its kind's ``METRICS``)."""
    allowed = METRICS.get(task.spec.kind, ())
    if metric not in allowed:
        choice = f"use one of {', '.join(allowed)}" if allowed else "leave out --metric"
        raise KPruneError(
            f"--metric {metric} does not fit task '{task.spec.name}' ({task.spec.kind}); {choice}"
        )
    return replace(task, spec=replace(task.spec, metric=metric))


def _load(
    spec: str, data_root: str | Path | None, fields: Fields | None, seed: int
) -> TaskData:
    fields = fields or Fields()
    if not spec or not spec.strip():
        raise KPruneError("empty --task; pass a registered name, a data file or folder, or hf:NAME")
    if spec.startswith("hf:"):
        return _load_hub(spec[3:], fields)
    if spec in REGISTRY:
        return _load_registered(REGISTRY[spec], Path(data_root or default_data_root()))
    path = Path(spec)
    if path.is_symlink() and not path.exists():
        raise KPruneError(f"--task path {spec} is a broken symlink or a symlink loop; fix the link")
    if path.exists():
        return _load_local(path, fields, seed)
    if os.sep in spec or spec.endswith(DATA_SUFFIXES):
        raise KPruneError(f"--task path {spec} does not exist; check the path")
    names = ", ".join(sorted(REGISTRY))
    raise KPruneError(
        f"unknown task '{spec}'; use one of {names}, a CSV/JSON/Parquet file or folder, "
        "or hf:NAME[/CONFIG]"
    )


def _load_registered(spec: TaskSpec, data_root: Path) -> TaskData:
    folder = data_root / spec.name
    splits = {}
    for split in SPLITS:
        f = folder / f"{split}.parquet"
        if not f.is_file():
            raise KPruneError(
                f"task '{spec.name}' is not prepared ({f} is missing); run `dvc repro prepare` "
                "or `kprune prepare`"
            )
        splits[split] = read_table(f)
    return TaskData(spec, splits)


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV/TSV/JSON/JSONL/Parquet file into a frame; a file that is not what its name
    says, is empty, unreadable or has duplicated columns -> KPruneError naming it."""
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise KPruneError(f"{path}: unsupported data file type; use one of {DATA_SUFFIXES}")
    sniff_data_file(path)
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix in (".csv", ".tsv"):
            sep = "\t" if suffix == ".tsv" else ","
            check_header(path, sep)
            df = pd.read_csv(path, sep=sep, encoding="utf-8-sig")
        elif suffix == ".jsonl":
            df = pd.read_json(path, lines=True)
        else:
            try:
                df = pd.read_json(path)
            except ValueError:
                df = pd.read_json(path, lines=True)
    except pd.errors.EmptyDataError:
        raise KPruneError(f"data file {path} is empty; give it a header and rows") from None
    except KPruneError:
        raise
    except UnicodeDecodeError as exc:
        raise KPruneError(
            f"data file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
            f"offset {exc.start}); save it as UTF-8"
        ) from None
    except Exception as exc:  # parser errors of pandas/pyarrow differ by format
        if suffix == ".jsonl":
            first_bad_json_line(path)
        msg = first_line(exc)
        raise KPruneError(
            f"cannot read data file {path} as {suffix[1:].upper()}: {msg}; check its format"
        ) from None
    if len(df) == 0:
        raise KPruneError(f"data file {path} has no rows; give it labelled examples")
    return df


def _find_split_file(folder: Path, split: str) -> Path | None:
    aliases = {"dev": ("dev", "validation", "valid", "val"), "train": ("train",), "test": ("test",)}
    for alias in aliases[split]:
        for suffix in DATA_SUFFIXES:
            f = folder / f"{alias}{suffix}"
            if f.is_file():
                return f
    return None


def _load_local(path: Path, fields: Fields, seed: int) -> TaskData:
    if path.is_dir():
        files = {s: _find_split_file(path, s) for s in SPLITS}
        if files["train"] is None or files["dev"] is None:
            raise KPruneError(
                f"folder {path} needs train and dev files (train.csv, dev.csv, ...; "
                f"one of {DATA_SUFFIXES}); test is optional"
            )
        raw = {s: read_table(f) for s, f in files.items() if f is not None}
    else:
        files = {}
        raw = {"all": read_table(path)}
    frames = {s: normalise_columns(df, fields, files.get(s, path)) for s, df in raw.items()}
    frames = {s: drop_unusable(df, files.get(s, path)) for s, df in frames.items()}
    name = path.stem if path.is_file() else path.name
    spec = infer_spec(name, pd.concat(frames.values()), fields)
    if "train" in frames:
        check_labels_seen(frames, spec, path)
    frames = {s: encode_labels(df, spec) for s, df in frames.items()}
    if "all" in frames:
        frames = stratified_split(clean(frames["all"]), spec.kind, seed=seed)
    elif "test" not in frames:
        frames["test"] = frames["dev"]
    for split, df in frames.items():
        if len(df) < 2:
            raise KPruneError(
                f"{path}: split '{split}' has {len(df)} usable example(s); need at least 2"
            )
    return TaskData(spec, frames)


def normalise_columns(df: pd.DataFrame, fields: Fields, origin: object) -> pd.DataFrame:
    """Rename user columns to text / text_pair / label, guessing common names if not given."""
    cols = list(df.columns)
    text = fields.text or _guess(cols, ("text", "sentence", "sentence1", "question", "premise"))
    pair = fields.text_pair or _guess(cols, ("text_pair", "sentence2", "hypothesis"))
    label = fields.label or _guess(cols, ("label", "labels", "score", "target", "y"))
    for role, name, flag in (("text", text, "--text-field"), ("label", label, "--label-field")):
        if name is None or name not in cols:
            shown = f"'{name}' {role} column" if name else f"{role} column found"
            raise KPruneError(
                f"{origin}: no {shown} (columns: {', '.join(map(str, cols))}); pass {flag} NAME"
            )
    if fields.text_pair and fields.text_pair not in cols:
        raise KPruneError(
            f"{origin}: no '{fields.text_pair}' text-pair column (columns: {', '.join(cols)})"
        )
    out = pd.DataFrame({"text": df[text].astype("string")})
    if pair is not None:
        out["text_pair"] = df[pair].astype("string")
    out["label"] = df[label].to_numpy()
    return out.reset_index(drop=True)


def _guess(cols: list, candidates: tuple[str, ...]) -> str | None:
    lower = {str(c).lower(): c for c in cols}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    return None


def infer_spec(name: str, df: pd.DataFrame, fields: Fields) -> TaskSpec:
    """Classification if labels are strings or integers with few values, else regression."""
    labels = df["label"].dropna()
    if len(labels) == 0:
        raise KPruneError(f"task '{name}' has no labels; check --label-field")
    check_label_types(name, labels)
    numeric = pd.api.types.is_numeric_dtype(labels)
    is_integral = numeric and np.allclose(labels.astype(float), labels.astype(float).round())
    pair = "text_pair" in df.columns
    if numeric and not is_integral:
        return TaskSpec(name, "regression", 1, "spearman", pair=pair)
    values = sorted(labels.unique().tolist(), key=lambda v: (str(type(v)), v))
    if len(values) < 2:
        raise KPruneError(f"task '{name}' has a single label value {values}; need two or more")
    metric = "f1" if len(values) == 2 else "accuracy"
    return TaskSpec(name, "classification", len(values), metric, tuple(map(str, values)), pair)


def encode_labels(df: pd.DataFrame, spec: TaskSpec) -> pd.DataFrame:
    """Map labels to 0..K-1 (classification) or float (regression); drop unlabelled rows."""
    df = df.dropna(subset=["label"]).copy()
    if spec.kind == "regression":
        df["label"] = df["label"].astype("float64")
        return df
    if spec.label_names and not pd.api.types.is_integer_dtype(df["label"]):
        index = {name: i for i, name in enumerate(spec.label_names)}
        df["label"] = df["label"].map(lambda v: index.get(str(v), -1)).astype("int64")
    elif spec.label_names:
        # integer labels: keep their values if already 0..K-1, else rank them
        vals = sorted(int(v) for v in spec.label_names)
        if vals != list(range(len(vals))):
            index = {v: i for i, v in enumerate(vals)}
            df["label"] = df["label"].map(lambda v: index[int(v)])
    df["label"] = df["label"].astype("int64")
    return df


def _load_hub(name: str, fields: Fields) -> TaskData:
    """Load ``NAME[/CONFIG]`` with ``datasets`` (needs a network and the hub)."""
    path, _, config = name.partition("/")
    if not path:
        raise KPruneError("hf: needs a data set name, e.g. hf:glue/sst2")
    require_hub(f"data set 'hf:{name}'", offline_var="HF_DATASETS_OFFLINE")
    import datasets

    try:
        ds = datasets.load_dataset(path, config or None)
    except Exception as exc:
        msg = first_line(exc)
        raise KPruneError(
            f"could not load hub data set '{name}' ({msg}); check the name and the network, "
            "or pass a local file or folder"
        ) from None
    mapping = {"train": "train", "dev": "validation", "test": "test"}
    frames = {}
    for split, hub_split in mapping.items():
        if hub_split in ds:
            frames[split] = normalise_columns(ds[hub_split].to_pandas(), fields, f"hf:{name}")
    if "train" not in frames or "dev" not in frames:
        raise KPruneError(f"hub data set '{name}' needs train and validation splits")
    test = frames.get("test")
    if test is None or (pd.to_numeric(test["label"], errors="coerce") < 0).all():
        frames["test"] = frames["dev"]  # GLUE-style hidden test labels
    features = ds["train"].features
    label_feature = features.get(fields.label or "label")
    spec = infer_spec(name, pd.concat(frames.values()), fields)
    if label_feature is not None and hasattr(label_feature, "names"):
        spec = replace(
            spec,
            num_labels=len(label_feature.names),
            label_names=tuple(str(i) for i in range(len(label_feature.names))),
        )
    frames = {s: encode_labels(df, spec) for s, df in frames.items()}
    return TaskData(spec, frames)
