"""The GPU path: what must hold when a CUDA device is present (skipped where there is none).

Tiny seeded models, so the whole file runs in seconds on a GPU; the timings of the GPU path
are the benchmarks' (docs/speed.md), not these tests'.
"""

import pytest
import torch

from kprune.config import PruneConfig, SparsifyConfig
from kprune.data.tasks import load_task
from kprune.device import resolve_device
from kprune.pruning.assemble import prune
from tests.helpers import make_tiny_teacher

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine"),
]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-teacher")
    return make_tiny_teacher(root), load_task(str(root / "s.csv"))


def _prune(teacher, device, **kw):
    folder, task = teacher
    cfg = PruneConfig(**{"reduction": 0.5, "tokens": 1500, "max_length": 16, **kw})
    return prune(str(folder), task, cfg, device=device, progress=False)


def test_auto_takes_the_gpu():
    assert resolve_device("auto").type == "cuda"


def test_pruning_on_the_gpu_keeps_the_cpus_units_and_meets_the_budget(teacher):
    """float32 on the GPU is the CPU's computation up to summation order: the same units kept
    (a tiny model's scores are far apart), the same FLOPs, close outputs."""
    cpu_model, cpu = _prune(teacher, "cpu")
    gpu_model, gpu = _prune(teacher, "cuda")
    assert gpu["kept_heads_per_layer"] == cpu["kept_heads_per_layer"]
    assert gpu["kept_neurons_per_layer"] == cpu["kept_neurons_per_layer"]
    assert gpu["flops_after"] <= gpu["flops_budget"] * (1 + 1e-9)
    ids = torch.randint(5, 26, (3, 9))
    with torch.no_grad():
        a = cpu_model.cpu()(input_ids=ids).logits
        b = gpu_model.cpu()(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)


def test_bf16_measurement_on_the_gpu_meets_the_budget(teacher):
    _, r = _prune(teacher, "cuda", dtype="bfloat16")
    assert r["flops_after"] <= r["flops_budget"] * (1 + 1e-9)
    assert sum(r["kept_heads_per_layer"]) + sum(r["kept_neurons_per_layer"]) > 0


def test_sparsify_on_the_gpu_reaches_the_sparsity(teacher):
    from kprune.sparse.schedule import prunable_matrices
    from kprune.sparse.sparsebert import sparsify

    folder, task = teacher
    cfg = SparsifyConfig(
        sparsity=0.8, epochs=1.0, batch_size=16, lr=1e-3, max_length=16, mask_updates=4
    )
    model, report = sparsify(folder, task, cfg, device="cuda", progress=False)
    for name, w in prunable_matrices(model).items():
        assert int((w != 0).sum()) == w.numel() - round(0.8 * w.numel()), name
    assert report["matrix_nonzero"] < report["matrix_params"]


def test_latency_on_the_gpu(teacher):
    from kprune.models.checkpoint import load_model
    from kprune.train.evaluation import latency_ms

    model = load_model(teacher[0])
    assert latency_ms(model, 4, 16, repeats=2, device="cuda") > 0
