"""kprune installs as a library: the wheel holds the kprune package only (the pipeline's
stages/, flows/ and bench/ stay in the repository), its core needs no workflow or ONNX
package, and each optional part refuses in one line, naming the extra that installs it."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT

# what the core must run without: the pipeline and deployment extras (and what they pull in)
EXTRAS_ONLY = (
    "prefect",
    "prefect_dask",
    "dask",
    "distributed",
    "dvc",
    "mlflow",
    "matplotlib",
    "onnx",
    "onnxscript",
    "onnx_ir",
    "onnxruntime",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (the checkout is left untouched)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "kprune", src / "kprune", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    proc = subprocess.run([*cmd, "-w", str(out), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("kprune-*.whl")
    return path


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(z.read(name))


def test_the_wheel_holds_the_kprune_package_and_its_cli_only(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = z.read(entry).decode()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"kprune"}
    assert "kprune/__init__.py" in names and "kprune/models/adapters/families.py" in names
    assert not [n for n in names if n.startswith(("stages/", "flows/", "bench/", "tests/"))]
    assert "kprune = kprune.cli:main" in scripts


def test_core_requirements_hold_no_pipeline_or_onnx_package_and_admit_the_tested_versions(wheel):
    meta = _metadata(wheel)
    reqs = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    core = [r for r in reqs if r.marker is None]
    extra = {
        name: {r.name for r in reqs if r.marker and r.marker.evaluate({"extra": name})}
        for name in ("onnx", "pipeline")
    }
    assert set(meta.get_all("Provides-Extra")) >= {"onnx", "pipeline", "all"}
    assert extra["onnx"] >= {"onnx", "onnxscript", "onnxruntime"}
    assert extra["pipeline"] >= {"prefect", "prefect-dask", "dvc", "mlflow"}
    names = {r.name.lower().replace("_", "-") for r in core}
    assert {"torch", "transformers", "safetensors"} <= names
    assert not names & {"prefect", "prefect-dask", "dvc", "mlflow", "onnx", "onnxruntime"}
    for r in core:  # ranges, not pins, and each admits the version the tests run on
        assert not any(s.operator == "==" for s in r.specifier), r
        assert r.specifier.contains(metadata.version(r.name), prereleases=True), r


# hides packages the way an environment without them does: the path finder does not see
# them (importlib.util.find_spec returns None, an import raises ModuleNotFoundError)
BLOCKER = """
import sys
from importlib.machinery import PathFinder

BLOCKED = set(sys.argv[1].split(","))


class Hiding(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return PathFinder.find_spec(name, path, target)


sys.meta_path[:] = [Hiding if f is PathFinder else f for f in sys.meta_path]
sys.argv[1:] = sys.argv[2:]
"""

CORE_RUN = """
import sys
from pathlib import Path

import torch

import kprune
from kprune.errors import KPruneError
from tests.helpers import make_tiny_model, sentiment_frame

root = Path(sys.argv[1])
assert str(Path(kprune.__file__).parent).startswith(str(root / "site")), kprune.__file__
make_tiny_model(root / "tiny")
sentiment_frame(200).to_csv(root / "s.csv", index=False)
cfg = kprune.PruneConfig(reduction=0.5, tokens=1500, max_length=16)
model, report = kprune.prune(str(root / "tiny"), str(root / "s.csv"), cfg, device="cpu",
                             progress=False)
kprune.save_pruned(model, root / "pruned", report=report)
back = kprune.load_pruned(root / "pruned")
ids = torch.tensor([[2, 5, 6, 7, 3]])
assert torch.allclose(model(input_ids=ids).logits, back(input_ids=ids).logits, atol=1e-5)
sc = kprune.SparsifyConfig(sparsity=0.5, epochs=0.05, mask_updates=2, max_length=16,
                           student="teacher")
sparse, sreport = kprune.sparsify(str(root / "tiny"), str(root / "s.csv"), sc, device="cpu",
                                  progress=False)
from kprune.deploy.export import export_onnx
try:
    export_onnx(root / "pruned", root / "m.onnx")
except KPruneError as exc:
    print("REFUSED:", exc)
blocked = set(sys.argv[2].split(","))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in blocked)
print("LOADED:", loaded)
"""


def test_the_core_runs_where_no_extra_is_installed(wheel, tmp_path):
    """The wheel installed alone (no dependencies) beside this environment's core packages,
    with every extra's package made unimportable: prune, save, load and sparsify work; export
    refuses in one line naming ``kprune[onnx]``."""
    site = tmp_path / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
    proc = subprocess.run([*cmd, str(wheel)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (tmp_path / "block.py").write_text(BLOCKER)
    (tmp_path / "run.py").write_text(CORE_RUN)
    code = f"exec(open({str(tmp_path / 'block.py')!r}).read()); "
    code += f"exec(open({str(tmp_path / 'run.py')!r}).read())"
    blocked = ",".join(EXTRAS_ONLY)
    proc = subprocess.run(
        [sys.executable, "-c", code, blocked, str(tmp_path), blocked],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": f"{site}:{ROOT}", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    refused = next(line for line in lines if line.startswith("REFUSED:"))
    assert "ONNX export needs onnx, which is not installed" in refused
    assert "pip install 'kprune[onnx]'" in refused
    assert "LOADED: []" in lines


def test_the_flows_refuse_in_one_line_without_the_pipeline_extra(tmp_path):
    (tmp_path / "block.py").write_text(BLOCKER)
    code = f"exec(open({str(tmp_path / 'block.py')!r}).read()); import flows"
    proc = subprocess.run(
        [sys.executable, "-c", code, "prefect,mlflow"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "kprune: error: running the flows needs prefect, which is not installed; install it with: "
        "pip install 'kprune[pipeline]'"
    )
