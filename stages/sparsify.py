"""Stage sparsify: SparseBERT — the teacher distilled into a student whose encoder matrices are
sparse (``kprune.sparse.sparsebert``, the params.yaml ``sparsify`` section). With ``--from-pruned`` the
student is the K-prune model of prune_tune (K-prune + SparseBERT)."""

from __future__ import annotations

from kprune.config import SparsifyConfig, section
from kprune.data.tasks import load_task
from kprune.sparse.sparsebert import save_sparse, sparsify
from stages.common import exit_with, stage_main


def add_args(p):
    p.add_argument("--teacher", required=True, help="fine-tuned teacher folder")
    p.add_argument("--task", required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--from-pruned", help="a K-prune model folder: the student starts from it")
    p.add_argument("--out", required=True, help="output model folder (with report.json)")


def make(
    teacher: str,
    task_name: str,
    data_dir: str | None,
    out: str,
    cfg: SparsifyConfig,
    from_pruned: str | None = None,
    device: str = "auto",
) -> dict:
    """Train the sparse student into folder ``out``; returns its report."""
    task = load_task(task_name, data_dir)
    model, report = sparsify(teacher, task, cfg, from_pruned, device, progress=False)
    save_sparse(model, out, report)
    return report


def run(args) -> None:
    cfg = section(args.params, "sparsify")
    report = make(
        args.teacher, args.task, args.data_dir, args.out, cfg, args.from_pruned, args.device
    )
    m = report["metric"]
    print(
        f"sparsify {report['method']} s={cfg.sparsity}: dev {m} "
        f"{report['metric_after']['dev'][m]:.4f}, encoder matrices "
        f"{report['matrix_nonzero']} nonzero -> {args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    return stage_main(__doc__, add_args, run, argv)


if __name__ == "__main__":
    exit_with(main())
