"""What several benchmark commands share: the latency of a model as the benchmarks time it,
the K-prune model of a teacher, pruned once and then read from a cache folder, and a model
folder's ONNX graph, exported once."""

from __future__ import annotations

from pathlib import Path

from bench.rows import model_of

LENGTH = 128  # every benchmark times sequences of this many tokens
BATCHES = (1, 32)


def latencies(model, repeats: int, threads: int) -> dict[int, float]:
    """Median ms of one forward pass at each of ``BATCHES`` (``LENGTH`` tokens, ``threads``
    threads), rounded to the microsecond."""
    from kprune.train.evaluation import latency_ms

    return {b: round(latency_ms(model, b, LENGTH, repeats, threads=threads), 3) for b in BATCHES}


def cached_kprune(
    store: Path,
    teachers: Path,
    task: str,
    reduction: float,
    tokens: int,
    seed: int = 0,
    data_dir: str | None = None,
    device: str = "cpu",
) -> Path:
    """The folder of the K-prune model of ``teachers/task`` at ``reduction`` (default method,
    ``tokens`` sample tokens, ``seed``): pruned and saved on the first call, read after."""
    from kprune.config import PruneConfig
    from kprune.data.tasks import load_task
    from kprune.models.checkpoint import save_pruned
    from kprune.pruning.assemble import prune

    folder = Path(store) / f"kprune-{model_of(teachers)}-{task}-R{reduction}-t{tokens}-s{seed}"
    if not (folder / "kprune.json").exists():
        cfg = PruneConfig(reduction=reduction, tokens=tokens, seed=seed)
        model, report = prune(
            str(Path(teachers) / task),
            load_task(task, data_dir),
            cfg,
            eval_split=None,
            device=device,
        )
        save_pruned(model, folder, report=report)
    return folder


def cached_onnx(folder: Path, out: Path, int8: bool = False) -> Path:
    """``folder``'s fused fp32 ONNX graph at ``out`` (and its int8 copy with ``int8``),
    exported and verified against torch on the first call, read after."""
    from kprune.deploy.export import export_onnx, int8_path

    done = (out.parent / f"{out.name}.json").exists()
    if not done or (int8 and not int8_path(out).exists()):
        out.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(folder, out, int8=int8)
    return out
