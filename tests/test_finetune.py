import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from kprune.config import FinetuneConfig
from kprune.data.tasks import load_task
from kprune.errors import KPruneError
from kprune.train.finetune import finetune
from tests.conftest import ROOT

FAST = FinetuneConfig(epochs=3, batch_size=16, lr=3e-3, max_length=16, warmup_ratio=0.0)


def test_finetune_learns_and_saves(tiny_bert, sentiment_csv, tmp_path):
    task = load_task(str(sentiment_csv))
    out = tmp_path / "teacher"
    metrics = finetune(str(tiny_bert), task, out, FAST, device="cpu", progress=False)
    assert metrics["dev"]["accuracy"] >= 0.8  # the synthetic task is easy; random is 0.5
    assert json.loads((out / "metrics.json").read_text())["test"] == metrics["test"]
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 2
    assert (out / "tokenizer.json").exists() or (out / "vocab.txt").exists()


def test_finetune_regression(tiny_bert, tmp_path):
    from tests.helpers import sentiment_frame

    path = tmp_path / "reg.csv"
    sentiment_frame(240, regression=True).to_csv(path, index=False)
    task = load_task(str(path))
    metrics = finetune(str(tiny_bert), task, tmp_path / "reg", FAST, device="cpu", progress=False)
    assert metrics["metric"] == "spearman"
    assert metrics["dev"]["spearman"] > 0.5


def test_same_seed_same_model(tiny_bert, sentiment_csv, tmp_path):
    task = load_task(str(sentiment_csv))
    cfg = FinetuneConfig(epochs=0.3, batch_size=16, lr=1e-3, max_length=16)
    a = finetune(str(tiny_bert), task, tmp_path / "a", cfg, device="cpu", progress=False)
    b = finetune(str(tiny_bert), task, tmp_path / "b", cfg, device="cpu", progress=False)
    assert a["dev"] == b["dev"] and a["history"][-1]["loss"] == b["history"][-1]["loss"]


def test_missing_model_folder(sentiment_csv, tmp_path):
    with pytest.raises(KPruneError, match="does not exist"):
        finetune(str(tmp_path / "none" / "model"), load_task(str(sentiment_csv)), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_invalid_hyperparameters():
    with pytest.raises(KPruneError, match=r"finetune.lr must be > 0, got 0; set it in params.yaml"):
        FinetuneConfig(lr=0)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "kprune.cli", *args], capture_output=True, text=True, cwd=ROOT
    )


def test_cli_bad_task_path_is_one_line(tiny_bert, tmp_path):
    proc = _cli(
        "finetune",
        str(tiny_bert),
        "--task",
        str(tmp_path / "missing.csv"),
        "--out",
        str(tmp_path / "o"),
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("kprune: error:")]
    assert len(errors) == 1 and "missing.csv does not exist" in errors[0]


def test_cli_unknown_task(tiny_bert, tmp_path):
    proc = _cli("finetune", str(tiny_bert), "--task", "imdb", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "unknown task 'imdb'" in proc.stderr


def test_a_killed_finetune_resumes_at_its_last_epoch_and_matches(tiny_bert, tmp_path):
    """SIGKILL after an epoch: the rerun resumes from the state saved after that epoch and
    ends with the weights of a run that was never stopped; the state file is then gone."""
    import os
    import signal
    import time

    from safetensors.torch import load_file

    from kprune.train.finetune import partial_path
    from tests.helpers import sentiment_frame

    csv = tmp_path / "s.csv"
    sentiment_frame(900).to_csv(csv, index=False)
    cfg = FinetuneConfig(epochs=3, batch_size=16, lr=3e-3, max_length=16)
    finetune(str(tiny_bert), load_task(str(csv)), tmp_path / "a", cfg, "cpu", progress=False)
    out = tmp_path / "b"
    cmd = [sys.executable, "-m", "kprune.cli", "finetune", str(tiny_bert), "--task", str(csv),
           "--epochs", "3", "--batch-size", "16", "--lr", "0.003", "--max-length", "16",
           "--device", "cpu", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not partial_path(out).exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial_path(out).exists() and not out.exists()
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming" in again.stderr
    assert not partial_path(out).exists()
    want, got = (
        load_file(tmp_path / "a" / "model.safetensors"),
        load_file(out / "model.safetensors"),
    )
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
