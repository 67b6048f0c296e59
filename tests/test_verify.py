"""A pruned folder someone sent: kprune verify, and loading that refuses what was edited."""

from __future__ import annotations

import json
import shutil

import pytest

from kprune.config import PruneConfig
from kprune.errors import KPruneError
from kprune.models.checkpoint import load_pruned, save_pruned, verify
from kprune.pruning.assemble import prune
from tests.helpers import make_tiny_teacher


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    teacher = make_tiny_teacher(root)
    model, report = prune(
        teacher, str(root / "s.csv"), PruneConfig(tokens=1500, max_length=16), progress=False
    )
    save_pruned(model, root / "pruned", report=report)
    return root / "pruned"


@pytest.fixture
def copy(pruned, tmp_path):
    shutil.copytree(pruned, tmp_path / "p")
    return tmp_path / "p"


def test_an_intact_folder_verifies(pruned, capsys):
    from kprune.cli import main

    lines = verify(pruned)
    assert any("match their sha256" in x for x in lines)
    assert any("identical to this kprune's" in x for x in lines)
    assert main(["verify", str(pruned)]) in (0, None)
    assert capsys.readouterr().out.count("ok  ") == len(lines)


def _drop_a_head(folder):
    record = json.loads((folder / "kprune.json").read_text())
    layer = next(i for i, h in enumerate(record["kept"]["heads"]) if h)
    record["kept"]["heads"][layer] = record["kept"]["heads"][layer][1:]
    (folder / "kprune.json").write_text(json.dumps(record))


def _extra_weights(folder):
    shutil.copy(folder / "model.safetensors", folder / "zz-extra.safetensors")


def _edited_modeling(folder):
    path = folder / "pruned_modeling.py"
    path.write_text(path.read_text() + "\nimport os  # anything at all\n")


def _extra_code(folder):
    (folder / "helper.py").write_text("print('hello')\n")


def _missing_weights(folder):
    (folder / "model.safetensors").unlink()


@pytest.mark.parametrize(
    "edit, message",
    [
        (_drop_a_head, "the weights do not fit the kept units of kprune.json"),
        (_extra_weights, "zz-extra.safetensors is not one of the weight files kprune.json"),
        (_missing_weights, "has no .safetensors weights"),
        (_edited_modeling, "differs from this kprune's pruned_modeling.py"),
        (_extra_code, "helper.py: a Python file kprune does not write"),
    ],
    ids=["edited-record", "extra-weights", "no-weights", "edited-code", "extra-code"],
)
def test_an_edited_folder_is_one_line(copy, edit, message, capsys):
    from kprune.cli import main

    edit(copy)
    with pytest.raises(KPruneError) as err:
        verify(copy)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert main(["verify", str(copy)]) == 2
    out = capsys.readouterr().err.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("kprune: error:") and message in out[0]


def test_loading_refuses_extra_weights_instead_of_loading_them(copy):
    _extra_weights(copy)
    with pytest.raises(KPruneError, match="not one of the weight files"):
        load_pruned(copy)
