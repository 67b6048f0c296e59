"""A full disk at each place kprune writes: the stages' sample, score table and masks, the
pruned folder, the ONNX graphs. Each output is first written where there is room, copied onto
a small tmpfs, the tmpfs is filled to the last byte, and the same command is run again: one
line naming the path and the space, exit code 2, the previous output byte for byte, no
temporary file left. (Mounting a tmpfs needs root; elsewhere these tests are skipped.)"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import make_tiny_teacher
from tests.test_hostile_inputs import run_entry

MESSAGE = (
    r"kprune: error: no space left on the device of {path}: it needs about [0-9.]+ "
    r"(bytes|KB|MB), [0-9.]+ (bytes|KB|MB) free there; free space or write elsewhere "
    r"\(nothing was replaced\)"
)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Every output once, written where there is room."""
    root = tmp_path_factory.mktemp("diskfull")
    make_tiny_teacher(root, n=120, epochs=1, lr=1e-3)
    (root / "params.yaml").write_text("sample:\n  tokens: 600\n  max_length: 16\n")
    good = root / "good"
    good.mkdir()
    for argv in _commands(root, good):
        code, err = run_entry(argv)
        assert code == 0, err[-2000:]
    return root


def _commands(root: Path, out: Path) -> list[list[str]]:
    """The commands in pipeline order, writing under ``out`` (reading the good outputs)."""
    good = root / "good"
    stage = ["--params", str(root / "params.yaml"), "--device", "cpu"]
    sample = ["--teacher", str(root / "teacher"), "--sample", str(good / "sample.safetensors")]
    tables = ["--rep", str(good / "rep.parquet"), "--pred", str(good / "pred.parquet")]
    return [
        [
            "stage:sample",
            *stage,
            "--teacher",
            str(root / "teacher"),
            "--task",
            str(root / "s.csv"),
            "--out",
            str(out / "sample.safetensors"),
        ],
        ["stage:measure", *stage, *sample, "--what", "rep", "--out", str(out / "rep.parquet")],
        ["stage:measure", *stage, *sample, "--what", "pred", "--out", str(out / "pred.parquet")],
        ["stage:search", *stage, *tables, "--reduction", "0.5", "--out", str(out / "masks.json")],
        [
            "prune",
            str(root / "teacher"),
            "--task",
            str(root / "s.csv"),
            "--reduction",
            "0.5",
            "--tokens",
            "300",
            "--max-length",
            "16",
            "--out",
            str(out / "pruned"),
        ],
        ["export", str(good / "pruned"), "--out", str(out / "model.onnx")],
        ["export", str(good / "pruned"), "--int8", "--out", str(out / "model.onnx")],
    ]


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip()[:80]})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> None:
    """Write zeros until the device refuses one more byte."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


def _same(a: Path, b: Path) -> bool:
    if a.is_dir():
        cmp = filecmp.dircmp(a, b)
        return not (cmp.left_only or cmp.right_only or cmp.diff_files) and all(
            filecmp.cmp(a / f, b / f, shallow=False) for f in cmp.common_files
        )
    return filecmp.cmp(a, b, shallow=False)


@pytest.mark.parametrize(
    "index", range(7), ids=["sample", "rep", "pred", "masks", "pruned", "onnx", "onnx-int8"]
)
def test_a_full_disk_is_one_line_and_keeps_the_previous_output(made, small_disk, index):
    argv = _commands(made, small_disk)[index]
    out = Path(argv[-1])
    previous = made / "good" / out.name
    if out.name == "model.onnx" and "--int8" not in argv:
        previous = None  # the first export onto this disk: nothing there before
    if previous is not None:
        (shutil.copytree if previous.is_dir() else shutil.copy)(previous, out)
    _fill(small_disk)
    code, err = run_entry(argv)
    lines = [x for x in err.splitlines() if x.startswith("kprune: error:")]
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert len(lines) == 1 and re.fullmatch(MESSAGE.format(path=re.escape(str(out))), lines[0])
    if previous is not None:
        assert _same(previous, out)
    else:
        assert not out.exists()
    left = {p.name for p in small_disk.iterdir()} - {out.name, "filler"}
    assert not left, left  # no temporary file


def _fill_but(disk: Path, keep: int) -> None:
    _fill(disk)
    filler = disk / "filler"
    os.truncate(filler, max(0, filler.stat().st_size - keep))


@pytest.mark.parametrize("writer", ["python", "safetensors"])
def test_a_disk_that_fills_during_the_write(small_disk, writer):
    """No size known up front: the write starts, the device fills, one line all the same."""
    import torch
    from safetensors.torch import save_file

    from kprune.atomic import atomic_path
    from kprune.errors import KPruneError

    _fill_but(small_disk, 64 * 1024)
    out = small_disk / "big.bin"
    with pytest.raises(KPruneError) as err, atomic_path(out) as tmp:
        if writer == "python":
            tmp.write_bytes(b"x" * 1_000_000)
        else:
            save_file({"w": torch.zeros(250_000)}, str(tmp))
    assert re.fullmatch(
        rf"no space left on the device of {re.escape(str(out))}: it needs (more than the "
        r"[0-9]+ KB written when it filled|more space), [0-9.]+ (bytes|KB) free there; free "
        r"space or write elsewhere \(nothing was replaced\)",
        str(err.value),
    ), str(err.value)
    assert {p.name for p in small_disk.iterdir()} == {"filler"}
