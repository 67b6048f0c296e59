"""Stage sparsify: SparseBERT — the teacher distilled into a student whose encoder matrices are
sparse (``kprune.sparsify``, the params.yaml ``sparsify`` section). With ``--from-pruned`` the
student is the K-prune model of prune_tune (K-prune + SparseBERT)."""

from __future__ import annotations

from kprune.params import section
from kprune.sparsify import save_sparse, sparsify
from kprune.tasks import load_task
from stages.common import exit_with, stage_main


def add_args(p):
    p.add_argument("--teacher", required=True, help="fine-tuned teacher folder")
    p.add_argument("--task", required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--from-pruned", help="a K-prune model folder: the student starts from it")
    p.add_argument("--out", required=True, help="output model folder (with report.json)")


def run(args) -> None:
    cfg = section(args.params, "sparsify")
    task = load_task(args.task, args.data_dir)
    model, report = sparsify(args.teacher, task, cfg, args.from_pruned, args.device)
    save_sparse(model, args.out, report)
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
