"""Atomic outputs: everything is written to a temporary sibling, then renamed into place.

A killed process therefore leaves either the old output or the new one, never half of one;
the next write of the same path removes what a dead writer left behind (and puts back a
previous folder a writer killed mid-replace had moved aside).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kprune.errors import KPruneError

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"


def _tmp_sibling(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.{tag}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_orphans(final: Path) -> list[Path]:
    """Remove the temporary siblings of ``final`` that writers on this host left when they
    were killed; if ``final`` is missing and a dead writer had moved the previous output aside,
    put it back. Returns what was removed."""
    pattern = re.compile(rf"\.{re.escape(final.name)}\.(tmp|old)-{_HOST}-(\d+)-[0-9a-f]{{8}}")
    removed = []
    try:
        siblings = list(final.parent.iterdir())
    except OSError:
        return removed
    for sibling in siblings:
        match = pattern.fullmatch(sibling.name)
        if not match or _pid_alive(int(match.group(2))):
            continue
        if match.group(1) == "old" and not final.exists():
            os.replace(sibling, final)  # the previous output, moved aside by a killed writer
            continue
        _remove(sibling)
        removed.append(sibling)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def is_no_space(exc: BaseException) -> bool:
    """A full disk or quota, however the writer reports it (an OSError, or e.g. safetensors'
    Rust error carrying ``os error 28``)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "os error 28" in text


def _bytes_under(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.stat().st_size if path.exists() else 0
    except OSError:
        return 0


def _mb(n: int) -> str:
    if n < 1000:
        return f"{n} bytes"
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} KB"


def free_bytes(path: Path) -> int:
    """Free bytes on the device of ``path`` (or of its nearest existing parent)."""
    for p in (path, *path.parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return 0
    return 0


def no_space_error(final: Path, written: int, needs: int | None = None) -> KPruneError:
    """The one line for a write to ``final`` that does not fit: it needs ``needs`` bytes (when
    known), or more than the ``written`` ones when the disk filled."""
    if needs and needs > written:
        need = f"about {_mb(needs)}"
    elif written:
        need = f"more than the {_mb(written)} written when it filled"
    else:
        need = "more space"
    return KPruneError(
        f"no space left on the device of {final}: it needs {need}, {_mb(free_bytes(final))} "
        "free there; free space or write elsewhere (nothing was replaced)"
    )


def check_space(final: Path, needs: int | None) -> None:
    """Refuse up front a write of ``needs`` bytes that cannot fit (None: size unknown)."""
    if needs and free_bytes(final) < needs:
        raise no_space_error(final, 0, needs)


@contextmanager
def space_checked(final: Path, scratch: Path, needs: int | None = None) -> Iterator[None]:
    """Turn a full disk while writing ``scratch`` (on its way to ``final``) into one line;
    the caller removes ``scratch``. ``needs``: the bytes the write takes, when known (checked
    before it starts)."""
    check_space(final, needs)
    try:
        yield
    except BaseException as exc:
        if is_no_space(exc):
            raise no_space_error(final, _bytes_under(scratch), needs) from None
        raise


def _swap_in(tmp: Path, final: Path) -> None:
    """Put folder ``tmp`` in the place of ``final`` (moving a previous one aside, then removing
    it). Another process that swaps in the same ``final`` at the same moment either goes first
    (its folder is replaced, whole) or wins the race: then this one's folder is dropped and
    the loser says so in one line; never a mix of the two."""
    old = _tmp_sibling(final, "old")
    try:
        os.replace(final, old)
    except FileNotFoundError:
        old = None
    try:
        os.replace(tmp, final)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        raise KPruneError(
            f"another process wrote {final} at the same moment and its output is in place, "
            "whole; rerun if you want this one's instead"
        ) from None
    finally:
        if old is not None:
            _remove(old)


@contextmanager
def atomic_path(
    path: str | os.PathLike, *, is_dir: bool = False, needs: int | None = None
) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path`` in one rename.

    On any exception the temporary file or folder is removed and ``path`` is untouched; a full
    disk is one line naming ``path`` and the space it ``needs`` (bytes, when the caller knows).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_orphans(final)
    tmp = _tmp_sibling(final, "tmp")
    if is_dir:
        tmp.mkdir()
    try:
        with space_checked(final, tmp, needs):
            yield tmp
        if is_dir:
            _swap_in(tmp, final)
        else:
            os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def scratch_dir(final: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``final`` (named like atomic_path's, so a dead writer's is
    swept by the next write of ``final``), removed on the way out: for writers that build
    several files there and rename each into place themselves."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_orphans(final)
    tmp = _tmp_sibling(final, "tmp")
    tmp.mkdir()
    try:
        yield tmp
    finally:
        _remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    data = text.encode("utf-8")
    with atomic_path(path, needs=len(data)) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
