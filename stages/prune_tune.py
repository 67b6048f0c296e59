"""Stage prune_tune: the sublayer loop (iterative, or one-shot from the searched masks), or a
baseline's finish (kwon: mask rescaling; magnitude, random: nothing), then surgery.

Iterative: re-measures on the partially pruned model at every sublayer (iteration 0 comes
from the score tables) and writes all per-iteration tables. One-shot: applies the masks of
the search stage and tunes sublayers bottom-up. A baseline applies the search stage's masks
(its per-iteration table is empty). Writes the pruned model with report.json.
"""

from __future__ import annotations

from dataclasses import dataclass

from kprune.config import PruneConfig, prune_config
from kprune.data.sample import load_sample
from kprune.device import resolve_device
from kprune.models.checkpoint import load_model, save_pruned
from kprune.models.loading import load_tokenizer
from kprune.pruning.assemble import cut, prune_and_tune
from kprune.pruning.budget import with_table
from kprune.pruning.flops import flops_of
from kprune.pruning.masks import load_masks
from kprune.pruning.score_tables import read_knowledge, read_scores, write_scores
from kprune.report import run_fields
from stages.common import exit_with, stage_main


def add_args(p):
    p.add_argument("--teacher", required=True)
    p.add_argument("--sample", required=True)
    p.add_argument("--rep", required=True)
    p.add_argument("--pred", required=True)
    p.add_argument("--masks", required=True, help="masks of the search stage")
    p.add_argument("--reduction", type=float, help="overrides search.reduction")
    p.add_argument(
        "--latency-table", help="the latency stage's table (read with search.budget: latency)"
    )
    p.add_argument("--out", required=True, help="pruned model folder")
    p.add_argument("--iterations", required=True, help="per-iteration score table (.parquet)")


@dataclass(frozen=True)
class Inputs:
    teacher: str
    sample: str
    rep: str
    pred: str
    masks: str


def make(inp: Inputs, out: str, iterations: str, cfg: PruneConfig, device: str = "auto") -> dict:
    """Run the loop (or the baseline's finish), cut the model, save it with its report;
    returns the report."""
    cfg = cfg.resolved()
    data = load_sample(inp.sample)
    model = load_model(inp.teacher)
    masks, found = load_masks(inp.masks)
    kind, dev = data.meta["kind"], resolve_device(device)
    initial = None
    if cfg.method.scorer is None:
        initial, rep, _ = read_knowledge(inp.rep, inp.pred, cfg.measure)
    else:
        rep, _ = read_scores(inp.rep)
    seconds = found.get("seconds", {}) if cfg.method.scorer else {}
    tuned, masks, report, table = prune_and_tune(
        model, data, kind, cfg, dev, masks, seconds, initial=initial
    )
    if table is None or not len(table):
        table = rep.iloc[:0]
    flops = flops_of(model, data)
    report.update(run_fields(data.meta, cfg, dev, teacher=inp.teacher))
    pruned = cut(tuned, masks, report)
    save_pruned(pruned, out, masks, load_tokenizer(inp.teacher), report)
    write_scores(
        table,
        iterations,
        {
            "sample": data.meta["fingerprint"],
            "gamma": cfg.measure.gamma,
            "mode": cfg.prune_tune.mode,
            "flops_model": vars(flops),
        },
    )
    return report


def run(args) -> None:
    cfg = prune_config(args.params)
    if args.reduction is not None:
        cfg = cfg.replace(reduction=args.reduction)
    cfg = with_table(cfg, args.latency_table)
    inp = Inputs(args.teacher, args.sample, args.rep, args.pred, args.masks)
    report = make(inp, args.out, args.iterations, cfg, args.device)
    print(
        f"prune_tune {cfg.method.name} {report['mode']} r={report['reduction']}: FLOPs kept "
        f"{report['flops_kept']:.3f} -> {args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    return stage_main(__doc__, add_args, run, argv)


if __name__ == "__main__":
    exit_with(main())
