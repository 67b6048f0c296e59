"""The flows' entry wrapper: a Prefect server that stops answering in the middle of a flow
is one line that says what was kept and what to do, not a traceback and minutes of retries.

Prefect 3 runs the tasks in the flow's own process and reports their states to the server;
when the server dies the work goes on, the reports fail one by one (each after retries), and
the flow fails at its end. The outputs of the tasks that finished are complete on disk (each
written atomically, keyed on its inputs), so a rerun reuses them.
"""

from __future__ import annotations

import logging
import os
import sys
import urllib.request
from collections.abc import Callable

from flows import settings
from kprune.entry import run_main
from kprune.errors import KPruneError

# what Prefect logs for every state report it cannot deliver: replaced by the one line
_REPORT_FAILURES = {
    "prefect.events.clients": "Unable to connect",
    "prefect._internal.concurrency": "EventsWorker",
    "prefect.flow_runs": None,  # "Encountered exception ... ConnectError", with a traceback
}


def prefect_api() -> str | None:
    """The configured Prefect server (None: a temporary local one per flow run)."""
    return os.environ.get("PREFECT_API_URL") or None


def api_answers(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as resp:
            return resp.status == 200
    except Exception:
        return False


class _DropReportFailures(logging.Filter):
    """Drop the records about reports that cannot reach the server (their message starts with
    ``text``, or they carry a connection error): the flow ends with one line instead."""

    def __init__(self, text: str | None):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        import httpx

        if self.text and self.text in record.getMessage()[:200]:
            return False
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, httpx.TransportError)


def flow_main(run: Callable[[], int | None]) -> int:
    """``run_main(run)``, where a flow that fails because the configured Prefect server stopped
    answering is one line; the process then exits without draining Prefect's undeliverable
    reports (which would retry each for seconds)."""
    url = prefect_api()
    if url:
        for name, text in _REPORT_FAILURES.items():
            logging.getLogger(name).addFilter(_DropReportFailures(text))
    lost: list[str] = []

    def guarded() -> int | None:
        try:
            return run()
        except Exception as exc:
            if not url or api_answers(url):
                raise
            lost.append(url)
            first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
            raise KPruneError(
                f"Prefect server {url} stopped answering during the flow ({first or type(exc).__name__}); "
                f"the outputs of the tasks that finished are kept in {settings.FLOW_DATA}: rerun "
                "the same command when it is back (they are reused), or unset PREFECT_API_URL "
                "to run on a temporary local server"
            ) from None

    code = run_main(guarded)
    if lost:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
