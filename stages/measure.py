"""Stage measure: K_rep or K_pred of every unit on the teacher -> a Parquet score table.

K_rep does not depend on gamma; K_pred does. They are separate tables, written by separate
invocations (``--what rep`` / ``--what pred``), so a gamma change re-measures K_pred only.
"""

from __future__ import annotations

from kprune.config import PruneConfig, prune_config
from kprune.data.sample import load_sample
from kprune.device import resolve_device
from kprune.models.checkpoint import load_model
from kprune.pruning.knowledge import MeasureSpec
from kprune.pruning.score_tables import measure_initial, write_scores
from stages.common import exit_with, stage_main


def add_args(p):
    p.add_argument("--teacher", required=True)
    p.add_argument("--sample", required=True)
    p.add_argument("--what", choices=["rep", "pred"], required=True)
    p.add_argument("--out", required=True, help="score table (.parquet)")


def make(
    teacher: str, sample: str, what: str, out: str, cfg: PruneConfig, device: str = "auto"
) -> int:
    """Measure K_rep or K_pred on the teacher and write the table; returns the row count.
    (K-prune's tables: a baseline method scores units its own way in the search stage.)"""
    cfg = cfg.resolved()
    data = load_sample(sample)
    with_pred = what == "pred"
    spec = MeasureSpec.of(cfg, data.meta["kind"], with_pred=with_pred)
    model = load_model(teacher)
    df, meta = measure_initial(
        model,
        data,
        spec,
        cfg.sample.batch_size,
        resolve_device(device),
        (f"k_{what}",),
        cfg.measure.dtype,
    )
    meta.update({"model": str(teacher), "task": data.meta["task"]})
    # each table names only what its scores depend on
    for key in ("rep_form",) if with_pred else ("gamma", "pred_form"):
        meta.pop(key)
    write_scores(df, out, meta)
    return len(df)


def run(args) -> None:
    cfg = prune_config(args.params)
    n = make(args.teacher, args.sample, args.what, args.out, cfg, args.device)
    print(f"measure {args.what}: {n} units -> {args.out}")


def main(argv: list[str] | None = None) -> int:
    return stage_main(__doc__, add_args, run, argv)


if __name__ == "__main__":
    exit_with(main())
