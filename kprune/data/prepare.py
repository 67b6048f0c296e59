"""Turn raw task data into fixed, seeded, stratified train/dev/test Parquet splits."""

from __future__ import annotations

import logging
from pathlib import Path

from kprune.atomic import atomic_path
from kprune.data.fetch import EXTRA_ROOT
from kprune.errors import KPruneError
from kprune.data.splits import carve_dev, clean, stratified_split
from kprune.data.tasks import DEFAULT_TASKS, REGISTRY, TaskSpec

log = logging.getLogger(__name__)


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
    if "split" in df.columns:  # an official test set: dev carved from the rest
        splits = carve_dev(df, spec.kind, seed)
    else:
        splits = stratified_split(clean(df), spec.kind, seed=seed)
    with atomic_path(out_dir / spec.name, is_dir=True) as tmp:
        for split, part in splits.items():
            part.to_parquet(tmp / f"{split}.parquet", index=False)
    sizes = {split: len(part) for split, part in splits.items()}
    log.info("prepared %s: %s", spec.name, sizes)
    return sizes


def prepare_all(
    raw_dir: str | Path,
    out_dir: str | Path,
    tasks: list[str] | None = None,
    seed: int = 0,
    extra_root: str | Path = EXTRA_ROOT,
) -> dict[str, dict[str, int]]:
    """Prepare the default fetch's tasks from ``raw_dir`` (or the named ones: a task of an
    on-demand source reads the folder that source was fetched into, under ``extra_root``)."""
    names = tasks or list(DEFAULT_TASKS)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise KPruneError(f"unknown task(s) {unknown}; registered: {sorted(REGISTRY)}")
    out = {}
    for n in names:
        spec = REGISTRY[n]
        raw = Path(extra_root) / spec.source if spec.source else Path(raw_dir)
        if spec.source and not raw.is_dir():
            raise KPruneError(
                f"task '{n}' reads {raw}, which does not exist; run `kprune fetch --task {n}`"
            )
        out[n] = prepare_task(spec, raw, Path(out_dir), seed)
    return out
