"""``python -m bench``: the benchmark grid (see bench.grid)."""

import sys

from bench.grid import main

sys.exit(main())
