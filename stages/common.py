"""What every stage shares: the params sections as typed dataclasses, and the entry wrapper."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from kprune.entry import OneLineParser, run_main


def stage_main(
    doc: str,
    add_args: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], None],
    argv: list[str] | None,
) -> int:
    parser = OneLineParser(description=doc)
    parser.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    add_args(parser)
    args = parser.parse_args(argv)
    return run_main(lambda: run(args))


def exit_with(code: int) -> None:
    sys.exit(code)
