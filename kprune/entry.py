"""What every command-line entry point shares (the CLI, the DVC stages, the flows, the
benchmark tools): logging, one-line errors instead of tracebacks, and the process's memory."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from kprune.errors import KPruneError


def environment_error(exc: BaseException) -> str | None:
    """The one line for a failure of the machine rather than of kprune: a full disk, a path
    that cannot be written or read. None for anything else (a bug: its traceback is kept)."""
    from kprune.atomic import is_no_space

    where = getattr(exc, "filename", None)
    if is_no_space(exc):
        return f"no space left on the device{f' of {where}' if where else ''}; free space or write elsewhere"
    if isinstance(exc, PermissionError | IsADirectoryError | NotADirectoryError) and where:
        return f"{exc.strerror}: {where}; check the path and its permissions"
    return None


def run_main(fn: Callable[[], int | None]) -> int:
    """Run ``fn``; a KPruneError becomes ``kprune: error: ...`` on stderr and exit code 2."""
    logging.basicConfig(
        level=os.environ.get("KPRUNE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    noisy_loggers = (
        "httpx",
        "urllib3",
        "filelock",
        "transformers",
        "onnxscript",
        "onnx_ir",
    )
    for noisy in noisy_loggers:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # the exporter warns at every export that torchvision (not a dependency) is absent
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    try:
        return fn() or 0
    except KPruneError as exc:
        print(f"kprune: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        line = environment_error(exc)
        if line is None:
            raise
        logging.getLogger("kprune").debug("the error behind the message", exc_info=True)
        print(f"kprune: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kprune: interrupted", file=sys.stderr)
        return 130


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors (an unknown flag, a bad choice, a missing argument)
    are one line, ``kprune: error: what; how to fix``, like every other error."""

    def error(self, message: str) -> NoReturn:
        print(f"kprune: error: {self.prog}: {message}; see {self.prog} --help", file=sys.stderr)
        sys.exit(2)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
