"""``kprune export``: ONNX graphs that ONNX Runtime runs with the torch model's outputs.

Every family and head, with a layer whose heads and neurons are all pruned and layers with
different head counts (the case a single global head count gets wrong): the fused fp32 graph
equals torch tightly on inputs of other batch and sequence sizes than the export's; int8
loosely. Bad input gets its one-line error and writes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kprune.deploy.export import OrtModel, export_onnx
from kprune.models.checkpoint import load_pruned
from tests.helpers import make_pruned_folders
from tests.test_portable import CASES

NO_TYPES = ("distilbert", "mpnet")  # families whose forward takes no token types


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    return make_pruned_folders(tmp_path_factory.mktemp("export"), CASES)


def _inputs(batch: int, length: int, with_types: bool) -> dict:
    g = torch.Generator().manual_seed(batch * 100 + length)
    ids = torch.randint(5, 26, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, length - 4 :] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if with_types:
        out["token_type_ids"] = torch.zeros_like(ids)
    return out


@pytest.mark.parametrize("case", range(len(CASES)))
def test_exported_graph_gives_torch_outputs(pruned, tmp_path, case):
    folder, head = pruned[case]
    family = CASES[case][0]
    out = tmp_path / "m.onnx"
    record = export_onnx(folder, out, int8=case == 0)
    assert record.layers_with_heads == 2  # layer 1 has no heads
    # MPNet's attention (its position bias added between the scaling and the softmax) is not
    # recognised by the fusions: it runs unfused, as MatMul / Add / Softmax
    assert record.attention_nodes == (0 if family == "mpnet" else 2)
    assert record.max_abs_diff <= record.tolerance
    assert json.loads((tmp_path / "m.onnx.json").read_text())["attention_nodes"] == (
        record.attention_nodes
    )
    model = load_pruned(folder)
    session = OrtModel(out)
    names = ["input_ids", "attention_mask"] + ([] if family in NO_TYPES else ["token_type_ids"])
    assert session.input_names == names
    assert session.output_names == (["start_logits", "end_logits"] if head == "qa" else ["logits"])
    for batch, length in ((1, 7), (5, 23)):  # other sizes than the export's
        x = _inputs(batch, length, family not in NO_TYPES)
        with torch.no_grad():
            want = model(**x)
        want = (
            torch.stack([want.start_logits, want.end_logits], -1) if head == "qa" else want.logits
        )
        got = session(**x).logits
        valid = x["attention_mask"].bool()
        if head == "qa":  # padded positions are not compared
            got, want = got[valid], want[valid]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
        if case == 0:
            q8 = OrtModel(tmp_path / "m.int8.onnx")(**x).logits
            assert (q8 - want).abs().max() < 0.1
            assert (tmp_path / "m.int8.onnx").stat().st_size < out.stat().st_size
    if case == 0:  # the graph passes: every attention quantized, no fused skip LayerNorm
        import onnx

        fp32 = [n.op_type for n in onnx.load(out).graph.node]
        q8 = [n.op_type for n in onnx.load(tmp_path / "m.int8.onnx").graph.node]
        assert "SkipLayerNormalization" not in fp32 and "LayerNormalization" in fp32
        assert q8.count("QAttention") == 2 and "Attention" not in q8
        assert record.fusions["attention_made_uniform"] == 2


def _cli(*args, cwd):
    env = {**os.environ, "KPRUNE_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "kprune.cli", "export", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("not-pruned", "cannot read model config of"),
        ("unwritable", "is not writable; choose another --out"),
        ("opset", "opset 5 is not supported by the exporter; choose 18 to .* or leave out --opset"),
        ("suffix", "must end in .onnx"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(pruned, tmp_path, what, message):
    import re

    folder, _ = pruned[0]
    out = tmp_path / "out" / "m.onnx"
    args = [folder, "--out", str(out)]
    if what == "not-pruned":
        (tmp_path / "plain").mkdir()
        (tmp_path / "plain" / "config.json").write_text("{}")
        args[0] = str(tmp_path / "plain")
    elif what == "unwritable":
        out.parent.mkdir()
        out.parent.chmod(0o500)
        if os.access(out.parent, os.W_OK):  # root ignores the mode
            pytest.skip("running as a user who can write anywhere")
    elif what == "opset":
        args += ["--opset", "5"]
    else:
        args[2] = str(tmp_path / "out" / "m.bin")
    proc = _cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("kprune: error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), proc.stderr[-2000:]
    written = [p for p in (tmp_path / "out").rglob("*")] if (tmp_path / "out").exists() else []
    assert written == []


def test_ort_profile_splits_kernel_time_by_operator(pruned, tmp_path, capsys):
    from bench.ort_profile import main, profile

    folder, _ = pruned[0]
    export_onnx(folder, tmp_path / "p.onnx")
    rows = profile(tmp_path / "p.onnx", batch=2, length=8, runs=2, threads=1)
    ops = {op for op, _, _ in rows}
    assert "Attention" in ops and "LayerNormalization" in ops
    assert sum(share for _, share, _ in rows) == pytest.approx(1.0)
    assert all(ms >= 0 for _, _, ms in rows)
    assert main([str(tmp_path / "missing.onnx")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("kprune: error:") and len(err.splitlines()) == 1


def test_the_record_names_what_it_describes_after_its_folder_is_renamed(pruned, tmp_path):
    """Exported into a temporary folder and renamed into place (as the flows do), the record
    still leads to its graphs and to the pruned folder."""
    from kprune.atomic import atomic_path

    folder, _ = pruned[0]
    with atomic_path(tmp_path / "export", is_dir=True) as tmp:
        export_onnx(folder, tmp / "model.onnx", int8=True)
    record = json.loads((tmp_path / "export" / "model.onnx.json").read_text())
    assert ".tmp-" not in json.dumps(record)
    assert (tmp_path / "export" / record["onnx"]).is_file()
    assert (tmp_path / "export" / record["int8"]["onnx"]).is_file()
    assert (tmp_path / "export" / record["source"]).resolve() == Path(folder).resolve()
