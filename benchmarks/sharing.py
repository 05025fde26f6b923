"""
How C{twistd multiport --workers N} shares a port's work among its
workers, as its status port says: each worker's figures from
C{/status?workers=1}, read once they have settled (the workers report to
the main process once a second, so the figures lag up to a second).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from attrs import frozen

#: How long the totals must stay the same to count as settled when the
#: expected connections never all show: longer than the workers' one-second
#: reporting period.
QUIET = 2.5


@frozen
class WorkerFigures:
    """
    One worker's figures for one port.

    @ivar worker: Its number (0 for a daemon without workers).
    @ivar pid: Its process id (C{None} for a daemon without workers: the
        main process serves the port).
    """

    worker: int
    pid: int | None
    accepted: int
    current: int
    received: int
    sent: int

    def minus(self, earlier: WorkerFigures) -> WorkerFigures:
        """
        What changed since C{earlier} (the same worker's).
        """
        return WorkerFigures(
            self.worker,
            self.pid,
            self.accepted - earlier.accepted,
            self.current,
            self.received - earlier.received,
            self.sent - earlier.sent,
        )


def _figures(worker: int, pid: int | None, entry: Mapping[str, Any]) -> WorkerFigures:
    connections = entry.get("connections") or {}
    transferred = entry.get("bytes") or {}
    return WorkerFigures(
        worker,
        pid,
        int(connections.get("accepted", 0)),
        int(connections.get("current", 0)),
        int(transferred.get("received", 0)),
        int(transferred.get("sent", 0)),
    )


def portFigures(document: Mapping[str, Any], port: int) -> list[WorkerFigures]:
    """
    Each worker's figures for C{port} from a C{/status?workers=1} document,
    by worker number; a daemon without workers (C{--workers 1}) has no
    per-worker list, and its port's own figures are its one "worker".

    @raise LookupError: if the document has no such port.
    """
    for entry in document.get("ports", []):
        if entry.get("port") == port and entry.get("handler") != "status":
            if "workers" not in entry:
                return [_figures(0, None, entry)]
            return sorted(
                (_figures(int(w["worker"]), w.get("pid"), w) for w in entry["workers"]),
                key=lambda figures: figures.worker,
            )
    raise LookupError(f"no port {port} in the status document")


def smallestShare(values: Sequence[float]) -> float:
    """
    The smallest of C{values} as a percentage of their total: 50 for two
    workers that did the same, 0 for a worker that did nothing (and for no
    work at all), 100 for one worker alone.
    """
    total = sum(values)
    if not values or total <= 0:
        return 0.0
    return 100 * min(values) / total


def fetchStatus(statusPort: int, timeout: float = 5) -> dict[str, Any]:
    """
    The C{/status?workers=1} document of the status port on 127.0.0.1.
    """
    url = f"http://127.0.0.1:{statusPort}/status?workers=1"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def settle(
    fetch: Callable[[], Mapping[str, Any]],
    port: int,
    workers: int,
    minimum: int,
    timeout: float = 20,
    quiet: float = QUIET,
    interval: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[WorkerFigures]:
    """
    Poll C{fetch} (a status document) until C{port}'s figures have settled:
    all C{workers} listed, and either at least C{minimum} connections
    accepted with none still open, or the totals unchanged for C{quiet}
    seconds.  A status port not answering yet is polled again.

    @raise RuntimeError: if they have not settled within C{timeout} seconds.
    """
    deadline = clock() + timeout
    last: list[WorkerFigures] | None = None
    lastTotals: tuple[int, ...] | None = None
    since = clock()
    problem = "no answer"
    while True:
        try:
            figures: list[WorkerFigures] | None = portFigures(fetch(), port)
        except (OSError, ValueError, LookupError) as e:
            figures, problem = None, f"{type(e).__name__}: {e}"
        now = clock()
        if figures is not None and len(figures) == workers:
            accepted = sum(f.accepted for f in figures)
            current = sum(f.current for f in figures)
            if accepted >= minimum and current == 0:
                return figures
            totals = (accepted, current, *(f.accepted for f in figures))
            if totals != lastTotals:
                lastTotals, since = totals, now
            elif now - since >= quiet:
                return figures
            last = figures
            problem = f"{accepted} accepted of {minimum}, {current} still open"
        elif figures is not None:
            problem = f"{len(figures)} of {workers} workers reporting"
        if now > deadline:
            raise RuntimeError(
                f"port {port}'s figures did not settle within {timeout}s "
                f"({problem}; last: {last})"
            )
        sleep(interval)
