"""The code's layering: no import cycles (imports inside functions count), the library never
imports the tools built on it, and stages/ holds only the stages dvc.yaml runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.import_graph import ROOT, closure_files, graph, stage_code_deps, stage_module

TOOLS = ("stages", "flows", "bench", "mlflow", "prefect", "dvc", "prefect_dask", "dask")


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
    inner, _ = graph()
    assert _cycles(inner) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_library_imports_no_tool():
    """kprune is the library: the stages, flows, benchmark and tracking tools call it, never
    the other way (the CLI included: the benchmark is ``python -m bench``)."""
    _, tops = graph()
    offenders = {
        m: sorted(tops[m] & set(TOOLS))
        for m in tops
        if m.startswith("kprune") and tops[m] & set(TOOLS)
    }
    assert offenders == {}


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
    from kprune.data.tasks import DEFAULT_TASKS

    names = {v for k, v in vars(artifacts).items() if k.isupper()}
    outs = [
        Path(next(iter(o)) if isinstance(o, dict) else o).name
        for s in _dvc_stages().values()
        for key in ("outs", "metrics")
        for o in s.get(key, [])
    ]
    # not per-task files: the fetched data and the prepared tasks' folders
    files = {n for n in outs if "$" not in n} - {"raw", *DEFAULT_TASKS}
    # the teacher, the model and the export are per-task folders themselves (the stage
    # writes ONNX inside); so is the target stage's folder; the deferred timing is the batch
    # flow's alone
    per_task = {artifacts.TEACHER, artifacts.MODEL, artifacts.ONNX, artifacts.TARGET}
    assert files == names - per_task - {artifacts.TIMING}


@pytest.mark.parametrize("name", sorted(_dvc_stages()))
def test_dvc_code_deps_are_the_stage_import_closure(name):
    """A stage's code deps are every repository file its module may import (so an edit to any
    of them reruns it) and nothing else (so an edit elsewhere does not)."""
    stage = _dvc_stages()[name]
    want = closure_files(stage_module(stage))
    got = stage_code_deps(stage)
    assert sorted(got) == want, (
        f"{name}: dvc.yaml lists {sorted(set(got) - set(want))} it does not import and misses "
        f"{sorted(set(want) - set(got))}; `python -m tests.import_graph` rewrites the deps"
    )


def test_the_closure_reaches_what_a_stage_really_runs():
    """prune_tune runs through the method dispatch, the config and the model adapters; the
    data stages and the teachers' fine-tuning do not reach the adapters or the pruner."""
    prune_tune = set(closure_files("stages.prune_tune"))
    assert {
        "kprune/pruning/assemble.py",
        "kprune/config.py",
        "kprune/models/adapters/families.py",
    } <= prune_tune
    assert {"kprune/__init__.py", "stages/__init__.py", "stages/common.py"} <= prune_tune
    for lean in ("stages.fetch", "stages.prepare", "stages.finetune"):
        files = closure_files(lean)
        # the method registry is the config's (its choices); nothing else of the pruner
        pruner = {"kprune/pruning/__init__.py", "kprune/pruning/methods.py"}
        reached = [
            f
            for f in files
            if f.startswith(("kprune/models/adapters/", "kprune/pruning/", "kprune/sparse/"))
            and f not in pruner
        ]
        assert reached == [], lean
        assert "kprune/cli.py" not in files, lean
    assert "kprune/config.py" not in closure_files("stages.fetch")


def test_a_lazily_exported_name_counts_as_its_module(tmp_path):
    """``from kprune import prune`` runs kprune.pruning.assemble (the package's lazy export)."""
    import ast

    from tests.import_graph import imported_names

    node = ast.parse("from kprune import prune, config").body[0]
    assert imported_names("stages.search", node) == ["kprune.pruning.assemble", "kprune.config"]


def test_the_data_files_name_the_registered_tasks_and_methods():
    """params.yaml and dvc.yaml cannot import the registries: they hold the same lists (the
    config's defaults are the registries themselves)."""
    from kprune.config import BenchConfig, PrepareConfig
    from kprune.data.fetch import EXTRA
    from kprune.data.tasks import DEFAULT_TASKS, REGISTRY
    from kprune.pruning.methods import METHODS

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    prepared = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["prepare"]["outs"]
    assert list(DEFAULT_TASKS) == params["prepare"]["tasks"] == params["bench"]["tasks"]
    assert sorted(f"data/tasks/{t}" for t in DEFAULT_TASKS) == sorted(prepared)
    extra = {t for t, spec in REGISTRY.items() if spec.source}
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages["prepare_extra"]["foreach"]) == extra
    assert set(stages["fetch_extra"]["foreach"]) == set(EXTRA)
    assert PrepareConfig().tasks == BenchConfig().tasks == DEFAULT_TASKS
    assert sorted(params["bench"]["methods"]) == sorted(METHODS) == sorted(BenchConfig().methods)
