"""Prefect flows over the stages: one checkpoint (compress) or many (batch).

Importing the package checks that the pipeline extra is installed, then applies the embedded
defaults (local Prefect home, local MLflow store) before any flow module imports prefect or
mlflow.
"""

import sys

from kprune.extras import PIPELINE, first_missing, missing_message

if _missing := first_missing("prefect", "prefect_dask", "mlflow"):
    print(
        f"kprune: error: {missing_message(PIPELINE, _missing, 'running the flows')}",
        file=sys.stderr,
    )
    sys.exit(2)

from flows import settings  # noqa: F401
