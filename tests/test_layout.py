"""The code's layering: no import cycles (imports inside functions count), the library never
imports the tools built on it, and stages/ holds only the stages dvc.yaml runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kprune", "stages", "flows", "bench")
TOOLS = ("stages", "flows", "bench", "mlflow", "prefect", "dvc", "prefect_dask", "dask")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _imported(module: str, node: ast.Import | ast.ImportFrom, mods: dict) -> list[str]:
    """Absolute names an import statement of ``module`` refers to."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = module.split(".")
        if mods[module].name != "__init__.py":
            pkg = pkg[:-1]
        pkg = pkg[: len(pkg) - node.level + 1]
        base = ".".join([*pkg, base] if base else pkg)
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(project module -> project modules it imports, module -> every top-level name)."""
    mods = _modules()
    inner: dict[str, set[str]] = {m: set() for m in mods}
    tops: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _imported(m, node, mods):
                tops[m].add(name.split(".")[0])
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                if name and name != m:
                    inner[m].add(name)
    return inner, tops


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    graph, _ = _graph()
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_library_imports_no_tool():
    """kprune is the library: the stages, flows, benchmark and tracking tools call it, never
    the other way (the ``kprune bench`` subcommand is the one entry point that hands over to
    the benchmark)."""
    _, tops = _graph()
    offenders = {
        m: sorted(tops[m] & set(TOOLS))
        for m in tops
        if m.startswith("kprune") and m != "kprune.cli" and tops[m] & set(TOOLS)
    }
    assert offenders == {}
    assert tops["kprune.cli"] & set(TOOLS) <= {"bench"}


def test_stages_folder_holds_only_dvc_stages():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    run = {
        cmd.split("-m stages.")[1].split()[0]
        for s in stages.values()
        for cmd in [s.get("cmd") or s["do"]["cmd"]]
    }
    files = {f.stem for f in (ROOT / "stages").glob("*.py")} - {"__init__", "common"}
    assert files == run


def _dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize(
    ("stage", "knobs"), [("measure_rep", "REP_KNOBS"), ("measure_pred", "PRED_KNOBS")]
)
def test_score_tables_depend_on_the_knobs_the_flows_key_them_on(stage, knobs):
    """dvc.yaml's params of a measure stage are the knobs kprune.config says its table
    depends on (the Prefect tasks are keyed on the same ones, after the method's changes are
    applied), and the method's name, through which DVC cannot see."""
    from kprune import config

    want = {f"{config.KNOBS[k]}.{k}" for k in getattr(config, knobs)} | {"method.name"}
    assert set(_dvc_stages()[stage]["params"]) == want


def test_dvc_outputs_use_the_artifact_names():
    from kprune import artifacts

    names = {v for k, v in vars(artifacts).items() if k.isupper()}
    outs = [
        Path(next(iter(o)) if isinstance(o, dict) else o).name
        for s in _dvc_stages().values()
        for key in ("outs", "metrics")
        for o in s.get(key, [])
    ]
    files = {n for n in outs if "$" not in n} - {"raw", "tasks"}  # not per-task folders
    # the model and the export are per-task folders themselves (the stage writes ONNX inside)
    assert files == names - {artifacts.MODEL, artifacts.ONNX}
