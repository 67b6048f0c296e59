"""The committed dvc.lock matches the tree: every stage's code dependencies and params are the
ones dvc.yaml and params.yaml name today, with today's content. A stale lock makes `dvc repro`
(and so `make run`) rerun stages and rewrite the lock, leaving `git status` dirty."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

CODE = ("kprune/", "stages/")


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def _expanded_stages() -> dict[str, dict]:
    """dvc.yaml's stages with ``foreach`` expanded to ``name@key`` (over a list, or over
    params.yaml's mapping it names), ``${key}`` and ``${item}`` put into their params (code
    paths carry no templates)."""
    spec, params = _load("dvc.yaml"), _load("params.yaml")
    out = {}
    for name, stage in spec["stages"].items():
        if "foreach" not in stage:
            out[name] = stage
            continue
        items = stage["foreach"]
        keys = params[items[2:-1]] if isinstance(items, str) else items  # "${teachers}"
        for key in keys:
            do = dict(stage["do"])
            do["params"] = [
                p.replace("${key}", key).replace("${item}", key) for p in do.get("params", [])
            ]
            out[f"{name}@{key}"] = do
    return out


def _norm(v):
    """PyYAML reads DVC's ``5e-05`` as a string (YAML 1.1): compare numbers as numbers."""
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_norm(x) for x in v]
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _param(params: dict, dotted: str):
    value = params
    for part in dotted.split("."):
        value = value[part]
    return value


STAGES = _expanded_stages()
LOCKED = sorted(_load("dvc.lock")["stages"])
# what `make run` reproduces with DVC (`dvc repro prepare`: data, the same bytes on any CPU):
# its entries must be in the lock. The teacher and the per-run chain run in the flow (the
# teachers' entries record those the committed benchmarks used: `make repro` rewrites them on
# another CPU, `make run` never reads or writes them)
MAKE_RUN = ("fetch", "prepare")


def test_lock_holds_what_make_run_reproduces():
    assert set(MAKE_RUN) <= set(LOCKED)
    assert set(LOCKED) <= set(STAGES)


@pytest.mark.parametrize("name", LOCKED)
def test_lock_code_dependencies_match_the_tree(name):
    locked = _load("dvc.lock")["stages"][name]
    want = {d for d in STAGES[name].get("deps", []) if d.startswith(CODE)}
    got = {d["path"]: d["md5"] for d in locked.get("deps", []) if d["path"].startswith(CODE)}
    assert set(got) == want, f"{name}: the lock's code deps differ from dvc.yaml's"
    stale = [p for p, md5 in got.items() if hashlib.md5((ROOT / p).read_bytes()).hexdigest() != md5]
    assert stale == [], f"{name}: changed since the lock was written: {stale}"


@pytest.mark.parametrize("name", LOCKED)
def test_lock_params_match_params_yaml(name):
    params = _load("params.yaml")
    locked = _load("dvc.lock")["stages"][name].get("params", {}).get("params.yaml", {})
    want = {key: _param(params, key) for key in STAGES[name].get("params", [])}
    assert _norm(locked) == _norm(want), f"{name}: the lock's params differ from params.yaml"


def test_the_finder_sees_a_changed_file(tmp_path):
    """The check above compares real content: one changed byte changes the digest."""
    f = Path(tmp_path / "x.py")
    f.write_text("a = 1\n")
    before = hashlib.md5(f.read_bytes()).hexdigest()
    f.write_text("a = 2\n")
    assert hashlib.md5(f.read_bytes()).hexdigest() != before
