import pytest

from kprune.atomic import atomic_path, sweep_orphans, write_json
from tests.conftest import ROOT


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_dir_write_keeps_old_output(tmp_path):
    target = tmp_path / "model"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target, is_dir=True) as tmp:
        (tmp / "a.txt").write_text("new")
        raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_dir_replace_and_json(tmp_path):
    target = tmp_path / "d"
    for value in ("1", "2"):
        with atomic_path(target, is_dir=True) as tmp:
            write_json(tmp / "v.json", {"v": value})
    assert (target / "v.json").read_text().strip().endswith("}")
    assert '"2"' in (target / "v.json").read_text()


def _killed_writer(tmp_path, body: str) -> None:
    """A process that starts an atomic write, runs ``body`` inside it, and is SIGKILLed."""
    import signal
    import subprocess
    import sys

    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from kprune.atomic import atomic_path\n"
        f"root = Path({str(tmp_path)!r})\n" + body
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def test_the_next_write_removes_what_a_killed_writer_left(tmp_path):
    _killed_writer(
        tmp_path,
        "with atomic_path(root / 'out', is_dir=True) as tmp:\n"
        "    (tmp / 'half').write_text('x')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n",
    )
    assert [p.name.split("-")[0] for p in tmp_path.iterdir()] == [".out.tmp"]  # the orphan
    with atomic_path(tmp_path / "out", is_dir=True) as tmp:
        (tmp / "whole").write_text("y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["whole"]


def test_a_writer_killed_mid_replace_leaves_the_previous_folder_back_in_place(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "previous").write_text("p")
    _killed_writer(  # killed between moving the old folder aside and renaming the new one in
        tmp_path,
        "import kprune.atomic as a\n"
        "real = os.replace\n"
        "def replace(src, dst):\n"
        "    real(src, dst)\n"
        "    if '.old-' in str(dst):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "a.os.replace = replace\n"
        "with atomic_path(root / 'out', is_dir=True) as tmp:\n"
        "    (tmp / 'new').write_text('n')\n",
    )
    assert not (tmp_path / "out").exists()
    swept = sweep_orphans(tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["previous"]
    assert [p.name.split("-")[0] for p in swept] == [".out.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_live_writer_s_temporary_folder_is_left_alone(tmp_path):
    with atomic_path(tmp_path / "out", is_dir=True) as mine:
        assert sweep_orphans(tmp_path / "out") == [] and mine.exists()


def test_two_writers_of_one_folder_leave_one_whole_and_the_loser_says_why(tmp_path, monkeypatch):
    """Writer B swaps its folder in between writer A's two renames (A has just moved the
    previous folder aside): B's folder stays whole, A says why in one line, nothing else is
    left beside it."""
    import os

    import kprune.atomic as atomic
    from kprune.errors import KPruneError

    target = tmp_path / "out"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "previous").write_text("p")
    real, b_wrote = os.replace, []

    def replace(src, dst):
        real(src, dst)
        if ".old-" in str(dst) and not b_wrote:
            b_wrote.append(True)
            with atomic_path(target, is_dir=True) as b:
                (b / "from-B").write_text("b")

    monkeypatch.setattr(atomic.os, "replace", replace)
    with (
        pytest.raises(KPruneError, match="another process wrote .*out at the same moment"),
        atomic_path(target, is_dir=True) as a,
    ):
        (a / "from-A").write_text("a")
    assert b_wrote and [p.name for p in target.iterdir()] == ["from-B"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
