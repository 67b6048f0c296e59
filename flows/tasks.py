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
from kprune import artifacts as A
from kprune.atomic import atomic_path
from kprune.config import (
    EvaluateConfig,
    ExportConfig,
    FinetuneConfig,
    LatencyConfig,
    PruneConfig,
    SampleConfig,
    SparsifyConfig,
    TargetConfig,
)
from kprune.models.checkpoint import load_model
from kprune.pruning.budget import with_table
from kprune.pruning.latency_table import cached_table
from stages import evaluate as evaluate_stage
from stages import export as export_stage
from stages import finetune as finetune_stage
from stages import measure as measure_stage
from stages import prune_tune as prune_tune_stage
from stages import sample as sample_stage
from stages import search as search_stage
from stages import sparsify as sparsify_stage
from stages import target as target_stage

# not part of what a task computes: where it runs, and where its outputs are stored (the
# flow's folder, passed along because a Dask worker's own working folder is not the project)
IGNORED = ("device", "store")
CACHED = {
    "cache_key_fn": prefect_key_fn(IGNORED),
    "persist_result": True,
    "retries": 1,
    "retry_delay_seconds": 1,
}


def _produce(name: str, params: dict[str, Any], build: Callable[[Path], None]) -> str:
    """Build the outputs of a call in a temp folder and rename it into place when complete."""
    key = content_key(name, params, IGNORED)
    out = output_dir(Path(params.get("store") or settings.FLOW_DATA), name, key)
    if not intact(out):  # missing, unfinished or corrupt: (re)build
        with atomic_path(out, is_dir=True) as tmp:
            build(tmp)
            seal(tmp)
    return str(out)


@task(name="finetune", **CACHED)
def finetune(
    base_model: str,
    task_name: str,
    task_files: str,
    data_dir: str | None,
    cfg: FinetuneConfig,
    device: str = "auto",
    store: str = "",
) -> str:
    """The teacher: the base model fine-tuned on the task (its metrics.json inside). Kept in
    the flow's store, not in the DVC lock: trained floats differ in their last digits from one
    CPU to another, and a lock that records them would only match the machine that wrote it."""
    params = dict(locals())
    return _produce(
        "finetune",
        params,
        lambda d: finetune_stage.make(
            base_model, task_name, data_dir, str(d / A.TEACHER), cfg, device
        ),
    )


@task(name="sample", **CACHED)
def sample(
    teacher: str,
    task_name: str,
    task_files: str,
    data_dir: str | None,
    cfg: SampleConfig,
    device: str = "auto",
    store: str = "",
) -> str:
    """Draw the ~100K-token sample and the teacher's logits on it."""
    params = dict(locals())
    return _produce(
        "sample",
        params,
        lambda d: sample_stage.make(teacher, task_name, data_dir, str(d / A.SAMPLE), cfg, device),
    )


def _measure(
    what: str, teacher: str, sample_dir: str, cfg: PruneConfig, device: str, store: str
) -> str:
    name = A.K_REP if what == "rep" else A.K_PRED
    params = {"teacher": teacher, "sample_dir": sample_dir, "cfg": cfg}
    return _produce(
        f"measure_{what}",
        {**params, "device": device, "store": store},
        lambda d: measure_stage.make(
            teacher, f"{sample_dir}/{A.SAMPLE}", what, str(d / name), cfg, device
        ),
    )


@task(name="measure_rep", **CACHED)
def measure_rep(
    teacher: str, sample_dir: str, cfg: PruneConfig, device: str = "auto", store: str = ""
) -> str:
    """K_rep of every unit (``cfg`` holds only the knobs it depends on: REP_KNOBS)."""
    return _measure("rep", teacher, sample_dir, cfg, device, store)


@task(name="measure_pred", **CACHED)
def measure_pred(
    teacher: str, sample_dir: str, cfg: PruneConfig, device: str = "auto", store: str = ""
) -> str:
    """K_pred of every unit (``cfg`` holds only the knobs it depends on: PRED_KNOBS)."""
    return _measure("pred", teacher, sample_dir, cfg, device, store)


@task(name="latency", **CACHED)
def latency(teacher: str, cfg: LatencyConfig, store: str = "") -> str:
    """The latency table of the teacher's shape on ``cfg``'s runtime: measured once per model
    shape, runtime, library versions and CPU (shared by the teachers of one base model)."""
    params = dict(locals())
    tables = Path(store or settings.FLOW_DATA) / "latency-tables"

    def build(d: Path) -> None:
        table = cached_table(load_model(teacher), cfg.resolved(), tables, progress=True)
        table.save(d / A.LATENCY_TABLE)

    return _produce("latency", params, build)


def _with_table(cfg: PruneConfig, latency_dir: str) -> PruneConfig:
    return with_table(cfg, f"{latency_dir}/{A.LATENCY_TABLE}" if latency_dir else None)


@task(name="search", **CACHED)
def search(
    teacher: str,
    sample_dir: str,
    rep_dir: str,
    pred_dir: str,
    cfg: PruneConfig,
    latency_dir: str = "",
    device: str = "auto",
    store: str = "",
) -> str:
    """The method's masks: K-prune's from the score tables, a baseline's from the teacher
    (under a latency budget, the ``latency`` task's table in ``latency_dir``)."""
    params = dict(locals())
    return _produce(
        "search",
        params,
        lambda d: search_stage.make(
            f"{rep_dir}/{A.K_REP}",
            f"{pred_dir}/{A.K_PRED}",
            str(d / A.MASKS),
            _with_table(cfg, latency_dir),
            teacher,
            f"{sample_dir}/{A.SAMPLE}",
            device,
        ),
    )


@task(name="prune_tune", **CACHED)
def prune_tune(
    teacher: str,
    sample_dir: str,
    rep_dir: str,
    pred_dir: str,
    masks_dir: str,
    cfg: PruneConfig,
    latency_dir: str = "",
    device: str = "auto",
    store: str = "",
) -> str:
    """The sublayer loop; writes the pruned model and the per-iteration score tables."""
    params = dict(locals())
    inp = prune_tune_stage.Inputs(
        teacher,
        f"{sample_dir}/{A.SAMPLE}",
        f"{rep_dir}/{A.K_REP}",
        f"{pred_dir}/{A.K_PRED}",
        f"{masks_dir}/{A.MASKS}",
    )
    return _produce(
        "prune_tune",
        params,
        lambda d: prune_tune_stage.make(
            inp, str(d / A.MODEL), str(d / A.ITERATIONS), _with_table(cfg, latency_dir), device
        ),
    )


@task(name="evaluate", **CACHED)
def evaluate(
    teacher: str,
    pruned_dir: str,
    task_name: str,
    task_files: str,
    data_dir: str | None,
    cfg: EvaluateConfig,
    max_length: int,
    device: str = "auto",
    store: str = "",
) -> str:
    """Metric, FLOPs, params and latency of the pruned model against its teacher; plots."""
    params = dict(locals())
    return _produce(
        "evaluate",
        params,
        lambda d: evaluate_stage.make(
            teacher,
            f"{pruned_dir}/{A.MODEL}",
            task_name,
            data_dir,
            str(d / A.EVAL_METRICS),
            str(d / A.EVAL_PLOTS),
            cfg,
            max_length,
            device,
        ),
    )


@task(name="timing", **CACHED)
def timing(teacher: str, pruned_dir: str, cfg: EvaluateConfig, store: str = "") -> str:
    """Dense and pruned torch latency, for a flow that defers its timings until nothing
    else runs (the batch flow), with the machine's load beside them."""
    params = dict(locals())
    return _produce(
        "timing",
        params,
        lambda d: evaluate_stage.time_folders(
            teacher, f"{pruned_dir}/{A.MODEL}", cfg, str(d / A.TIMING)
        ),
    )


@task(name="target", **CACHED)
def target(
    teacher: str,
    task_name: str,
    task_files: str,
    data_dir: str | None,
    cfg: PruneConfig,
    target_cfg: TargetConfig,
    metric: str = "",
    device: str = "auto",
    store: str = "",
) -> str:
    """The fastest model within the tolerance on the runtime (``kprune.target``): its folder
    (model, graphs, trace.csv, trace.png, target.json) in the returned folder's ``target``."""
    params = dict(locals())
    return _produce(
        "target",
        params,
        lambda d: target_stage.make(
            teacher, task_name, data_dir, str(d / A.TARGET), cfg, target_cfg, metric, device
        ),
    )


@task(name="export", **CACHED)
def export(
    pruned_dir: str,
    task_name: str,
    task_files: str,
    data_dir: str | None,
    cfg: ExportConfig,
    store: str = "",
    metric: str = "",
) -> str:
    """ONNX for ONNX Runtime (fused, verified against torch), int8 copy, dev ``metric`` of
    each (empty: the task's own)."""
    params = dict(locals())
    return _produce(
        "export",
        params,
        lambda d: export_stage.make(
            f"{pruned_dir}/{A.MODEL}", task_name, data_dir, str(d), cfg, metric
        ),
    )


@task(name="sparsify", **CACHED)
def sparsify(
    teacher: str,
    task_name: str,
    task_files: str,
    data_dir: str | None,
    cfg: SparsifyConfig,
    pruned_dir: str | None = None,
    device: str = "auto",
    store: str = "",
) -> str:
    """SparseBERT: the teacher distilled into a sparse student (from the pre-trained encoder,
    or from the K-prune model in ``pruned_dir``: K-prune + SparseBERT)."""
    params = dict(locals())
    start = f"{pruned_dir}/{A.MODEL}" if pruned_dir else None
    return _produce(
        "sparsify",
        params,
        lambda d: sparsify_stage.make(
            teacher, task_name, data_dir, str(d / A.MODEL), cfg, start, device
        ),
    )
