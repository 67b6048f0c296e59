"""Stage measure: K_rep or K_pred of every unit on the teacher -> a Parquet score table.

K_rep does not depend on gamma; K_pred does. They are separate tables, written by separate
invocations (``--what rep`` / ``--what pred``), so a gamma change re-measures K_pred only.
"""

from __future__ import annotations

from kprune.api import load_model
from kprune.device import resolve_device
from kprune.knowledge import MeasureSpec
from kprune.sample import load_sample
from kprune.scores import write_scores
from kprune.steps import measure_initial
from stages.common import exit_with, section, stage_main


def add_args(p):
    p.add_argument("--teacher", required=True)
    p.add_argument("--sample", required=True)
    p.add_argument("--what", choices=["rep", "pred"], required=True)
    p.add_argument("--out", required=True, help="score table (.parquet)")


def run(args) -> None:
    m = section(args.params, "measure")
    s = section(args.params, "sample")
    device = resolve_device(args.device)
    data = load_sample(args.sample)
    with_pred = args.what == "pred"
    spec = MeasureSpec(data.meta["kind"], m.gamma, m.pred_form, with_pred=with_pred, seed=s.seed)
    model = load_model(args.teacher)
    df, meta = measure_initial(model, data, spec, s.batch_size, device, (f"k_{args.what}",))
    meta.update({"model": str(args.teacher), "task": data.meta["task"]})
    if not with_pred:  # K_rep does not depend on these
        meta.pop("gamma")
        meta.pop("pred_form")
    write_scores(df, args.out, meta)
    print(f"measure {args.what}: {len(df)} units -> {args.out}")


def main(argv: list[str] | None = None) -> int:
    return stage_main(__doc__, add_args, run, argv)


if __name__ == "__main__":
    exit_with(main())
