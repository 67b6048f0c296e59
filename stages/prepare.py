"""Stage prepare: raw task files -> data/tasks/<task>/{train,dev,test}.parquet."""

from __future__ import annotations

import argparse
import sys

from kprune.config import section
from kprune.data.prepare import prepare_all
from kprune.entry import run_main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--raw", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    def run() -> None:
        cfg = section(args.params, "prepare")
        for task, sizes in prepare_all(args.raw, args.out, list(cfg.tasks), cfg.seed).items():
            print(task, sizes)

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())
