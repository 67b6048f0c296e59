"""A pruned folder loads with plain transformers where kprune is not installed.

Every family and head that kprune prunes, with a layer whose heads and neurons are all pruned:
``AutoModelFor*.from_pretrained(DIR, trust_remote_code=True)`` in a subprocess in which
``import kprune`` fails gives the logits of ``kprune.load_pruned``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from kprune.models.checkpoint import MODELING_FILE, load_pruned
from tests.helpers import make_pruned_folders

CASES = [  # (family, head, labels)
    ("bert", "seq", 2),
    ("bert", "seq", 1),  # regression
    ("bert", "qa", 2),
    ("roberta", "seq", 3),
    ("roberta", "qa", 2),
    ("distilbert", "seq", 2),
    ("distilbert", "qa", 2),
    ("mpnet", "seq", 3),
    ("mpnet", "qa", 2),
]

# runs without kprune: a finder that refuses it, then plain transformers
LOADER = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class NoKprune(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "kprune" or name.startswith("kprune."):
                raise ImportError("kprune is blocked in this test")
    sys.meta_path.insert(0, NoKprune())
    try:
        import kprune  # noqa
        raise SystemExit("kprune was importable")
    except ImportError:
        pass
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification
    out = {}
    for folder, head in json.loads(sys.argv[1]):
        cls = AutoModelForQuestionAnswering if head == "qa" else AutoModelForSequenceClassification
        model = cls.from_pretrained(folder, trust_remote_code=True).eval()
        ids = torch.tensor([[5, 9, 12, 7, 20, 6, 8, 11, 13], [6, 7, 8, 9, 10, 11, 12, 13, 14]])
        with torch.no_grad():
            o = model(input_ids=ids, attention_mask=torch.ones_like(ids))
        logits = torch.stack([o.start_logits, o.end_logits], -1) if head == "qa" else o.logits
        out[folder] = {"logits": logits.tolist(), "class": type(model).__name__}
    print(json.dumps(out))
    """
)


def _logits(model, head):
    ids = torch.tensor([[5, 9, 12, 7, 20, 6, 8, 11, 13], [6, 7, 8, 9, 10, 11, 12, 13, 14]])
    with torch.no_grad():
        o = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return torch.stack([o.start_logits, o.end_logits], -1) if head == "qa" else o.logits


@pytest.fixture(scope="module")
def pruned_folders(tmp_path_factory):
    return make_pruned_folders(tmp_path_factory.mktemp("portable"), CASES)


def test_pruned_folder_carries_its_widths_and_modeling_code(pruned_folders):
    folder, _ = pruned_folders[0]
    config = json.loads((__import__("pathlib").Path(folder) / "config.json").read_text())
    assert config["kprune_heads_per_layer"] == [2, 0, 3]
    assert config["kprune_ffn_per_layer"][1] == 0
    assert config["auto_map"] == {
        "AutoModelForSequenceClassification": "pruned_modeling.PrunedBertForSequenceClassification"
    }
    assert (__import__("pathlib").Path(folder) / MODELING_FILE).is_file()


def test_plain_transformers_without_kprune_gives_kprunes_logits(pruned_folders, tmp_path):
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps(pruned_folders)],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the repository: kprune is not on the path
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for folder, head in pruned_folders:
        want = _logits(load_pruned(folder), head)
        assert got[folder]["class"].startswith("Pruned"), got[folder]
        torch.testing.assert_close(torch.tensor(got[folder]["logits"]), want, atol=1e-5, rtol=1e-5)
