"""A prune run killed with SIGKILL leaves no half-written output; a rerun resumes and matches
an uninterrupted run. (Two batch flows on the same data/: tests/test_flows.py.)"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stages import measure, sample, search
from tests.helpers import make_tiny_teacher

PARAMS = {
    "sample": {"tokens": 3000, "seed": 0, "batch_size": 8, "max_length": 16},
    "measure": {"gamma": 2.0, "pred_form": "paper"},
    "search": {"reduction": 0.6, "lam": 2.5e-4, "mu": 64.0},
    "prune_tune": {"mode": "iterative"},
    "evaluate": {"latency": False},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    make_tiny_teacher(root, n=400, epochs=2, layers=4)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    return root


def _stage_args(root: Path, *args: str) -> list[str]:
    return ["--params", str(root / "params.yaml"), "--device", "cpu", *args]


def _stage(root: Path, name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"stages.{name}", *_stage_args(root, *args)]


def _prepare(root: Path, out: Path) -> dict:
    """sample, measure and search into ``out`` (in this process: only prune_tune is killed and
    resumed); returns the prune_tune arguments."""
    out.mkdir(exist_ok=True)
    s, rep, pred, masks = (
        out / "s.safetensors",
        out / "rep.parquet",
        out / "pred.parquet",
        out / "masks.json",
    )
    teacher = str(root / "teacher")
    runs = [
        (sample, ["--teacher", teacher, "--task", str(root / "s.csv"), "--out", str(s)]),
        *(
            (measure, ["--teacher", teacher, "--sample", str(s), "--what", w, "--out", str(table)])
            for w, table in (("rep", rep), ("pred", pred))
        ),
        (search, ["--rep", str(rep), "--pred", str(pred), "--out", str(masks)]),
    ]
    for stage, args in runs:
        assert stage.main(_stage_args(root, *args)) == 0
    return {
        "--teacher": teacher,
        "--sample": str(s),
        "--rep": str(rep),
        "--pred": str(pred),
        "--masks": str(masks),
    }


def _prune_cmd(root, args, out: Path) -> list[str]:
    flat = [x for kv in args.items() for x in kv]
    return _stage(
        root,
        "prune_tune",
        *flat,
        "--out",
        str(out / "model"),
        "--iterations",
        str(out / "iterations.parquet"),
    )


def _weights_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_sigkill_mid_prune_leaves_nothing_and_rerun_matches(project):
    clean = project / "clean"
    args = _prepare(project, clean)
    subprocess.run(_prune_cmd(project, args, clean), check=True, capture_output=True, cwd=project)

    killed = project / "killed"
    killed.mkdir()
    proc = subprocess.Popen(
        _prune_cmd(project, args, killed),
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "KPRUNE_LOG_LEVEL": "DEBUG"},
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the loop is tuning sublayers, then kill
        line = proc.stderr.readline()
        if "sublayer {'sublayer': 1" in line or not line:
            break
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-loop, not finished
    assert not (killed / "model").exists()
    assert not (killed / "iterations.parquet").exists()
    assert [p.name for p in killed.iterdir()] == [] or all(
        p.name.startswith(".") for p in killed.iterdir()
    )

    subprocess.run(_prune_cmd(project, args, killed), check=True, capture_output=True, cwd=project)
    assert sorted(p.name for p in killed.iterdir()) == ["iterations.parquet", "model"]  # no orphan
    assert _weights_digest(killed / "model") == _weights_digest(clean / "model")
    a = json.loads((killed / "model" / "kprune.json").read_text())
    b = json.loads((clean / "model" / "kprune.json").read_text())
    assert a["kept"] == b["kept"]
