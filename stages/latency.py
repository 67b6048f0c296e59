"""Stage latency: the latency table a latency budget reads -> JSON.

With ``search.budget: latency`` it times shaped copies of the teacher on the runtime of
the ``latency`` section (kprune.pruning.latency_table); run it with the cores to itself. A
table measured elsewhere (``latency.table``, written by ``kprune latency``) is checked
against the teacher's shape and copied instead. With
the FLOPs budget (the paper, the default) nothing is timed: the file records that no table
is needed, and the search and prune_tune stages do not read it.
"""

from __future__ import annotations

from kprune.atomic import write_json
from kprune.config import prune_config
from kprune.deploy.runtime import Runtime
from kprune.models.adapters import get_adapter
from kprune.models.checkpoint import load_model
from kprune.pruning.budget import latency_table, search_budget
from kprune.pruning.latency_table import measure_table
from stages.common import exit_with, stage_main


def add_args(p):
    p.add_argument("--teacher", required=True, help="the teacher folder (its shape is timed)")
    p.add_argument("--out", required=True, help="table file (.json)")


def run(args) -> None:
    cfg = prune_config(args.params)
    if cfg.search.budget != "latency":
        write_json(args.out, {"budget": cfg.search.budget, "table": None})
        print(f"latency: budget {cfg.search.budget}, no table needed -> {args.out}")
        return
    rt = cfg.latency.resolved()
    model = load_model(args.teacher)
    if cfg.latency.table:  # measured elsewhere: checked against the teacher, then copied
        table = latency_table(cfg, model)
        search_budget(cfg, flops=None, dims=get_adapter(model).dims(model), table=table)
    else:
        table = measure_table(model, rt, progress=True)
    table.save(args.out)
    print(
        f"latency {Runtime(**table.runtime).key}: dense {table.dense_ms:.2f} ms measured, "
        f"{table.predicted_dense_ms:.2f} ms predicted; empty {table.base_ms:.2f} ms -> {args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    return stage_main(__doc__, add_args, run, argv)


if __name__ == "__main__":
    exit_with(main())
