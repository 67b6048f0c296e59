import pytest

from kprune.atomic import atomic_path, write_json


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
