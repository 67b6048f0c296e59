"""The lambda/mu sweep shares iteration 0, gives the same model as a full run, resumes."""

import csv

import pytest

from bench import sensitivity
from kprune.config import PruneConfig
from kprune.data.tasks import load_task
from kprune.pruning.assemble import prune
from tests.helpers import write_rt_project


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return write_rt_project(tmp_path_factory.mktemp("sweep"), epochs=2)


def _sweep(root, *extra):
    return sensitivity.main(
        [
            *("--teachers", str(root / "teachers"), "--data-dir", str(root / "tasks")),
            *("--out", str(root / "docs"), "--tasks", "rt", "--reductions", "0.5"),
            *("--lams", "0,2.5e-4", "--mus", "64", "--tokens", "400", "--threads", "1"),
            *extra,
        ]
    )


def _rows(root):
    with open(root / "docs" / "sensitivity.csv") as fh:
        return list(csv.DictReader(fh))


def test_sweep_matches_a_full_run_and_resumes(project):
    assert _sweep(project) == 0
    rows = _rows(project)
    assert [(float(r["lam"]), float(r["mu"])) for r in rows] == [(0.0, 64.0), (2.5e-4, 64.0)]
    default = rows[1]
    _, report = prune(
        str(project / "teachers" / "rt"),
        load_task("rt", project / "tasks"),
        PruneConfig(reduction=0.5, tokens=400, seed=0),
        device="cpu",
        progress=False,
    )
    # iteration 0 from the shared measurement: the same model as a full K-prune run
    assert float(default["dev"]) == pytest.approx(report["metric_after"]["accuracy"], abs=1e-12)
    assert default["neurons_kept"] == str(report["kept_neurons_per_layer"])
    assert float(default["flops_kept"]) <= 0.5 + 1e-9
    assert float(default["shared_seconds"]) > 0
    assert _sweep(project) == 0 and len(_rows(project)) == 2  # nothing rerun
    text = (project / "docs" / "sensitivity.md").read_text()
    assert "| rt | 0.5 | [0] |" in text
    assert (project / "docs" / "sensitivity_rt.png").stat().st_size > 1000


def test_bad_grid_value_is_one_line(project, capsys):
    assert _sweep(project, "--lams", "x") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kprune: error: sensitivity: cannot read") and "\n" not in err
