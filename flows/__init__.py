"""Prefect flows over the stages: one checkpoint (compress) or many (batch).

Importing the package applies the embedded defaults (local Prefect home, local MLflow
store) before any flow module imports prefect or mlflow.
"""

from flows import settings  # noqa: F401
