"""MLflow tracking for flows: a local SQLite store by default, a shared server by URI.

An unreachable server does not fail the run: it is recorded locally, and the log says so. A
server that stops answering while a run is logged (killed, restarted) does not lose it either:
the whole run is logged again to the local store, and the log says so.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from flows import settings
from kprune import artifacts as A
from kprune.errors import first_line

log = logging.getLogger("kprune.tracking")
EXPERIMENT = os.environ.get("KPRUNE_EXPERIMENT", "kprune")
T = TypeVar("T")


def answers_health(uri: str, timeout: float = 3.0) -> bool:
    """Whether the server at ``uri`` answers GET ``uri``/health with 200 (not http: True)."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            return resp.status == 200
    except Exception:
        return False


def resolve_tracking_uri() -> tuple[str, str | None]:
    """(URI to use, warning or None). MLFLOW_TRACKING_URI wins if its server answers."""
    wanted = os.environ.get("MLFLOW_TRACKING_URI")
    if not wanted:
        return settings.LOCAL_MLFLOW_URI, None
    if answers_health(wanted):
        return wanted, None
    return settings.LOCAL_MLFLOW_URI, (
        f"MLflow server {wanted} is unreachable; this run is "
        f"recorded locally in {settings.LOCAL_MLFLOW_URI}"
    )


def _warn(message: str) -> None:
    log.warning(message)
    print(f"warning: {message}")


def use_experiment(local: bool = False) -> str:
    """Point MLflow at the configured (or fallback local) store and the kprune experiment;
    ``local``: the local store whatever is configured."""
    import mlflow

    uri, warning = (settings.LOCAL_MLFLOW_URI, None) if local else resolve_tracking_uri()
    if warning:
        _warn(warning)
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    # mlflow also writes the URI it is given into the environment: keep the configured one
    # there, so that the next run tries the configured server again
    if configured is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = configured
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        location = None if uri.startswith("http") else settings.LOCAL_ARTIFACTS.as_uri()
        mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)
    return uri


def _end_abandoned_runs() -> None:
    """Forget the runs left open on a server that stopped answering (they stay unfinished
    there) so that the local store starts clean."""
    from mlflow.tracking import fluent

    fluent._active_run_stack.get().clear()


def logged(log_to: Callable[[str], T]) -> T:
    """``log_to(uri)`` on the configured store; if its server stops answering part way, the
    same ``log_to`` again on the local store, with a warning that says where the run is."""
    uri = use_experiment()
    try:
        return log_to(uri)
    except Exception as exc:
        if not uri.startswith(("http://", "https://")) or answers_health(uri):
            raise
        _end_abandoned_runs()
        first = first_line(exc)[:160]
        _warn(
            f"MLflow server {uri} stopped answering while this run was logged ({first}); the "
            f"whole run is recorded locally in {settings.LOCAL_MLFLOW_URI} (the server keeps "
            "the part it received, unfinished)"
        )
        return log_to(use_experiment(local=True))


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=settings.ROOT,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _flatten(prefix: str, obj, out: dict) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, list | tuple):
        out[prefix] = json.dumps(list(obj))
    else:
        out[prefix] = obj


def log_compress_runs(
    rows: list[dict],
    params: dict,
    checkpoint: str,
    task: str,
    summary_plot: Path | None = None,
    target_dir: str | None = None,
) -> dict:
    """One parent run for the flow call and a child run per reduction (and, with a target
    search in ``target_dir``, one for it). Returns run ids/URI."""
    return logged(
        lambda uri: _log_compress(uri, rows, params, checkpoint, task, summary_plot, target_dir)
    )


def _log_compress(
    uri: str,
    rows: list[dict],
    params: dict,
    checkpoint: str,
    task: str,
    summary_plot: Path | None,
    target_dir: str | None,
) -> dict:
    import mlflow

    tags = {"checkpoint": checkpoint, "task": task, "git_commit": git_commit()}
    flat: dict = {}
    _flatten("", params, flat)
    ids = {"tracking_uri": uri, "children": []}
    with mlflow.start_run(run_name=f"compress {task}", tags=tags) as parent:
        ids["parent"] = parent.info.run_id
        mlflow.log_params(flat)
        if summary_plot is not None and summary_plot.exists():
            mlflow.log_artifact(str(summary_plot), "plots")
        for row in rows:
            what = f"r={row['reduction']}"
            row_tags = {**tags, "reduction": str(row["reduction"])}
            if row["kind"] == "sparsebert":  # of the teacher, or of a K-prune model
                what = f"{row['method']} s={row['sparsity']}" + (
                    f" r={row['reduction']}" if row["reduction"] else ""
                )
                row_tags.update(method=row["method"], sparsity=str(row["sparsity"]))
            with mlflow.start_run(run_name=f"{task} {what}", nested=True, tags=row_tags) as child:
                _log_child(row, flat)
                ids["children"].append(child.info.run_id)
                version = register_pruned(child.info, row, checkpoint, task)
                if version is not None:
                    ids.setdefault("registered", []).append(version)
        if target_dir is not None:
            ids["target"] = _log_target(Path(target_dir) / A.TARGET, flat, tags, checkpoint, task)
    return ids


def _log_target(folder: Path, flat: dict, tags: dict, checkpoint: str, task: str) -> dict:
    """A child run for the target search (its trace, plot and summary as artifacts, the
    chosen model logged and registered with the target and recipe as tags) and, under it, a
    run per candidate."""
    import mlflow
    import pandas as pd

    record = json.loads((folder / "target.json").read_text())
    chosen = record["chosen"]
    ids: dict = {"candidates": []}
    name = f"{task} target {record['max_drop']:g} points on {chosen['runtime']}"
    run_tags = {**tags, "kind": "target", "recipe": chosen["recipe"]}
    with mlflow.start_run(run_name=name, nested=True, tags=run_tags) as run:
        ids["run"] = run.info.run_id
        mlflow.log_params({**flat, "target.runtime": chosen["runtime"]})
        mlflow.log_metrics(
            {
                "passed": float(record["passed"]),
                "teacher_dev": float(record["teacher_dev"]),
                "chosen_reduction": float(chosen["reduction"]),
                "chosen_dev": float(chosen["metric"]),
                "chosen_drop": float(chosen["drop"]),
                "chosen_latency_ms": float(chosen["latency_ms"]),
                "chosen_speedup": float(chosen["speedup"]),
                **{f"seconds_{k}": float(v) for k, v in record["seconds"].items()},
            }
        )
        for file in ("trace.csv", "trace.png", "target.json"):
            mlflow.log_artifact(str(folder / file), "target")
        mlflow.log_artifacts(str(folder / A.MODEL), A.MODEL)
        for graph in sorted(folder.glob("*.onnx")):
            mlflow.log_artifact(str(graph), "onnx")
        trace = pd.read_csv(folder / "trace.csv")
        for row in trace.to_dict("records"):
            label = f"{row['stage']} R={row['reduction']} {row['recipe']}"
            with mlflow.start_run(run_name=label, nested=True) as cand:
                mlflow.log_params({k: row[k] for k in CANDIDATE_PARAMS})
                mlflow.log_metrics(
                    {k: float(row[k]) for k in CANDIDATE_METRICS if pd.notna(row[k])}
                )
                ids["candidates"].append(cand.info.run_id)
        version = _register_target(run.info, record, checkpoint, task)
        ids["registered"] = version
    return ids


CANDIDATE_PARAMS = ("stage", "reduction", "budget", "mode", "runtime", "recipe", "fallback")
CANDIDATE_METRICS = (
    "metric", "drop", "passes", "latency_ms", "speedup", "flops_kept", "seconds", "pareto",
    "chosen",
)  # fmt: skip


def _register_target(run_info, record: dict, checkpoint: str, task: str) -> str:
    """The chosen model as a version of the teacher and task's registered model, tagged with
    the target, the recipe and where the trace is."""
    from mlflow import MlflowClient

    from flows.keys import code_digest

    client, name = MlflowClient(), registered_name(checkpoint, task)
    _ensure_registered(client, name, checkpoint, task)
    c = record["chosen"]
    tags = {
        "teacher": checkpoint,
        "task": task,
        "method": "kprune-target",
        "target_max_drop": str(record["max_drop"]),
        "target_runtime": c["runtime"],
        "target_passed": str(record["passed"]),
        "recipe": c["recipe"],
        "fallback": c["fallback"] or "-",
        "reduction": str(c["reduction"]),
        "metric": record["metric"],
        record["metric"]: str(c["metric"]),
        "trace": f"{run_info.artifact_uri}/target/trace.csv",
        "code_digest": code_digest(),
    }
    version = client.create_model_version(
        name, source=f"{run_info.artifact_uri}/{A.MODEL}", run_id=run_info.run_id, tags=tags
    )
    return f"{name}/{version.version}"


def _ensure_registered(client, name: str, checkpoint: str, task: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description=f"kprune-pruned models of {checkpoint} on task {task}"
        )


def registered_name(checkpoint: str, task: str) -> str:
    """The registered model of a teacher and task: one per pair, a version per run."""
    raw = f"kprune-{Path(task).stem}-{Path(checkpoint).name}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)


def register_pruned(run_info, row: dict, checkpoint: str, task: str) -> str | None:
    """Register the pruned model logged in this run (its ``model`` artifact) as a new
    version of the teacher and task's registered model; returns "name/version"."""
    from mlflow import MlflowClient

    from flows.keys import code_digest

    if "model" not in row.get("artifacts", {}):
        return None
    client, name = MlflowClient(), registered_name(checkpoint, task)
    _ensure_registered(client, name, checkpoint, task)
    tags = {
        "teacher": checkpoint,
        "task": task,
        "method": row.get("method", "kprune"),
        "reduction": str(row["reduction"]),
        "metric": row["metric"],
        row["metric"]: str(row["metric_after"]),
        "flops_kept": f"{row['flops_kept']:.4f}",
        "code_digest": code_digest(),
    }
    if row["kind"] == "sparsebert":
        tags["sparsity"] = str(row["sparsity"])
    version = client.create_model_version(
        name, source=f"{run_info.artifact_uri}/model", run_id=run_info.run_id, tags=tags
    )
    return f"{name}/{version.version}"


def _log_child(row: dict, flat_params: dict) -> None:
    import mlflow

    mlflow.log_params({**flat_params, "reduction": row["reduction"]})
    metrics = {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    metrics.update({f"seconds_{k}": float(v) for k, v in row.get("seconds", {}).items()})
    lat = row.get("latency") or {}
    metrics.update({f"latency_{k}": float(v) for k, v in lat.items() if isinstance(v, int | float)})
    mlflow.log_metrics(metrics)
    for name, path in row.get("artifacts", {}).items():
        p = Path(path)
        if p.is_dir():
            mlflow.log_artifacts(str(p), name)
        elif p.exists():
            mlflow.log_artifact(str(p), name)


def log_benchmark(out_dir: Path, paths: list[Path]) -> str:
    """Log the benchmark's CSV, report and plots as one MLflow run."""
    import mlflow

    def log_to(uri: str) -> str:
        with mlflow.start_run(
            run_name="benchmark", tags={"git_commit": git_commit(), "kind": "benchmark"}
        ) as run:
            for p in paths:
                mlflow.log_artifact(str(p), "benchmark")
        return run.info.run_id

    return logged(log_to)
