"""The flows' entry wrapper: a Prefect server that stops answering in the middle of a flow
is one line that says what was kept and what to do, not a traceback and minutes of retries;
the temporary Prefect server of a flow that was killed (it outlives its flow) is stopped by
the next flow.

Prefect 3 runs the tasks in the flow's own process and reports their states to the server;
when the server dies the work goes on, the reports fail one by one (each after retries), and
the flow fails at its end. The outputs of the tasks that finished are complete on disk (each
written atomically, keyed on its inputs), so a rerun reuses them.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from flows import settings
from flows.tracking import answers_health
from kprune.entry import run_main
from kprune.errors import KPruneError, first_line

# what Prefect logs for every state report it cannot deliver: replaced by the one line
_REPORT_FAILURES = {
    "prefect.events.clients": "Unable to connect",
    "prefect._internal.concurrency": "EventsWorker",
    "prefect.flow_runs": None,  # "Encountered exception ... ConnectError", with a traceback
}


def prefect_api() -> str | None:
    """The configured Prefect server (None: a temporary local one per flow run)."""
    return os.environ.get("PREFECT_API_URL") or None


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


def stop_orphaned_servers() -> list[int]:
    """Stop the temporary Prefect servers that flows killed before they could stop them left
    running (orphans adopted by init, serving this PREFECT_HOME); returns their pids. Linux
    only (reads /proc); elsewhere nothing is done."""
    import signal
    from pathlib import Path

    home = os.environ.get("PREFECT_HOME", "")
    stopped = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1] != "1":
                continue  # its parent is alive
            if b"prefect.server.api.server:create_app" not in proc.joinpath("cmdline").read_bytes():
                continue
            environ = proc.joinpath("environ").read_bytes().split(b"\0")
            if b"PREFECT__SERVER_EPHEMERAL=1" not in environ:
                continue
            if f"PREFECT_HOME={home}".encode() not in environ:
                continue
            os.kill(int(proc.name), signal.SIGTERM)
            stopped.append(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    return stopped


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
        for pid in [] if url else stop_orphaned_servers():
            logging.getLogger("kprune.flows").warning(
                "stopped the temporary Prefect server (pid %d) a killed flow left running", pid
            )
        try:
            return run()
        except Exception as exc:
            if not url or answers_health(url):
                raise
            lost.append(url)
            raise KPruneError(
                f"Prefect server {url} stopped answering during the flow ({first_line(exc)[:120]}); "
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
