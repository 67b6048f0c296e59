"""Prefect flows end to end on tiny checkpoints, with a real MLflow server and a real Dask
cluster on loopback. Each flow runs as a user would run it: ``python -m flows.<name>``."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import MlflowServer, make_tiny_teacher

PARAMS = {
    "compress": {"task": "rt", "reductions": [0.3, 0.6]},
    "sample": {"tokens": 1500, "seed": 0, "batch_size": 16, "max_length": 16},
    "measure": {"gamma": 2.0, "pred_form": "paper"},
    "search": {"reduction": 0.6, "lam": 2.5e-4, "mu": 64.0},
    "prune_tune": {"mode": "iterative"},
    "evaluate": {"latency": True, "threads": 1, "repeats": 2, "seq_len": 16},
}

# a quick target search: two one-shot estimates and one iterative prune, timed in torch
TARGET_PARAMS = {
    "target": {"max_drop": 2.0, "estimate_steps": 2, "confirm_prunes": 1, "repeats": 2},
    "latency": {"runtime": "torch", "batch": 2, "seq_len": 16, "threads": 1},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flows")
    make_tiny_teacher(root)
    shutil.copytree(root / "teacher", root / "teacher2")
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    return root


def _run(module, args, root: Path, **env_extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update({"KPRUNE_HOME": str(root), **env_extra})
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _states(stdout: str) -> list[tuple[str, str]]:
    line = next(x for x in stdout.splitlines() if x.startswith("tasks: "))
    return re.findall(r"(\w+) (\w+) \(", line)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1, stopped after the module."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    yield server.start()
    server.stop()


def _compress(project, **env):
    return _run(
        "flows.compress",
        [
            "--checkpoint",
            str(project / "teacher"),
            "--task",
            str(project / "s.csv"),
            "--params",
            "params.yaml",
        ],
        project,
        **env,
    )


def test_compress_tracks_to_a_real_mlflow_server(project, mlflow_server):
    from mlflow.tracking import MlflowClient

    proc = _compress(project, MLFLOW_TRACKING_URI=mlflow_server)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {s for _, s in _states(proc.stdout)} == {"completed"}
    assert "0.30" in proc.stdout and "0.60" in proc.stdout
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("kprune")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "reduction" in r.data.tags]
    assert sorted(float(r.data.tags["reduction"]) for r in children) == [0.3, 0.6]
    child = children[0]
    for metric in (
        "metric_before",
        "metric_after",
        "flops_kept",
        "params_kept",
        "seconds_measure",
        "latency_speedup_b32",
        "onnx_max_abs_diff",
        "onnx_attention_nodes",
        "onnx_dev_onnx_int8",
    ):
        assert metric in child.data.metrics, metric
    assert child.data.metrics["onnx_max_abs_diff"] <= 1e-4
    assert child.data.tags["git_commit"] and child.data.tags["checkpoint"].endswith("teacher")
    assert child.data.params["search.lam"] == "0.00025"
    names = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"masks", "model", "scores", "evaluation", "onnx"} <= names
    onnx = {a.path for a in client.list_artifacts(child.info.run_id, "onnx")}
    assert {"onnx/model.onnx", "onnx/model.int8.onnx", "onnx/model.onnx.json"} <= onnx
    # one registered model for the teacher and task, a version per reduction's run
    versions = client.search_model_versions("name = 'kprune-s-teacher'")
    assert sorted(v.tags["reduction"] for v in versions) == ["0.3", "0.6"]
    v = versions[0]
    assert {"teacher", "task", "method", "metric", "flops_kept", "code_digest"} <= set(v.tags)
    assert v.run_id in {r.info.run_id for r in children}


def test_a_flow_killed_before_a_task_s_rename_reruns_to_the_same_outputs(project, tmp_path):
    """SIGKILL just before the prune_tune task renames its finished folder into the store:
    nothing half-done is served; the rerun redoes that task and writes the weights the
    uninterrupted run above wrote."""
    import hashlib
    import signal

    store = tmp_path / "flows"
    killer = (
        "import os, runpy, signal, sys\n"
        "from pathlib import Path\n"
        "real = os.replace\n"
        "def replace(src, dst, *a, **k):\n"
        "    if Path(dst).parent.name == 'prune_tune' and '.tmp-' in str(src):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(src, dst, *a, **k)\n"
        "os.replace = replace\n"
        "sys.argv = ['flows.compress', *sys.argv[1:]]\n"
        "runpy.run_module('flows.compress', run_name='__main__')\n"
    )
    args = ["--checkpoint", str(project / "teacher"), "--task", str(project / "s.csv")]
    args += ["--params", "params.yaml", "--no-track", "--reductions", "0.6"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(KPRUNE_HOME=str(project), KPRUNE_FLOW_DIR=str(store))
    # no pipes: the temporary Prefect server the killed flow started outlives it, holding them
    killed = subprocess.run(
        [sys.executable, "-c", killer, *args],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL
    assert not [p for p in (store / "prune_tune").iterdir() if not p.name.startswith(".")]
    rerun = subprocess.run(
        [sys.executable, "-m", "flows.compress", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert dict(_states(rerun.stdout))["sample"] == "cached"
    # the rerun stopped the server the killed flow left running
    assert "stopped the temporary Prefect server" in rerun.stderr, rerun.stderr[-3000:]

    def digest(folder: Path) -> str:
        return hashlib.sha256((folder / "model" / "model.safetensors").read_bytes()).hexdigest()

    models = sorted((store / "prune_tune").iterdir())
    assert [m.name for m in models if m.name.startswith(".")] == []  # the orphan swept
    # keys hold the store's paths: the same models are found by their weights
    reference = {
        digest(m.parent) for m in (project / "data" / "flows" / "prune_tune").glob("*/model")
    }
    assert len(models) == 1 and {digest(m) for m in models} <= reference


def test_compress_with_a_target_tracks_its_candidates_and_registers_the_choice(
    project, mlflow_server, tmp_path
):
    """compress.target: true adds the target search as a cached task; its run holds the
    trace, a nested run per candidate, and the chosen model registered with its target."""
    from mlflow.tracking import MlflowClient

    root = tmp_path / "targeted"
    root.mkdir()
    shutil.copytree(project / "teacher", root / "tteacher")
    shutil.copy(project / "s.csv", root / "s.csv")
    params = {
        **PARAMS,
        "compress": {"task": "rt", "reductions": [], "target": True},
        **TARGET_PARAMS,
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["--checkpoint", str(root / "tteacher"), "--task", str(root / "s.csv")]
    proc = _run("flows.compress", [*args, "--params", "params.yaml"], root,
                MLFLOW_TRACKING_URI=mlflow_server)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "target: within 2 points" in proc.stdout
    assert ("target", "completed") in _states(proc.stdout)
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("kprune")
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'target'")
    assert len(runs) == 1
    run = runs[0]
    trace_rows = len(
        (root / "data" / "flows" / "target").glob("*/target/trace.csv").__next__().read_text()
        .strip().splitlines()
    ) - 1  # fmt: skip
    nested = client.search_runs(
        [exp.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(nested) == trace_rows >= 4
    files = {a.path for a in client.list_artifacts(run.info.run_id, "target")}
    assert {"target/trace.csv", "target/trace.png", "target/target.json"} <= files
    versions = client.search_model_versions("name = 'kprune-s-tteacher'")
    (version,) = versions
    assert version.tags["method"] == "kprune-target" and version.tags["recipe"] == "fp32"
    assert version.tags["target_max_drop"] == "2.0" and version.run_id == run.info.run_id
    again = _run("flows.compress", [*args, "--params", "params.yaml"], root)
    assert ("target", "cached") in _states(again.stdout)


def test_lambda_change_reuses_cached_stages_and_survives_mlflow_outage(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["search"]["lam"] = 1e-3
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    sample_files = list((project / "data" / "flows" / "sample").rglob("*.safetensors"))
    before = {p: p.stat().st_mtime_ns for p in sample_files}
    start = time.perf_counter()
    proc = _compress(project, MLFLOW_TRACKING_URI="http://127.0.0.1:9")  # nothing listens
    assert proc.returncode == 0, proc.stderr[-3000:]
    states = _states(proc.stdout)
    assert {s for n, s in states if n in ("sample", "measure_rep", "measure_pred")} == {"cached"}
    assert {s for n, s in states if n in ("search", "prune_tune", "evaluate")} == {"completed"}
    assert {p: p.stat().st_mtime_ns for p in sample_files} == before  # really skipped
    assert "unreachable" in proc.stdout and "recorded locally" in proc.stdout
    assert (project / "mlflow.db").exists()
    assert time.perf_counter() - start < 300


def test_batch_on_a_dask_cluster_isolates_a_failing_checkpoint(project):
    import signal

    from distributed import Client, LocalCluster

    (project / "batch.yaml").write_text(
        yaml.safe_dump(
            {
                "reductions": [0.5],
                "checkpoints": [
                    {"checkpoint": str(project / "teacher"), "task": str(project / "s.csv")},
                    {
                        "checkpoint": str(project / "teacher2"),
                        "task": str(project / "s.csv"),
                        "reductions": [0.4],
                    },
                    {"checkpoint": str(project / "missing"), "task": str(project / "s.csv")},
                ],
            }
        )
    )
    store = project / "data" / "flows" / "prune_tune"
    before = set(store.glob("*")) if store.exists() else set()
    targeted = {**PARAMS, **TARGET_PARAMS}
    targeted["compress"] = {**PARAMS["compress"], "target": True}
    (project / "params-target.yaml").write_text(yaml.safe_dump(targeted))
    # the workers start in this process's working folder, not the project: the flow must
    # tell them where its outputs go
    # and one worker is SIGKILLed mid-batch, once a first task output is on disk: its nanny starts
    # another and the scheduler runs its tasks again; the batch ends as it would have
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
        ) as cluster,
        Client(cluster) as client,
    ):
        pids = client.run(os.getpid)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
        args = ["batch.yaml", "--params", "params-target.yaml", "--dask", cluster.scheduler_address]
        logs = [open(project / f"dask-batch.{n}", "w+") for n in ("out", "err")]  # noqa: SIM115
        proc = subprocess.Popen(  # files, not pipes: nothing reads them while it runs
            [sys.executable, "-m", "flows.batch", *args],
            cwd=project,
            env={**env, "KPRUNE_HOME": str(project)},
            stdout=logs[0],
            stderr=logs[1],
            text=True,
        )
        flows = project / "data" / "flows"
        seen = set(flows.glob("*/*"))  # the task outputs already there (earlier tests')
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            if set(flows.glob("*/[!.]*")) - seen:  # a task of this batch has finished
                break
            time.sleep(0.2)
        assert proc.poll() is None  # mid-batch
        victim = next(iter(pids.values()))
        os.kill(victim, signal.SIGKILL)
        proc.wait(timeout=900)
        out, err = ((f.seek(0), f.read(), f.close())[1] for f in logs)
        assert victim not in client.run(os.getpid).values()  # replaced by its nanny
    assert proc.returncode == 1, err[-3000:]
    assert "teacher (" in out and "teacher2 (" in out
    assert re.search(r"FAILED .*missing.*does not exist", out), out
    assert set(store.glob("*")) - before  # teacher2 at 0.4, in the project's store
    # timings deferred until every task had finished, one per pruned model, load recorded
    assert "timings ran one at a time after all other tasks" in out
    # each checkpoint searched to its target (the missing one fails there too)
    assert re.search(r"teacher \(.*\) target: within 2 points", out), out
    assert re.search(r"teacher2 \(.*\) target: within 2 points", out), out
    timings = list((project / "data" / "flows" / "timing").glob("*/latency.json"))
    assert len(timings) >= 2
    for path in timings:
        lat = json.loads(path.read_text())
        assert {"load_before", "load_after", "speedup_b32"} <= set(lat)


def test_two_batch_flows_on_the_same_data_do_not_clobber(project):
    (project / "batch2.yaml").write_text(
        yaml.safe_dump(
            {
                "reductions": [0.45],
                "checkpoints": [
                    {"checkpoint": str(project / "teacher"), "task": str(project / "s.csv")}
                ],
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env["KPRUNE_HOME"] = str(project)
    cmd = [sys.executable, "-m", "flows.batch", "batch2.yaml", "--params", "params.yaml"]
    procs = [
        subprocess.Popen(
            cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "0.45" in out
    from kprune.models.checkpoint import load_pruned

    models = list((project / "data" / "flows" / "prune_tune").glob("*/model"))
    assert models and all((m.parent / ".done").exists() for m in models)
    for m in models:
        load_pruned(m)  # every shared output is complete and loadable
    leftovers = [p for p in (project / "data" / "flows").rglob(".*tmp-*")]
    assert leftovers == []


def test_a_corrupt_cached_output_is_recomputed_not_used(project):
    samples = sorted((project / "data" / "flows" / "sample").glob("*/sample.safetensors"))
    assert samples
    for s in samples:  # damage every cached sample
        raw = bytearray(s.read_bytes())
        raw[-7] ^= 0xFF
        s.write_bytes(bytes(raw))
    proc = _compress(project)
    assert proc.returncode == 0, proc.stderr[-3000:]
    states = dict(_states(proc.stdout))
    assert states["sample"] == "completed"  # rebuilt, not served from the cache
    from kprune.data.sample import load_sample

    for s in sorted((project / "data" / "flows" / "sample").glob("*/sample.safetensors")):
        load_sample(s)  # intact again


def test_sparsebert_runs_in_both_flows_tracked_and_cached(project):
    """compress.sparsify: SparseBERT on the teacher and on the K-prune model, each a task,
    an MLflow child run and a registered version; the batch flow runs the same tasks, served
    from the cache (their outputs are not rewritten), and reports them."""
    from mlflow.tracking import MlflowClient

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["compress"] = {"task": "rt", "reductions": [0.6], "sparsify": True}
    params["sparsify"] = {
        "sparsity": 0.5,
        "epochs": 1.0,
        "batch_size": 16,
        "lr": 1e-3,
        "max_length": 16,
        "mask_updates": 4,
    }
    (project / "params-sparse.yaml").write_text(yaml.safe_dump(params))
    args = ["--checkpoint", str(project / "teacher"), "--task", str(project / "s.csv")]
    proc = _run("flows.compress", [*args, "--params", "params-sparse.yaml"], project)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [s for n, s in _states(proc.stdout) if n == "sparsify"] == ["completed"] * 2
    assert "sparsebert (teacher) sparsity 0.5" in proc.stdout
    assert "kprune+sparsebert (K-prune R=0.6) sparsity 0.5" in proc.stdout
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("kprune")
    runs = client.search_runs([exp.experiment_id], "tags.sparsity = '0.5'")
    assert sorted(r.data.tags["method"] for r in runs) == ["kprune+sparsebert", "sparsebert"]
    for r in runs:
        assert r.data.metrics["matrix_nonzero_fraction"] < 0.51
        assert "model" in {a.path for a in client.list_artifacts(r.info.run_id)}
    versions = client.search_model_versions("name = 'kprune-s-teacher'")
    assert {v.tags.get("method") for v in versions} >= {"sparsebert", "kprune+sparsebert"}

    models = sorted((project / "data" / "flows" / "sparsify").glob("*/model/*.safetensors"))
    assert len(models) == 2
    before = {m: m.stat().st_mtime_ns for m in models}
    (project / "batch-sparse.yaml").write_text(
        yaml.safe_dump(
            {
                "reductions": [0.6],
                "checkpoints": [
                    {"checkpoint": str(project / "teacher"), "task": str(project / "s.csv")}
                ],
            }
        )
    )
    batch = _run("flows.batch", ["batch-sparse.yaml", "--params", "params-sparse.yaml"], project)
    assert batch.returncode == 0, batch.stderr[-3000:]
    assert "kprune+sparsebert (K-prune R=0.6)" in batch.stdout
    # the batch flow's sparsify tasks were served from the cache: nothing retrained
    assert {m: m.stat().st_mtime_ns for m in models} == before
