"""``kprune doctor``: what this installation can see, on one screen."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

PACKAGES = (
    "kprune",
    "torch",
    "transformers",
    "datasets",
    "prefect",
    "prefect-dask",
    "dask",
    "mlflow",
    "dvc",
    "pyarrow",
    "pandas",
)


def _version(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "not installed"


def _http_ok(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except Exception:
        return False


def _mlflow() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return "local store sqlite:///<project>/mlflow.db (default; MLFLOW_TRACKING_URI unset)"
    if uri.startswith("http"):
        ok = _http_ok(uri.rstrip("/") + "/health")
        state = "reachable" if ok else "UNREACHABLE: runs fall back to the local store"
        return f"{uri} ({state})"
    return f"{uri} (file/database store)"


def _prefect() -> str:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return "temporary local server started by each flow run (default; PREFECT_API_URL unset)"
    ok = _http_ok(url.rstrip("/") + "/health")
    return f"{url} ({'reachable' if ok else 'UNREACHABLE: flows will fail until it answers'})"


def _dvc(root: Path) -> str:
    if not (root / ".dvc").is_dir():
        return f"no DVC repository at {root}"
    try:
        out = subprocess.run(
            [sys.executable, "-m", "dvc", "remote", "list"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
        )
        remotes = out.stdout.strip().replace("\t", " ") or "none (local cache only)"
    except (OSError, subprocess.SubprocessError):
        remotes = "could not run dvc"
    return f"repository at {root}; remotes: {remotes}"


def _device() -> str:
    import torch

    parts = [
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {torch.get_num_threads()}"
    ]
    if torch.cuda.is_available():
        parts.append(f"CUDA: {torch.cuda.get_device_name(0)}")
    else:
        parts.append("no CUDA GPU (--device auto uses the CPU)")
    return "; ".join(parts)


def report(root: Path | None = None) -> str:
    """The doctor's screen as text."""
    root = Path(root or Path.cwd())
    lines = ["kprune doctor", "", f"python        {sys.version.split()[0]} ({sys.executable})"]
    for name in PACKAGES:
        lines.append(f"{name:14s}{_version(name)}")
    data = root / "data"
    usage = shutil.disk_usage(data if data.exists() else root)
    free_gb = usage.free / 1e9
    warn = "  LOW: teachers, samples and pruned models need a few GB" if free_gb < 5 else ""
    lines += [
        "",
        f"device        {_device()}",
        f"mlflow        {_mlflow()}",
        f"prefect       {_prefect()}",
        f"dvc           {_dvc(root)}",
        f"disk          {free_gb:.1f} GB free under {data if data.exists() else root}{warn}",
    ]
    return "\n".join(lines)
