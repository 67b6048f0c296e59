"""Tracking servers that die mid-run: the MLflow server SIGKILLed while a flow's run is being
logged, then started again. Against a real `mlflow server` on loopback."""

from __future__ import annotations

import pytest

from tests.helpers import MlflowServer


def _rows(n: int) -> list[dict]:
    return [
        {
            "kind": "kprune",
            "reduction": r,
            "metric": "accuracy",
            "metric_after": 0.8,
            "flops_kept": 1 - r,
        }
        for r in (0.3, 0.5, 0.7)[:n]
    ]


@pytest.fixture
def stores(tmp_path, monkeypatch):
    """The flows' local store in tmp_path and a real server; the server's URI configured."""
    from flows import settings

    monkeypatch.setattr(settings, "LOCAL_MLFLOW_URI", f"sqlite:///{tmp_path / 'local.db'}")
    monkeypatch.setattr(settings, "LOCAL_ARTIFACTS", tmp_path / "local-artifacts")
    server = MlflowServer(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.start())
    yield server
    server.stop()


def _runs(uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("kprune")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_a_server_killed_mid_run_loses_no_run_and_a_restarted_one_is_used_again(
    stores, monkeypatch, capsys
):
    from flows import settings, tracking

    real_child, logged_children = tracking._log_child, []

    def log_child_then_kill(row, flat):  # the server dies after the first child is logged
        real_child(row, flat)
        logged_children.append(row["reduction"])
        if len(logged_children) == 1:
            stores.kill()

    monkeypatch.setattr(tracking, "_log_child", log_child_then_kill)
    ids = tracking.log_compress_runs(_rows(3), {"search": {"lam": 1.0}}, "teacher", "s.csv")
    out = capsys.readouterr().out
    assert f"MLflow server {stores.uri} stopped answering while this run was logged" in out
    assert ids["tracking_uri"] == settings.LOCAL_MLFLOW_URI
    local = _runs(settings.LOCAL_MLFLOW_URI)  # the whole run: parent and three children
    assert len(local) == 4 and all(r.info.status == "FINISHED" for r in local)
    children = [r for r in local if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.params["reduction"] for r in children) == ["0.3", "0.5", "0.7"]
    assert all(r.data.metrics["metric_after"] == 0.8 for r in children)

    monkeypatch.setattr(tracking, "_log_child", real_child)
    stores.start()  # the same port and store: the next run goes to the server again
    ids = tracking.log_compress_runs(_rows(1), {}, "teacher", "s.csv")
    out = capsys.readouterr().out
    assert ids["tracking_uri"] == stores.uri and "stopped answering" not in out, out
    on_server = _runs(stores.uri)
    assert ids["parent"] in {r.info.run_id for r in on_server}
    # what the server received before it died is still there, unfinished
    assert any(r.info.status == "RUNNING" for r in on_server)


def test_a_prefect_server_killed_mid_flow_is_one_line_and_a_rerun_reuses_the_finished_tasks(
    tmp_path,
):
    """`flows.compress` against a real `prefect server`, killed once the first task's output
    is on disk: one line, no traceback; the server started again on
    its store, the same command reuses every finished task and ends with a loadable model."""
    import os
    import subprocess
    import sys
    import time

    import yaml

    from kprune.models.checkpoint import verify
    from tests.helpers import PrefectServer, make_tiny_teacher
    from tests.test_flows import PARAMS

    make_tiny_teacher(tmp_path)
    params = {**PARAMS, "evaluate": {**PARAMS["evaluate"], "latency": False}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    server = PrefectServer(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    # no client retries: the flow fails at its first report the dead server misses (with the
    # flows' default of 2 the same happens about a minute later)
    env.update(PREFECT_CLIENT_MAX_RETRIES="0", KPRUNE_HOME=str(tmp_path))
    env.update(PREFECT_API_URL=server.start() + "/api")
    cmd = [sys.executable, "-m", "flows.compress", "--checkpoint", str(tmp_path / "teacher")]
    cmd += ["--task", str(tmp_path / "s.csv"), "--params", "params.yaml", "--no-track"]
    try:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        samples = tmp_path / "data" / "flows" / "sample"
        while not any(samples.rglob("*.safetensors")) and proc.poll() is None:
            time.sleep(0.2)
        server.kill()
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2 and "Traceback" not in err, err[-3000:]
        lines = [x for x in err.splitlines() if x.startswith("kprune: error:")]
        assert len(lines) == 1 and "stopped answering during the flow" in lines[0], err[-3000:]
        sample = next(samples.rglob("*.safetensors"))
        written = sample.stat().st_mtime_ns

        server.start()
        rerun = subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        states = dict(
            x.split(" ")[:2] for x in rerun.stdout.split("tasks: ")[1].splitlines()[0].split(", ")
        )
        assert states["sample"] == "cached" and states["measure_rep"] == "cached"
        assert sample.stat().st_mtime_ns == written  # reused, not rewritten
        for model in (tmp_path / "data" / "flows" / "prune_tune").glob("*/model"):
            verify(model)
    finally:
        server.stop()
