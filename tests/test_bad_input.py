"""Bad input through the real CLI: one line naming the problem and the fix, exit code 2,
no traceback, and nothing written."""

import logging
import subprocess
import sys
import uuid

import pytest

from kprune.config import PruneConfig
from kprune.data.tasks import load_task
from kprune.pruning.assemble import prune
from tests.conftest import ROOT
from tests.helpers import make_headless, make_tiny_teacher, sentiment_frame


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    make_tiny_teacher(root, n=120, epochs=1, lr=1e-3)
    make_headless(root / "headless")
    return root


def _prune_cli(env, *args, model="teacher"):
    out = env / f"out-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "kprune.cli", "prune", str(env / model), "--task"]
    cmd += [str(env / "s.csv"), "--out", str(out), "--tokens", "300", "--max-length", "16", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    return proc, out


# The refusals themselves are the hostile-input table (tests/hostile_inputs.py), run in-process;
# here the real process: one line on stderr, exit code 2, no traceback.


def test_untrained_head_allowed_on_request(env):
    proc, out = _prune_cli(env, "--reduction", "0.5", "--allow-untrained-head", model="headless")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "report.json").exists()


def test_labels_that_do_not_fit_the_model(env, tmp_path):
    df = sentiment_frame(60)
    df["label"] = [i % 4 for i in range(len(df))]
    df.to_csv(tmp_path / "four.csv", index=False)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kprune.cli",
            "prune",
            str(env / "teacher"),
            "--task",
            str(tmp_path / "four.csv"),
            "--reduction",
            "0.5",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("kprune: error:")]
    assert len(errors) == 1 and "has 2 labels but task 'four' has 4" in errors[0]


def test_more_tokens_than_the_training_split_uses_all_and_warns(env, caplog):
    task = load_task(str(env / "s.csv"))
    with caplog.at_level(logging.WARNING):
        _, report = prune(
            str(env / "teacher"),
            task,
            PruneConfig(reduction=0.5, tokens=10**7, max_length=16),
            device="cpu",
            progress=False,
        )
    assert report["sample"]["examples"] == len(task.split("train"))
    assert any("using all" in r.message for r in caplog.records)


def test_whole_layers_disappear_at_a_very_high_reduction(env):
    task = load_task(str(env / "s.csv"))
    _, report = prune(
        str(env / "teacher"),
        task,
        PruneConfig(reduction=0.97, tokens=800, max_length=16),
        device="cpu",
        progress=False,
    )
    assert report["flops_after"] <= report["flops_budget"]
    assert 0 in report["kept_heads_per_layer"] or 0 in report["kept_neurons_per_layer"]
    assert report["metric_after"] is not None


def test_nan_in_the_model_is_survived_recorded_and_pruned_away(env):
    import torch

    from kprune.models.checkpoint import load_model
    from kprune.models.loading import load_tokenizer

    model = load_model(str(env / "teacher"))
    with torch.no_grad():  # one FFN neuron of the last layer emits NaN
        model.bert.encoder.layer[1].intermediate.dense.weight[3] = float("nan")
    task = load_task(str(env / "s.csv"))
    pruned, report = prune(
        model,
        task,
        PruneConfig(reduction=0.5, tokens=800, max_length=16),
        tokenizer=load_tokenizer(str(env / "teacher")),
        device="cpu",
        progress=False,
    )
    last = report["sublayers"][-1]
    assert last["nonfinite_units"] == 1 and last["nonfinite_batches"] > 0
    ids = torch.randint(5, 20, (2, 8))
    with torch.no_grad():
        assert torch.isfinite(pruned(input_ids=ids).logits).all()  # the NaN neuron is gone


def test_doctor_shows_one_readable_screen():
    proc = subprocess.run(
        [sys.executable, "-m", "kprune.cli", "doctor"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for line in ("torch", "prefect", "mlflow", "dvc", "device", "disk"):
        assert any(x.startswith(line) for x in proc.stdout.splitlines()), line
    assert "GB free" in proc.stdout
