"""The repository's import graph, read from the source (no module is executed).

Every ``import`` counts, inside functions too, and importing ``a.b.c`` also runs the
``__init__`` of ``a`` and ``a.b``. A name taken from ``kprune`` itself that the package
exports lazily (``from kprune import prune``) counts as the module that defines it.

Used by the layout tests and by the check that dvc.yaml's code deps are each stage's
closure; ``python -m tests.import_graph`` rewrites those deps in dvc.yaml (and with
``--commit-lock`` records them in dvc.lock after a change that computes nothing new).
"""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kprune", "stages", "flows", "bench")
CODE_PREFIXES = ("kprune/", "stages/")  # what a stage's code deps in dvc.yaml may name


@cache
def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the repository's packages."""
    mods = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


@cache
def _lazy_exports() -> dict[str, str]:
    """kprune/__init__.py's ``_LAZY``: exported name -> module that defines it."""
    tree = ast.parse((ROOT / "kprune" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_LAZY":
            return ast.literal_eval(node.value)
    return {}


def imported_names(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute names an import statement of ``module`` refers to."""
    mods = modules()
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = module.split(".")
        if mods[module].name != "__init__.py":
            pkg = pkg[:-1]
        pkg = pkg[: len(pkg) - node.level + 1]
        base = ".".join([*pkg, base] if base else pkg)
    out = []
    for a in node.names:
        full = f"{base}.{a.name}"
        if full in mods:
            out.append(full)
        elif base == "kprune" and a.name in _lazy_exports():
            out.append(_lazy_exports()[a.name])
        else:
            out.append(base)
    return out


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> the project modules ``a``, ``a.b``, ``a.b.c`` (those that exist)."""
    parts = name.split(".")
    return [m for i in range(1, len(parts) + 1) if (m := ".".join(parts[:i])) in modules()]


@cache
def graph() -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    """(project module -> project modules it imports, module -> top-level names imported)."""
    mods = modules()
    inner: dict[str, set[str]] = {m: set() for m in mods}
    tops: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in imported_names(m, node):
                tops[m].add(name.split(".")[0])
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                if name and name != m:
                    inner[m].add(name)
    return (
        {m: frozenset(v) for m, v in inner.items()},
        {m: frozenset(v) for m, v in tops.items()},
    )


def closure(module: str) -> set[str]:
    """Every project module that running ``python -m module`` may import (a module's import
    also runs its parent packages' ``__init__``)."""
    inner, _ = graph()
    seen: set[str] = set()
    todo = _with_parents(module)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(x for dep in inner[m] for x in _with_parents(dep))
    return seen


def closure_files(module: str) -> list[str]:
    """The closure of ``module`` as repository paths, sorted (dvc.yaml's code deps)."""
    return sorted(str(modules()[m].relative_to(ROOT)) for m in closure(module))


def stage_module(stage: dict) -> str:
    """The module a dvc.yaml stage runs (``python -m stages.X``)."""
    cmd = stage.get("cmd") or stage["do"]["cmd"]
    return re.search(r"-m (stages\.\w+)", cmd).group(1)


def stage_code_deps(stage: dict) -> list[str]:
    """The code deps dvc.yaml lists for a stage."""
    deps = (stage.get("do") or stage).get("deps", [])
    return [d for d in deps if d.startswith(CODE_PREFIXES)]


def write_dvc_code_deps(path: Path = ROOT / "dvc.yaml") -> bool:
    """Rewrite each stage's code deps in dvc.yaml as its import closure, in place (comments
    and every other line kept). True when the file changed."""
    before = path.read_text()
    stages = yaml.safe_load(before)["stages"]
    lines = before.splitlines(keepends=True)
    out: list[str] = []
    current = None
    written: set[str] = set()
    for line in lines:
        name = re.match(r"^  ([\w-]+):\s*(#.*)?$", line)  # a stage, maybe with a comment
        if name:
            current = name.group(1)
        item = re.match(r"^(\s+)- (\S+)\s*$", line)
        if current and item and item.group(2).startswith(CODE_PREFIXES):
            if current not in written:
                indent = item.group(1)
                files = closure_files(stage_module(stages[current]))
                out.extend(f"{indent}- {f}\n" for f in files)
                written.add(current)
            continue
        out.append(line)
    text = "".join(out)
    changed = text != before
    if changed:
        path.write_text(text)
    return changed


def commit_lock_code_deps(path: Path = ROOT / "dvc.lock") -> list[str]:
    """Record in dvc.lock the code deps dvc.yaml names for each locked stage, with today's
    hashes, keeping every other entry (``dvc commit`` for the code alone, without the data
    it needs): only for a change that leaves what the stages compute as it was. Returns the
    stages whose entry changed."""
    import hashlib

    from dvc.utils.serialize import modify_yaml

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    changed = []
    with modify_yaml(path) as lock:
        for name, entry in lock["stages"].items():
            stage = spec["stages"][name.split("@")[0]]
            code = stage_code_deps(stage)
            kept = [d for d in entry["deps"] if not d["path"].startswith(CODE_PREFIXES)]
            fresh = [
                {
                    "path": f,
                    "hash": "md5",
                    "md5": hashlib.md5((ROOT / f).read_bytes()).hexdigest(),
                    "size": (ROOT / f).stat().st_size,
                }
                for f in code
            ]
            deps = sorted(kept + fresh, key=lambda d: d["path"])
            if [dict(d) for d in entry["deps"]] != deps:
                entry["deps"] = deps
                changed.append(name)
    return changed


if __name__ == "__main__":
    changed = write_dvc_code_deps()
    print("dvc.yaml: code deps rewritten" if changed else "dvc.yaml: code deps up to date")
    if "--commit-lock" in sys.argv:
        print("dvc.lock: code deps recorded for", commit_lock_code_deps() or "no stage")
    sys.exit(0)
