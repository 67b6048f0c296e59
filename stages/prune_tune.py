"""Stage prune_tune: the sublayer loop (iterative, or one-shot from the searched masks).

Iterative: re-measures on the partially pruned model at every sublayer (iteration 0 comes
from the score tables) and writes all per-iteration tables. One-shot: applies the masks of
the search stage and tunes sublayers bottom-up. Writes the pruned model with report.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from kprune.checkpoint import load_model, save_pruned
from kprune.config import PruneConfig
from kprune.device import resolve_device
from kprune.flops import flops_of
from kprune.loop import prune_tune
from kprune.masks import Masks
from kprune.measure import knowledge_from_tables
from kprune.modeling import load_tokenizer
from kprune.params import prune_config
from kprune.report import add_pruned
from kprune.sample import load_sample
from kprune.scores import check_tables_match, read_scores, write_scores
from kprune.surgery import prune_model
from stages.common import exit_with, stage_main


def add_args(p):
    p.add_argument("--teacher", required=True)
    p.add_argument("--sample", required=True)
    p.add_argument("--rep", required=True)
    p.add_argument("--pred", required=True)
    p.add_argument("--masks", required=True, help="masks of the search stage")
    p.add_argument("--reduction", type=float, help="overrides search.reduction")
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
    """Run the loop, cut the model, save it with its report; returns the report."""
    data = load_sample(inp.sample)
    model = load_model(inp.teacher)
    rep, rep_meta = read_scores(inp.rep)
    pred, pred_meta = read_scores(inp.pred)
    check_tables_match(rep_meta, pred_meta, cfg.measure)
    initial = knowledge_from_tables(rep, pred, tuple(rep_meta["dims"]))
    mask_file = json.loads(Path(inp.masks).read_text())
    masks = Masks.from_dict(mask_file["kept"], mask_file["heads"], mask_file["neurons"])
    kind = data.meta["kind"]
    res = prune_tune(
        model, data, kind, cfg, initial=initial, masks=masks, device=resolve_device(device)
    )
    res.report.update(
        {"task": data.meta["task"], "teacher": str(inp.teacher), "config": asdict(cfg)}
    )
    pruned = prune_model(res.model, res.masks)
    add_pruned(res.report, pruned)
    save_pruned(pruned, out, res.masks, load_tokenizer(inp.teacher), res.report)
    flops = flops_of(model, data)
    write_scores(
        res.iterations if len(res.iterations) else rep.iloc[:0],
        iterations,
        {
            "sample": data.meta["fingerprint"],
            "gamma": cfg.measure.gamma,
            "mode": cfg.prune_tune.mode,
            "flops_model": vars(flops),
        },
    )
    return res.report


def run(args) -> None:
    cfg = prune_config(args.params)
    if args.reduction is not None:
        cfg = cfg.replace(reduction=args.reduction)
    inp = Inputs(args.teacher, args.sample, args.rep, args.pred, args.masks)
    report = make(inp, args.out, args.iterations, cfg, args.device)
    print(
        f"prune_tune {report['mode']} r={report['reduction']}: FLOPs kept "
        f"{report['flops_kept']:.3f} -> {args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    return stage_main(__doc__, add_args, run, argv)


if __name__ == "__main__":
    exit_with(main())
