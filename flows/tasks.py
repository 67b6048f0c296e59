"""Prefect tasks: each runs one stage into a content-addressed folder and returns its path.

Caching is keyed on content (see ``flows.keys``); a cache hit shows as ``Cached`` and does
nothing. Tasks take and return paths, never models or tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task

from flows import settings
from flows.keys import content_key, intact, output_dir, prefect_key_fn, seal
from kprune.atomic import atomic_path
from kprune.config import EvaluateParams, MeasureParams, PruneTuneParams, SampleParams, SearchParams
from stages import evaluate as evaluate_stage
from stages import measure as measure_stage
from stages import prune_tune as prune_tune_stage
from stages import sample as sample_stage
from stages import search as search_stage

IGNORED = ("device",)
CACHED = {
    "cache_key_fn": prefect_key_fn(IGNORED),
    "persist_result": True,
    "retries": 1,
    "retry_delay_seconds": 1,
}


def _produce(name: str, params: dict[str, Any], build: Callable[[Path], None]) -> str:
    """Build the outputs of a call in a temp folder and rename it into place when complete."""
    key = content_key(name, params, IGNORED)
    out = output_dir(settings.FLOW_DATA, name, key)
    if not intact(out):  # missing, unfinished or corrupt: (re)build
        with atomic_path(out, is_dir=True) as tmp:
            build(tmp)
            seal(tmp)
    return str(out)


@task(name="sample", **CACHED)
def sample(
    teacher: str,
    task_name: str,
    task_files: str,
    data_dir: str | None,
    cfg: SampleParams,
    device: str = "auto",
) -> str:
    """Draw the ~100K-token sample and the teacher's logits on it."""
    params = dict(locals())
    return _produce(
        "sample",
        params,
        lambda d: sample_stage.make(
            teacher, task_name, data_dir, str(d / "sample.safetensors"), cfg, device
        ),
    )


@task(name="measure_rep", **CACHED)
def measure_rep(
    teacher: str, sample_dir: str, batch_size: int, rep_form: str = "paper", device: str = "auto"
) -> str:
    """K_rep of every unit (independent of gamma)."""
    params = dict(locals())
    s = SampleParams(batch_size=batch_size)
    return _produce(
        "measure_rep",
        params,
        lambda d: measure_stage.make(
            teacher,
            f"{sample_dir}/sample.safetensors",
            "rep",
            str(d / "k_rep.parquet"),
            MeasureParams(rep_form=rep_form),
            s,
            device,
        ),
    )


@task(name="measure_pred", **CACHED)
def measure_pred(
    teacher: str,
    sample_dir: str,
    m: MeasureParams,
    batch_size: int,
    seed: int,
    device: str = "auto",
) -> str:
    """K_pred of every unit (depends on gamma and the predictive form)."""
    params = dict(locals())
    s = SampleParams(batch_size=batch_size, seed=seed)
    return _produce(
        "measure_pred",
        params,
        lambda d: measure_stage.make(
            teacher,
            f"{sample_dir}/sample.safetensors",
            "pred",
            str(d / "k_pred.parquet"),
            m,
            s,
            device,
        ),
    )


@task(name="search", **CACHED)
def search(rep_dir: str, pred_dir: str, cfg: SearchParams, reduction: float) -> str:
    """One-shot masks from the score tables."""
    params = dict(locals())
    return _produce(
        "search",
        params,
        lambda d: search_stage.make(
            f"{rep_dir}/k_rep.parquet",
            f"{pred_dir}/k_pred.parquet",
            str(d / "masks.json"),
            cfg,
            reduction,
        ),
    )


@task(name="prune_tune", **CACHED)
def prune_tune(
    teacher: str,
    sample_dir: str,
    rep_dir: str,
    pred_dir: str,
    masks_dir: str,
    s: SampleParams,
    m: MeasureParams,
    q: SearchParams,
    pt: PruneTuneParams,
    reduction: float,
    device: str = "auto",
) -> str:
    """The sublayer loop; writes the pruned model and the per-iteration score tables."""
    params = dict(locals())
    inp = prune_tune_stage.Inputs(
        teacher,
        f"{sample_dir}/sample.safetensors",
        f"{rep_dir}/k_rep.parquet",
        f"{pred_dir}/k_pred.parquet",
        f"{masks_dir}/masks.json",
    )
    return _produce(
        "prune_tune",
        params,
        lambda d: prune_tune_stage.make(
            inp, str(d / "model"), str(d / "iterations.parquet"), s, m, q, pt, reduction, device
        ),
    )


@task(name="evaluate", **CACHED)
def evaluate(
    teacher: str,
    pruned_dir: str,
    task_name: str,
    task_files: str,
    data_dir: str | None,
    cfg: EvaluateParams,
    max_length: int,
    device: str = "auto",
) -> str:
    """Metric, FLOPs, params and latency of the pruned model against its teacher; plots."""
    params = dict(locals())
    return _produce(
        "evaluate",
        params,
        lambda d: evaluate_stage.make(
            teacher,
            f"{pruned_dir}/model",
            task_name,
            data_dir,
            str(d / "metrics.json"),
            str(d / "plots"),
            cfg,
            max_length,
            device,
        ),
    )
