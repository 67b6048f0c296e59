"""Stage search: score tables + lambda, mu, reduction -> one-shot masks (JSON). Cheap.

The masks are what prune_tune applies in one-shot mode. In iterative mode (the default)
prune_tune re-searches at every sublayer and does not read them: there they are the one-shot
preview, the allocation a single search on the teacher's scores would make, kept so that a
change of lambda, mu or R shows its effect in a second without the loop.
"""

from __future__ import annotations

from dataclasses import asdict

from kprune.atomic import write_json
from kprune.config import PruneConfig
from kprune.flops import FlopsModel
from kprune.measure import knowledge_from_tables
from kprune.params import prune_config
from kprune.scores import check_tables_match, read_scores
from kprune.search import search_masks
from stages.common import exit_with, stage_main


def add_args(p):
    p.add_argument("--rep", required=True, help="K_rep table")
    p.add_argument("--pred", required=True, help="K_pred table")
    p.add_argument("--reduction", type=float, help="overrides search.reduction")
    p.add_argument("--out", required=True, help="masks file (.json)")


def make(rep_path: str, pred_path: str, out: str, cfg: PruneConfig) -> dict:
    """One-shot masks from the two score tables; returns kept units per layer."""
    reduction = cfg.search.reduction
    rep, rep_meta = read_scores(rep_path)
    pred, pred_meta = read_scores(pred_path)
    check_tables_match(rep_meta, pred_meta, cfg.measure)
    dims = tuple(rep_meta["dims"])
    k = knowledge_from_tables(rep, pred, dims)
    flops = FlopsModel(**rep_meta["flops_model"])
    spec = cfg.search_spec()
    masks = search_masks(k, flops, reduction, spec)
    write_json(
        out,
        {
            "reduction": reduction,
            "search": asdict(spec),
            "flops_kept": flops.of_masks(masks.heads, masks.neurons)
            / flops.of_counts(dims[0] * dims[1], dims[0] * dims[4]),
            "kept": masks.to_dict(),
            "heads": dims[1],
            "neurons": dims[4],
        },
    )
    return masks.kept_per_layer()


def run(args) -> None:
    cfg = prune_config(args.params)
    if args.reduction is not None:
        cfg = cfg.replace(reduction=args.reduction)
    kept = make(args.rep, args.pred, args.out, cfg)
    r = cfg.search.reduction
    print(f"search r={r}: heads {kept['heads']} neurons {kept['neurons']}")


def main(argv: list[str] | None = None) -> int:
    return stage_main(__doc__, add_args, run, argv)


if __name__ == "__main__":
    exit_with(main())
