import pytest

from kprune.config import FinetuneConfig, load_section
from kprune.errors import KPruneError
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


def test_every_pruning_knob_can_be_set_in_params_yaml():
    """The DVC path can express every option: each knob of the typed config is in
    params.yaml, in the section of the same name, and is read back as written."""
    import dataclasses

    from kprune.config import PRUNE_SECTIONS, prune_config, read_params

    data = read_params(ROOT / "params.yaml")
    cfg = prune_config(data)
    for name, cls in PRUNE_SECTIONS.items():
        assert {f.name for f in dataclasses.fields(cls)} == set(data[name]), name
        assert dataclasses.asdict(getattr(cfg, name)) == data[name]


def test_knob_names_are_unique_and_flags_come_from_the_config():
    import argparse
    import dataclasses

    from kprune.config import KNOBS, PRUNE_SECTIONS, PruneConfig, add_flags, knobs_from_args

    fields = [f.name for cls in PRUNE_SECTIONS.values() for f in dataclasses.fields(cls)]
    assert len(fields) == len(KNOBS)  # a name in two sections would collide
    parser = argparse.ArgumentParser()
    add_flags(parser)
    args = parser.parse_args(["--lam", "0.5", "--no-tune", "--search-strategy", "uniform"])
    cfg = PruneConfig(**knobs_from_args(args))
    assert (cfg.search.lam, cfg.prune_tune.tune, cfg.search.strategy) == (0.5, False, "uniform")
    assert PruneConfig(**knobs_from_args(parser.parse_args([]))) == PruneConfig()


def test_a_knob_routes_to_its_section_and_bad_values_name_the_fix():
    from kprune.config import PruneConfig, SearchConfig

    assert PruneConfig(reduction=0.3).search == SearchConfig(reduction=0.3)
    assert PruneConfig().replace(mu=1.0).search.mu == 1.0
    with pytest.raises(KPruneError, match=r"search.lam must be >= 0.*--lam"):
        PruneConfig(lam=-1.0)
    with pytest.raises(KPruneError, match="measure.dtype must be one of float32, bfloat16"):
        PruneConfig(dtype="float16")
    with pytest.raises(KPruneError, match="unknown pruning knob 'lamda'"):
        PruneConfig(lamda=0.1)
