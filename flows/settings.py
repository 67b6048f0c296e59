"""Embedded defaults: local Prefect home, local MLflow store. Environment variables win.

Import this before prefect or mlflow so the defaults apply to them.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(os.environ.get("KPRUNE_HOME", Path.cwd())).resolve()
os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# a first start migrates a fresh database; on 2 busy cores that can take longer than 20 s
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# a configured server that dies mid-flow fails the flow after two retries of each report
# (Prefect's default, five, takes minutes); its finished tasks are reused by a rerun
os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "2")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

LOCAL_MLFLOW_URI = f"sqlite:///{ROOT / 'mlflow.db'}"
LOCAL_ARTIFACTS = ROOT / "mlartifacts"
FLOW_DATA = Path(os.environ.get("KPRUNE_FLOW_DIR", ROOT / "data" / "flows"))
# Prefect's cached task results (small records holding output paths) live beside the outputs
RESULTS = Path(os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(FLOW_DATA / ".results")))
