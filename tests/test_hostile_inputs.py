"""Every row of the hostile-input table (tests/hostile_inputs.py), run in-process through the
real entry points: exit code 2, exactly the row's one line, no traceback, no output written;
and the inputs kprune accepts with a warning instead."""

from __future__ import annotations

import contextlib
import io
import json
import logging

import pytest

from kprune.config import PruneConfig
from kprune.models.checkpoint import save_pruned
from kprune.pruning.assemble import prune
from tests.conftest import ROOT
from tests.helpers import make_headless, make_tiny_teacher, sentiment_frame, tiny_latency_table
from tests.hostile_inputs import ROWS, evaluate, markdown


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    make_tiny_teacher(root, n=120, epochs=1, lr=1e-3)
    make_headless(root / "headless")
    model, report = prune(
        str(root / "teacher"),
        str(root / "s.csv"),
        PruneConfig(tokens=600, max_length=16),
        progress=False,
    )
    save_pruned(model, root / "pruned", report=report)
    table = tiny_latency_table()
    (root / "table.json").write_text(json.dumps(table))
    (root / "table-3-layers.json").write_text(json.dumps({**table, "layers": 3}))
    return root


@pytest.fixture
def offline(monkeypatch):
    """The hub endpoint on a closed loopback port: no network, deterministically."""
    from kprune import hub

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    hub.unreachable_reason.cache_clear()
    yield
    hub.unreachable_reason.cache_clear()


def run_entry(argv: list[str]) -> tuple[int, str]:
    """Run a ``kprune`` command line (or ``stage:NAME ...``) in this process."""
    import importlib

    err = io.StringIO()
    stage = argv[0].startswith("stage:")
    main = importlib.import_module(f"stages.{argv[0][6:]}" if stage else "kprune.cli").main
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv[1:] if stage else argv)
        except SystemExit as exc:  # the argument parser's refusals
            code = exc.code
    return code, err.getvalue()


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.group}: {r.what}" for r in ROWS])
def test_hostile_input_is_one_exact_line(root, offline, row):
    argv = row.make(root)
    outputs = [a for a in argv if "/out/" in a]
    code, err = run_entry(argv)
    errors = [line for line in err.splitlines() if line.startswith("kprune: error:")]
    assert "Traceback" not in err
    assert code == 2 and len(errors) == 1, err[-2000:]
    assert errors[0] == "kprune: error: " + row.message.replace("{d}", str(root))
    assert not any(ROOT.joinpath(o).exists() for o in outputs)  # nothing written


def test_the_pickle_never_ran(root, offline):
    row = next(r for r in ROWS if "pickle" in r.what)
    run_entry(row.make(root))
    assert not (root / "models" / "pickled-code" / "PWNED").exists()


def test_at_least_thirty_rows_and_the_docs_show_them_all():
    assert len(ROWS) >= 30
    assert markdown() in (ROOT / "docs" / "reliability.md").read_text()


def _accept(root, tmp_path, caplog, name, content) -> tuple[int, list[str]]:
    path = tmp_path / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with caplog.at_level(logging.WARNING):
        code, _err = run_entry(evaluate(root, path))
    return code, [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_bom_is_read_as_utf8(root, tmp_path, caplog):
    code, _ = _accept(
        root,
        tmp_path,
        caplog,
        "bom.csv",
        b"\xef\xbb\xbf" + sentiment_frame(60).to_csv(index=False).encode(),
    )
    assert code == 0


def test_rows_without_text_are_dropped_with_a_warning(root, tmp_path, caplog):
    df = sentiment_frame(60)
    df.loc[df.index[::3], "text"] = ""
    code, warnings = _accept(root, tmp_path, caplog, "holes.csv", df.to_csv(index=False))
    assert code == 0
    assert any("dropped 20 of 60 rows with an empty text or no label" in w for w in warnings), (
        warnings
    )


def test_a_100_mb_line_is_cut_with_a_warning(root, tmp_path, caplog):
    df = sentiment_frame(60)
    text = "good " * 20_000_000  # 100 MB in one field of one line
    body = df.to_csv(index=False) + f"{text},1\n"
    code, warnings = _accept(root, tmp_path, caplog, "huge.csv", body)
    assert code == 0
    assert any(
        "cut 1 text(s) longer than 100000 characters (the longest: 100000000)" in w
        for w in warnings
    ), warnings


def test_a_bin_checkpoint_loads_weights_only(root):
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = root / "models" / "bin"
    shutil.copytree(root / "teacher", folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    code, err = run_entry(evaluate(root, root / "s.csv", "models/bin"))
    assert code == 0, err
    assert json.loads((root / "out" / "s.csv-models_bin.json").read_text())["dev"]
