"""Stage prepare: raw task files -> data/tasks/<task>/{train,dev,test}.parquet (each task's
folder replaced atomically, the others left alone)."""

from __future__ import annotations

import argparse
import sys

from kprune.config import section
from kprune.data.fetch import EXTRA_ROOT
from kprune.data.prepare import prepare_all
from kprune.entry import run_main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--raw", default="data/raw", help="the default fetch's folder")
    p.add_argument("--extra", default=EXTRA_ROOT, help="root of the on-demand fetches")
    p.add_argument("--tasks", nargs="*", help="tasks to prepare (default: prepare.tasks)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    def run() -> None:
        cfg = section(args.params, "prepare")
        tasks = args.tasks or list(cfg.tasks)
        for task, sizes in prepare_all(args.raw, args.out, tasks, cfg.seed, args.extra).items():
            print(task, sizes)

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())
