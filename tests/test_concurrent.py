"""Two processes writing one output at once: one whole result, never a mix; a loser says why
in one line. (Two batch flows on one store: tests/test_flows.py.)"""

from __future__ import annotations

import subprocess
import sys

from kprune.models.checkpoint import verify
from tests.conftest import ROOT
from tests.helpers import make_tiny_teacher


def test_two_prunes_with_the_same_out_leave_one_whole_folder(tmp_path):
    make_tiny_teacher(tmp_path, n=120, epochs=1, lr=1e-3)
    out = tmp_path / "out"
    base = [sys.executable, "-m", "kprune.cli", "prune", str(tmp_path / "teacher")]
    args = ["--task", str(tmp_path / "s.csv"), "--tokens", "300", "--max-length", "16"]
    cmds = [[*base, *args, "--reduction", r, "--out", str(out)] for r in ("0.3", "0.6")]
    procs = [subprocess.Popen(c, cwd=ROOT, stderr=subprocess.PIPE, text=True) for c in cmds]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for code, err in results:
        assert "Traceback" not in err, err[-2000:]
        if code != 0:
            lines = [x for x in err.splitlines() if x.startswith("kprune: error:")]
            assert code == 2 and len(lines) == 1 and "at the same moment" in lines[0], err
    assert any(code == 0 for code, _ in results)
    verify(out)  # hashes, shapes and kept units of one run, whole
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
