"""The Hugging Face hub, reached only for names that are not local paths: without a network,
a hub name fails at once in one line (the hub clients would retry for half a minute)."""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

from kprune.errors import KPruneError

CONNECT_TIMEOUT_S = 3.0


@functools.cache
def unreachable_reason() -> str | None:
    """None when the hub endpoint (HF_ENDPOINT, default huggingface.co) accepts a connection,
    else why not."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or type(exc).__name__}"
    return None


def require_hub(what: str, *, offline_var: str, cached: bool = False) -> None:
    """Refuse ``what`` (a hub name) when the hub cannot be reached and nothing is cached; in
    offline mode (``offline_var`` or HF_HUB_OFFLINE set to 1) the hub clients use the cache."""
    if cached or "1" in (os.environ.get(offline_var), os.environ.get("HF_HUB_OFFLINE")):
        return
    reason = unreachable_reason()
    if reason:
        raise KPruneError(
            f"{what} is no local path and the hub cannot be reached ({reason}); pass a local "
            f"folder or file, or check the network (HF_ENDPOINT; {offline_var}=1 uses the cache)"
        )


def model_is_cached(name: str) -> bool:
    """Whether the hub cache holds ``name``'s config.json (then it loads without a network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an invalid repo id, an unreadable cache: not cached
        return False
