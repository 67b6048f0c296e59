"""Stage search: the masks at the FLOPs budget -> JSON. Cheap for K-prune.

K-prune and its ablations search the two score tables with lambda, mu and the reduction. In
iterative mode (the default) prune_tune re-searches at every sublayer and does not read these
masks: there they are the one-shot preview, the allocation a single search on the teacher's
scores would make, kept so that a change of lambda, mu or R shows its effect in a second
without the loop. In one-shot mode they are what prune_tune applies.

A baseline (method kwon, magnitude or random) scores the teacher's units its own way on the
sample (kwon: label Fisher and its (heads, neurons) search; magnitude; random) and its masks
are what prune_tune applies.
"""

from __future__ import annotations

from kprune.config import PruneConfig, prune_config
from kprune.data.sample import load_sample
from kprune.device import resolve_device
from kprune.errors import KPruneError
from kprune.models.checkpoint import load_model
from kprune.pruning.assemble import choose_masks
from kprune.pruning.budget import with_table
from kprune.pruning.flops import FlopsModel, flops_of
from kprune.pruning.masks import save_masks
from kprune.pruning.score_tables import read_knowledge
from kprune.report import search_fields
from stages.common import exit_with, stage_main


def add_args(p):
    p.add_argument("--rep", required=True, help="K_rep table")
    p.add_argument("--pred", required=True, help="K_pred table")
    p.add_argument("--teacher", help="teacher folder (needed by a baseline method)")
    p.add_argument("--sample", help="sample (needed by a baseline method)")
    p.add_argument("--reduction", type=float, help="overrides search.reduction")
    p.add_argument(
        "--latency-table", help="the latency stage's table (read with search.budget: latency)"
    )
    p.add_argument("--out", required=True, help="masks file (.json)")


def make(
    rep_path: str,
    pred_path: str,
    out: str,
    cfg: PruneConfig,
    teacher: str | None = None,
    sample: str | None = None,
    device: str = "auto",
) -> dict:
    """The masks of ``cfg.method`` (written to ``out``); returns kept units per layer."""
    cfg = cfg.resolved()
    if cfg.method.scorer is None:  # the score tables only: no model to load
        k, _, rep_meta = read_knowledge(rep_path, pred_path, cfg.measure)
        flops = FlopsModel(**rep_meta["flops_model"])
        masks, seconds = choose_masks(cfg, flops, knowledge=k)
    else:
        if teacher is None or sample is None:
            raise KPruneError(
                f"method {cfg.method.name} scores the teacher's units itself; pass --teacher "
                "and --sample to the search stage"
            )
        data = load_sample(sample)
        model = load_model(teacher)
        flops = flops_of(model, data)
        kind, dev = data.meta["kind"], resolve_device(device)
        masks, seconds = choose_masks(cfg, flops, None, model, data, kind, dev)
    info = search_fields(cfg, flops, masks, seconds)
    save_masks(out, masks, info)
    return masks.kept_per_layer()


def run(args) -> None:
    cfg = prune_config(args.params)
    if args.reduction is not None:
        cfg = cfg.replace(reduction=args.reduction)
    cfg = with_table(cfg, args.latency_table)
    kept = make(args.rep, args.pred, args.out, cfg, args.teacher, args.sample, args.device)
    r = cfg.search.reduction
    print(f"search {cfg.method.name} r={r}: heads {kept['heads']} neurons {kept['neurons']}")


def main(argv: list[str] | None = None) -> int:
    return stage_main(__doc__, add_args, run, argv)


if __name__ == "__main__":
    exit_with(main())
