"""Cache keys from content: input files and folders by their bytes, parameters by value,
and the kprune library's source. A path string whose file changed gets a new key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import kprune

_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _FILE_DIGESTS[memo] = h.hexdigest()
    return _FILE_DIGESTS[memo]


def path_digest(path: Path) -> str:
    """Digest of a file, or of a folder's files (relative names and contents)."""
    if path.is_file():
        return file_digest(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(str(f.relative_to(path)).encode())
        h.update(file_digest(f).encode())
    return h.hexdigest()


def code_digest() -> str:
    """The library version and a digest of its source files."""
    root = Path(kprune.__file__).parent
    h = hashlib.sha256(kprune.__version__.encode())
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(file_digest(f).encode())
    return h.hexdigest()


def _value(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {"__dc__": type(v).__name__, **dataclasses.asdict(v)}
    if isinstance(v, str | os.PathLike) and str(v) and Path(v).exists():
        return {"__content__": path_digest(Path(v))}
    if isinstance(v, list | tuple):
        return [_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _value(x) for k, x in sorted(v.items())}
    return v


def content_key(name: str, parameters: dict[str, Any], ignore: tuple[str, ...] = ()) -> str:
    """Key of a task call: its name, its inputs' contents, its parameters, the library."""
    payload = {k: _value(v) for k, v in sorted(parameters.items()) if k not in ignore}
    h = hashlib.sha256(name.encode())
    h.update(json.dumps(payload, sort_keys=True, default=str).encode())
    h.update(code_digest().encode())
    return h.hexdigest()


def output_dir(root: Path, name: str, key: str) -> Path:
    return Path(root) / name / key[:20]


DONE = ".done"


def seal(folder: Path) -> None:
    """Mark a finished output folder with a digest of everything in it."""
    (folder / DONE).write_text(path_digest(folder))


def intact(folder: Path) -> bool:
    """True if the folder is finished and unchanged since it was sealed."""
    done = folder / DONE
    return done.is_file() and done.read_text() == path_digest(folder)


def prefect_key_fn(ignore: tuple[str, ...] = ("device",)):
    """A Prefect ``cache_key_fn``: the content key, or a fresh one if the outputs are gone."""

    def key_fn(context, parameters: dict[str, Any]) -> str:
        from flows import settings

        name = context.task.name
        key = content_key(name, parameters, ignore)
        if not intact(output_dir(settings.FLOW_DATA, name, key)):
            # never serve a cached result whose files are gone or corrupt: drop the record,
            # so the task runs and stores a fresh one under the same key
            (settings.RESULTS / key).unlink(missing_ok=True)
        return key

    return key_fn
