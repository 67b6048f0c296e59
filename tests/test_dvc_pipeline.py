"""The DVC pipeline reruns exactly what a change touches, also across clones via a remote.

Runs the real pipeline (real wheels, real rt data) on a copy of the project with tiny knobs:
a tiny random base model, 256 training examples, a 2,000-token sample, no latency timing.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.helpers import make_tiny_model, tiny_latency_table

pytestmark = pytest.mark.integration
ALL = {
    "fetch",
    "prepare",
    "finetune@minilm-l6-rt",
    "sample",
    "measure_rep",
    "measure_pred",
    "latency",
    "search",
    "prune_tune",
    "evaluate",
}


def _env():
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["PYTHONPATH"] = ""
    return env


def _run(cmd, cwd):
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _dvc(args, cwd):
    return _run([sys.executable, "-m", "dvc", *args], cwd)


def _repro(cwd) -> set[str]:
    """Stages that `dvc repro evaluate` actually ran."""
    out = _dvc(["repro", "evaluate"], cwd)
    return set(re.findall(r"Running stage '([^']+)'", out))


def _repro_as_a_user(cwd) -> set[str]:
    """`dvc repro` typed in a fresh shell the way the README says: the project's environment
    activated, nothing else on PATH (dvc.yaml's `python` must be the project's)."""
    activate = ROOT / ".venv" / "bin" / "activate"
    if not activate.exists():
        pytest.skip("no .venv in the project (make setup creates it)")
    env = {"PATH": os.defpath, "HOME": os.environ.get("HOME", "/tmp"), "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(
        ["bash", "-c", f"source {activate} && dvc repro evaluate"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return set(re.findall(r"Running stage '([^']+)'", proc.stdout + proc.stderr))


def _stale(cwd, *args) -> set[str]:
    """Stages that `dvc status ARGS` finds changed (nothing is run)."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(json.loads(proc.stdout or "{}"))


def _stale_pipeline(cwd) -> set[str]:
    """The stages of the K-prune pipeline (up to evaluate) whose own inputs changed."""
    return _stale(cwd, "evaluate", "--with-deps")


def _get(repo: Path, section: str, key: str | None = None):
    value = yaml.safe_load((repo / "params.yaml").read_text())[section]
    return value if key is None else value[key]


def _set(repo: Path, section: str, key: str | None, value) -> None:
    """params.yaml's ``section.key`` (the whole section: ``key`` None) set to ``value``."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    if key is None:
        params[section] = value
    else:
        params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _git(args, cwd):
    return _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    repo.mkdir()
    for name in ("kprune", "stages", "dvc.yaml", "params.yaml", ".gitignore"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, repo / name)
    _git(["init", "-q", "-b", "main"], repo)
    _dvc(["init", "-q"], repo)
    _dvc(["config", "core.analytics", "false"], repo)
    make_tiny_model(repo / "tiny-base")  # the real pipeline and data, a tiny base model
    teachers = _get(repo, "teachers")
    teachers["minilm-l6-rt"]["base"] = "tiny-base"
    _set(repo, "teachers", None, teachers)
    _set(repo, "finetune", "max_train_examples", 256)
    _set(repo, "finetune", "epochs", 1.0)
    _set(repo, "sample", "tokens", 2000)
    _set(repo, "evaluate", "latency", False)
    _git(["add", "-A"], repo)
    _git(["commit", "-qm", "init"], repo)
    return repo


def test_first_run_runs_everything_then_nothing(repo):
    assert _repro_as_a_user(repo) == ALL
    assert _repro(repo) == set()
    assert (repo / "data" / "eval" / "minilm-l6" / "rt" / "metrics.json").exists()
    assert (repo / "data" / "eval" / "minilm-l6" / "rt" / "plots" / "kept_units.png").exists()


def test_an_adapter_edit_marks_exactly_the_stages_that_run_through_it(repo):
    """An edit to a model family's adapter: every stage that loads a model through it is
    changed; the data stages and the teacher's fine-tuning are not."""
    _repro(repo)
    source = repo / "kprune" / "models" / "adapters" / "families.py"
    text = source.read_text()
    source.write_text(text + "\n# an edit\n")
    try:
        stale = _stale_pipeline(repo)
    finally:
        source.write_text(text)
    assert stale == ALL - {"fetch", "prepare", "finetune@minilm-l6-rt"}
    assert _stale_pipeline(repo) == set()


def test_search_knobs_rerun_only_downstream(repo):
    _set(repo, "search", "lam", 1e-3)
    assert _stale_pipeline(repo) == {"search", "prune_tune"}  # the loop reads R, λ, μ too
    _set(repo, "search", "reduction", 0.5)
    assert _repro(repo) == {"search", "prune_tune", "evaluate"}


def test_a_latency_budget_runs_the_latency_stage_and_meets_its_target(repo):
    """search.budget: latency (here with a table given in params, as one measured elsewhere
    would be): the latency stage writes the table, the search and the loop charge it, and
    the pruned model's predicted latency meets the target."""
    table = tiny_latency_table()
    (repo / "table.json").write_text(json.dumps(table))
    _set(repo, "search", "budget", "latency")
    _set(repo, "search", "speedup", 1.6)
    _set(repo, "latency", "table", "table.json")
    try:
        assert _repro(repo) == {"latency", "search", "prune_tune", "evaluate"}
        written = json.loads((repo / "data/latency/minilm-l6/rt/table.json").read_text())
        assert written["attention_ms"] == table["attention_ms"]
        report = json.loads((repo / "data/pruned/minilm-l6/rt/report.json").read_text())
        budget = report["latency_budget"]
        assert budget["target_ms"] == pytest.approx(9.2 / 1.6)
        assert budget["predicted_ms"] <= budget["target_ms"] * (1 + 1e-9)
    finally:
        _set(repo, "latency", "table", "")
        _set(repo, "search", "speedup", 0.0)
        _set(repo, "search", "budget", "flops")
        _repro(repo)  # back to the FLOPs pipeline for the tests after this one


@pytest.mark.parametrize(
    ("key", "value", "stage"),
    [("gamma", 4.0, "measure_pred"), ("rep_form", "exact", "measure_rep")],
)
def test_a_measure_knob_touches_only_its_own_table(repo, key, value, stage):
    """K_pred's knob leaves the sample and K_rep's table alone, and the other way round
    (`dvc status`: what changed; that a changed stage reruns all after it is the test above)."""
    old = _get(repo, "measure", key)
    _set(repo, "measure", key, value)
    try:
        assert _stale_pipeline(repo) == {stage, "prune_tune"}
    finally:
        _set(repo, "measure", key, old)
    assert _stale_pipeline(repo) == set()


def test_search_strategy_reruns_only_search_and_after_and_changes_the_masks(repo):
    _repro(repo)
    masks = repo / "data" / "masks" / "minilm-l6" / "rt" / "masks.json"
    before = json.loads(masks.read_text())["kept"]
    _set(repo, "search", "strategy", "uniform")
    assert _repro(repo) == {"search", "prune_tune", "evaluate"}
    assert json.loads(masks.read_text())["kept"] != before
    report = json.loads((repo / "data" / "pruned" / "minilm-l6" / "rt" / "report.json").read_text())
    assert report["config"]["search"]["strategy"] == "uniform"


def test_score_scale_change_remeasures_everything_downstream(repo):
    """A change of the score definitions (kprune/pruning/knowledge.py) invalidates both score
    tables and all that follows; the sample and the teacher stay cached. (Only the scale's
    label changes here, so the pruned model is the same: `evaluate` reruns only when the
    report's millisecond timings happen to differ, which a fast machine need not show.)"""
    source = repo / "kprune" / "pruning" / "knowledge.py"
    text = source.read_text()
    assert re.search(r"^SCORE_SCALE = \d+$", text, re.M)
    source.write_text(re.sub(r"^SCORE_SCALE = (\d+)$", r"SCORE_SCALE = 9\1", text, flags=re.M))
    ran = _repro(repo)
    assert ran - {"evaluate"} == {"measure_rep", "measure_pred", "search", "prune_tune"}


def test_team_reuse_through_a_remote(repo, tmp_path):
    _repro(repo)  # up to date when run after the other tests
    remote = tmp_path / "remote"
    _dvc(["remote", "add", "-d", "shared", str(remote)], repo)
    _git(["add", "-A"], repo)
    _git(["add", "-f", "dvc.lock"], repo)  # a team that shares a remote commits its lock
    _git(["commit", "-qm", "pipeline state"], repo)
    _dvc(["push", "-q"], repo)
    clone = tmp_path / "clone"
    _git(["clone", "-q", str(repo), str(clone)], tmp_path)
    _dvc(["pull", "-q", "--with-deps", "evaluate"], clone)
    _set(clone, "search", "lam", 5e-4)
    assert _repro(clone) == {"search", "prune_tune", "evaluate"}


def test_a_baseline_chosen_in_params_runs_through_dvc(repo):
    """``method.name: kwon`` in params.yaml: the search stage scores the teacher Kwon et al.'s
    way, prune_tune rescales the masks, the report says so; the sample and teacher stay."""
    _repro(repo)
    _set(repo, "method", "name", "kwon")
    assert _repro(repo) == {"measure_rep", "measure_pred", "search", "prune_tune", "evaluate"}
    masks = json.loads((repo / "data" / "masks" / "minilm-l6" / "rt" / "masks.json").read_text())
    assert masks["search"] == {"method": "kwon"}
    report = json.loads((repo / "data" / "pruned" / "minilm-l6" / "rt" / "report.json").read_text())
    assert (report["method"], report["mode"]) == ("kwon", "oneshot")
    assert report["flops_kept"] <= 1 - report["reduction"] + 1e-9
    assert (repo / "data" / "eval" / "minilm-l6" / "rt" / "metrics.json").exists()
    _set(repo, "method", "name", "kprune")
    _repro(repo)


def test_export_stage_writes_a_verified_onnx_graph_and_is_cached(repo):
    """``dvc repro export``: the pruned model as ONNX (fp32 and int8) with its verification
    record; a second repro runs nothing."""
    _dvc(["repro", "export"], repo)
    folder = repo / "data" / "export" / "minilm-l6" / "rt"
    record = json.loads((folder / "model.onnx.json").read_text())
    assert record["max_abs_diff"] <= record["tolerance"]
    assert (folder / "model.int8.onnx").is_file()
    assert set(record["metric"]) >= {"torch", "onnx_fp32", "onnx_int8"}
    assert "Running stage" not in _dvc(["repro", "export"], repo)


def _stages_run(args, cwd) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", _dvc(["repro", *args], cwd)))


def test_sparsify_stages_are_cached_and_rerun_only_on_their_section(repo):
    """``dvc repro sparsify sparsify_pruned``: SparseBERT from the pre-trained base and from
    the K-prune model; cached on a second repro; a search knob does not touch the
    dense-teacher one, a sparsify knob reruns it."""
    for key, value in (("epochs", 0.05), ("sparsity", 0.5), ("mask_updates", 4)):
        _set(repo, "sparsify", key, value)
    assert {"sparsify", "sparsify_pruned"} <= _stages_run(["sparsify", "sparsify_pruned"], repo)
    dense = json.loads((repo / "data" / "sparse" / "minilm-l6" / "rt" / "report.json").read_text())
    assert dense["method"] == "sparsebert" and dense["base"] == "tiny-base"
    assert dense["sparsity_reached"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    both = repo / "data" / "sparse" / "minilm-l6" / "rt-kprune"
    combined = json.loads((both / "report.json").read_text())
    assert combined["method"] == "kprune+sparsebert" and (both / "kprune.json").is_file()
    assert combined["flops_kept"] < 1
    assert _stages_run(["sparsify", "sparsify_pruned"], repo) == set()
    _set(repo, "search", "lam", 2e-3)
    assert _stale(repo, "sparsify") == set()  # a K-prune knob: not the dense one's
    _set(repo, "sparsify", "sparsity", 0.6)
    assert _stale(repo, "sparsify") == {"sparsify"}


def _make_recipe(target: str) -> list[str]:
    """The shell lines of a Makefile target, with $(BIN)/ the environment running the tests."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(
            line.strip().lstrip("@").replace("$(BIN)/", f"{Path(sys.executable).parent}/")
        )
    return recipe


def test_make_run_leaves_a_fresh_clone_clean(repo, tmp_path):
    """`make run` in a fresh clone of a project whose lock is committed: the data stages
    rerun (no cache yet) and reproduce the locked hashes byte for byte; the teacher, whose
    trained floats differ across CPUs, is fine-tuned by the flow into its git-ignored store;
    afterwards `git status` shows nothing."""
    recipe = _make_recipe("run")
    assert recipe and all("repro" not in r or r.split()[-1] == "prepare" for r in recipe)
    project = tmp_path / "project"
    _git(["clone", "-q", str(repo), str(project)], tmp_path)
    assert set(_stages_run(["prepare"], project)) == {"fetch", "prepare"}
    _git(["add", "-f", "dvc.lock"], project)
    _git(["commit", "--allow-empty", "-qm", "lock the data"], project)  # may be locked already
    fresh = tmp_path / "fresh"
    _git(["clone", "-q", str(project), str(fresh)], tmp_path)
    env = {k: v for k, v in _env().items() if not k.startswith(("PREFECT_", "MLFLOW_", "KPRUNE_"))}
    out = ""
    for line in recipe:
        proc = subprocess.run(
            line, shell=True, cwd=fresh, env=env, capture_output=True, text=True, timeout=900
        )
        out += proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{line}:\n{out[-3000:]}"
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {"fetch", "prepare"}
    assert "finetune" in out and "K-prune of 'rt'" in out
    assert _run(["git", "status", "--porcelain"], fresh) == ""
    teacher = next((fresh / "data" / "flows" / "finetune").glob("*/teacher"))
    assert (teacher / "metrics.json").is_file()


def test_the_target_stage_searches_only_when_asked(repo):
    """compress.target false: the target stage records that nothing was asked; true: it
    searches (its own knobs in the target and latency sections) and is cached after."""
    _repro(repo)
    folder = repo / "data" / "target" / "minilm-l6" / "rt"
    assert _stages_run(["target"], repo) == {"target"}
    assert json.loads((folder / "target.json").read_text())["searched"] is False
    _set(repo, "compress", "target", True)
    _set(repo, "target", "estimate_steps", 1)
    _set(repo, "target", "confirm_prunes", 1)
    _set(repo, "target", "repeats", 2)
    _set(repo, "latency", "batch", 2)
    _set(repo, "latency", "seq_len", 16)
    try:
        assert _stages_run(["target"], repo) == {"target"}
        record = json.loads((folder / "target.json").read_text())
        assert record["chosen"]["stage"] in ("estimate", "confirm")
        assert record["candidates"] == 2 and (folder / "trace.csv").exists()
        assert (folder / "model" / "kprune.json").exists()
        assert _stages_run(["target"], repo) == set()
    finally:
        _set(repo, "compress", "target", False)
        for key, value in (("estimate_steps", 4), ("confirm_prunes", 2), ("repeats", 10)):
            _set(repo, "target", key, value)
        _set(repo, "latency", "batch", 32)
        _set(repo, "latency", "seq_len", 128)
