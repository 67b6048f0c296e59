"""Stage prune_tune: the sublayer loop (iterative, or one-shot from the searched masks).

Iterative: re-measures on the partially pruned model at every sublayer (iteration 0 comes
from the score tables) and writes all per-iteration tables. One-shot: applies the masks of
the search stage and tunes sublayers bottom-up. Writes the pruned model with report.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from kprune.api import load_model, save_pruned
from kprune.device import resolve_device
from kprune.knowledge import MeasureSpec
from kprune.masks import Masks
from kprune.modeling import load_tokenizer
from kprune.sample import load_sample
from kprune.scores import read_scores, write_scores
from kprune.search import SearchSpec
from kprune.steps import flops_of, knowledge_from_tables, prune_tune
from kprune.surgery import prune_model
from stages.common import exit_with, section, stage_main


def add_args(p):
    p.add_argument("--teacher", required=True)
    p.add_argument("--sample", required=True)
    p.add_argument("--rep", required=True)
    p.add_argument("--pred", required=True)
    p.add_argument("--masks", required=True, help="masks of the search stage")
    p.add_argument("--reduction", type=float, help="overrides search.reduction")
    p.add_argument("--out", required=True, help="pruned model folder")
    p.add_argument("--iterations", required=True, help="per-iteration score table (.parquet)")


def run(args) -> None:
    s, m = section(args.params, "sample"), section(args.params, "measure")
    q, pt = section(args.params, "search"), section(args.params, "prune_tune")
    reduction = q.reduction if args.reduction is None else args.reduction
    device = resolve_device(args.device)
    data = load_sample(args.sample)
    model = load_model(args.teacher)
    rep, rep_meta = read_scores(args.rep)
    pred, _ = read_scores(args.pred)
    initial = knowledge_from_tables(rep, pred, tuple(rep_meta["dims"]))
    mask_file = json.loads(Path(args.masks).read_text())
    masks = Masks.from_dict(mask_file["kept"], mask_file["heads"], mask_file["neurons"])
    res = prune_tune(
        model, data, data.meta["kind"], reduction,
        MeasureSpec(data.meta["kind"], m.gamma, m.pred_form, q.use_pred, s.seed),
        SearchSpec(q.lam, q.mu, q.use_pred, q.use_rep),
        mode=pt.mode, tune=pt.tune, ridge=pt.ridge, batch_size=s.batch_size,
        initial=initial, masks=masks, device=device,
    )
    res.report.update({"task": data.meta["task"], "teacher": str(args.teacher),
                       "params": {"sample": vars(s), "measure": vars(m), "search": vars(q),
                                  "prune_tune": vars(pt)}})
    pruned = prune_model(res.model, res.masks)
    res.report["params_after"] = sum(p.numel() for p in pruned.parameters())
    res.report["params_kept"] = res.report["params_after"] / res.report["params_before"]
    save_pruned(pruned, args.out, res.masks, load_tokenizer(args.teacher), res.report)
    flops = flops_of(model, data)
    write_scores(res.iterations if len(res.iterations) else rep.iloc[:0], args.iterations,
                 {"sample": data.meta["fingerprint"], "gamma": m.gamma, "mode": pt.mode,
                  "flops_model": vars(flops)})
    print(f"prune_tune {pt.mode} r={reduction}: FLOPs kept {res.report['flops_kept']:.3f} "
          f"-> {args.out}")


def main(argv: list[str] | None = None) -> int:
    return stage_main(__doc__, add_args, run, argv)


if __name__ == "__main__":
    exit_with(main())
