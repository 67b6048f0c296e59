import pytest

from kprune.config import load_section
from kprune.errors import KPruneError
from kprune.finetune import FinetuneConfig
from tests.conftest import ROOT


def test_repo_params_are_valid():
    cfg = load_section(ROOT / "params.yaml", "finetune", FinetuneConfig)
    assert cfg.batch_size == 32 and cfg.lr == 5e-5


def test_unknown_key_is_named():
    with pytest.raises(KPruneError, match="unknown key 'finetune.learning_rate'"):
        load_section({"finetune": {"learning_rate": 1e-4}}, "finetune", FinetuneConfig)


def test_wrong_type_is_named():
    with pytest.raises(KPruneError, match="'finetune.batch_size' must be int, got '32'"):
        load_section({"finetune": {"batch_size": "32"}}, "finetune", FinetuneConfig)


def test_missing_params_file(tmp_path):
    with pytest.raises(KPruneError, match="does not exist"):
        load_section(tmp_path / "params.yaml", "finetune", FinetuneConfig)


def test_every_section_of_the_repo_params_validates():
    from kprune.config import validate_params

    validate_params(str(ROOT / "params.yaml"))


def test_unknown_section_key_in_pipeline_params(tmp_path):
    from kprune.config import validate_params

    (tmp_path / "p.yaml").write_text("search:\n  lamda: 0.1\n")
    with pytest.raises(KPruneError, match="unknown key 'search.lamda'"):
        validate_params(str(tmp_path / "p.yaml"))


def test_unknown_section_is_named(tmp_path):
    from kprune.config import validate_params

    (tmp_path / "p.yaml").write_text("serach:\n  lam: 0.1\n")
    with pytest.raises(KPruneError, match="unknown section 'serach'"):
        validate_params(str(tmp_path / "p.yaml"))
