"""SIGKILL at the worst moment of each DVC stage: its output completely written to the
temporary sibling, not yet renamed into place. Nothing appears; the rerun (the same command)
writes the output a clean run writes, byte for byte (timings and input paths aside), and sweeps the dead
writer's temporary file. (Killed mid-computation: tests/test_resume.py; the flows' tasks write
through the same atomic rename: tests/test_flows.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.helpers import make_tiny_teacher
from tests.test_hostile_inputs import run_entry
from tests.test_resume import PARAMS

# a process that runs one stage and SIGKILLs itself just before renaming OUTPUT into place
KILLER = """
import os, runpy, signal, sys
from pathlib import Path
real, target = os.replace, sys.argv[1]
def replace(src, dst, *a, **k):
    if Path(dst).name == target and ".tmp-" in str(src):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **k)
os.replace = replace
stage = sys.argv[2]
sys.argv = [stage, *sys.argv[3:]]
runpy.run_module(stage, run_name="__main__")
"""


def _commands(root: Path, out: Path) -> list[tuple[str, list[str]]]:
    """(the output it writes, the stage's command line) in pipeline order, reading the clean
    run's inputs."""
    clean = root / "clean"
    common = ["--params", str(root / "params.yaml"), "--device", "cpu"]
    teacher, task = str(root / "teacher"), str(root / "s.csv")
    sample = ["--teacher", teacher, "--sample", str(clean / "s.safetensors")]
    tables = ["--rep", str(clean / "rep.parquet"), "--pred", str(clean / "pred.parquet")]
    return [
        ("s.safetensors", ["stages.sample", *common, "--teacher", teacher, "--task", task]),
        ("rep.parquet", ["stages.measure", *common, *sample, "--what", "rep"]),
        ("pred.parquet", ["stages.measure", *common, *sample, "--what", "pred"]),
        ("masks.json", ["stages.search", *common, *tables]),
        (
            "model",
            [
                "stages.prune_tune",
                *common,
                *sample,
                *tables,
                "--masks",
                str(clean / "masks.json"),
                "--iterations",
                str(out / "iterations.parquet"),
            ],
        ),
        (
            "metrics.json",
            [
                "stages.evaluate",
                *common,
                "--teacher",
                teacher,
                "--pruned",
                str(clean / "model"),
                "--task",
                task,
                "--plots",
                str(out / "plots"),
            ],
        ),
        ("onnx", ["stages.export", *common, "--pruned", str(clean / "model"), "--task", task]),
    ]


# where a stage's last rename happens, when it is not its output's own: the export stage
# fills its folder with files, each renamed into place
KILL_AT = {"onnx": "onnx/model.onnx"}


def _argv(command: list[str], out: Path, name: str) -> list[str]:
    return [*command, "--out", str(out / name)]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill-stages")
    make_tiny_teacher(root, n=240, epochs=2)
    params = {**PARAMS, "export": {"int8": False}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "clean").mkdir()
    for name, command in _commands(root, root / "clean"):
        code, err = run_entry(
            ["stage:" + command[0][7:], *_argv(command, root / "clean", name)[1:]]
        )
        assert code == 0, err[-2000:]
    return root


def _content(path: Path):
    """What a rerun must reproduce: bytes, or for JSON the values that are not timings."""
    if path.is_dir():
        return {
            p.relative_to(path).as_posix(): _content(p)
            for p in sorted(path.rglob("*"))
            if p.is_file()
        }
    if path.suffix == ".json":
        return _untimed(json.loads(path.read_text()))
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(path, "np") as f:
            meta = {k: _json_or_text(v) for k, v in (f.metadata() or {}).items()}
            return _untimed(meta), {k: f.get_tensor(k).tobytes() for k in f.keys()}  # noqa: SIM118
    return path.read_bytes()


def _json_or_text(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _untimed(obj):
    if isinstance(obj, dict):
        skip = ("seconds", "rss", "source")  # timings, and the path of the input it read
        return {k: _untimed(v) for k, v in obj.items() if not any(x in k for x in skip)}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


@pytest.mark.parametrize(
    "index", range(7), ids=["sample", "rep", "pred", "search", "prune_tune", "evaluate", "export"]
)
def test_a_stage_killed_before_its_rename_leaves_nothing_and_the_rerun_matches(
    project, tmp_path, index
):
    name, command = _commands(project, tmp_path)[index]
    kill_at = tmp_path / KILL_AT.get(name, name)
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, kill_at.name, *_argv(command, tmp_path, name)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not kill_at.exists()
    assert any(p.name.startswith(f".{kill_at.name}.tmp-") for p in kill_at.parent.iterdir())

    code, err = run_entry(["stage:" + command[0][7:], *_argv(command, tmp_path, name)[1:]])
    assert code == 0, err[-2000:]
    assert _content(tmp_path / name) == _content(project / "clean" / name)
    assert not [p.name for p in kill_at.parent.iterdir() if p.name.startswith(".")]
