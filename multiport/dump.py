"""
SIGUSR2: a table of every port's counters written to the log, like
xinetd's state dump.  (SIGUSR1 belongs to twistd's log rotation; with
C{twistd --debug}, SIGUSR2 is taken for the debugger.)
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

from multiport.handlers.interface import PortStatus

log = Logger()

_COLUMNS = (
    "port",
    "handler",
    "state",
    "current",
    "accepted",
    "closed",
    "rejected",
    "received",
    "sent",
    "tls errors",
    "errors",
)


def statsTable(ports: Sequence[PortStatus]) -> str:
    """
    The counters of C{ports} as a plain-text table.
    """
    rows = [_COLUMNS]
    for port in ports:
        counters: Any = port.counters
        connections = counters["connections"]
        rows.append(
            (
                port.name,
                port.config.handler + ("+tls" if port.config.tls else ""),
                "listening" if port.listening else "stopped",
                str(connections["current"]),
                str(connections["accepted"]),
                str(connections["closed"]),
                str(connections["rejected"]),
                str(counters["bytes"]["received"]),
                str(counters["bytes"]["sent"]),
                str(counters["errors"]["tls_handshake"]),
                str(counters["errors"]["protocol"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if index < 3 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    )


class StatsDumpService(Service):
    """
    Installs the SIGUSR2 handler while running and restores the previous
    one when stopped.  The handler only schedules the dump on the reactor.
    """

    name = "multiport:stats-dump"

    def __init__(
        self,
        ports: Callable[[], Sequence[PortStatus]],
        reactor: Any,
        signalNumber: int = signal.SIGUSR2,
    ) -> None:
        self._ports = ports
        self._reactor = reactor
        self._signal = signalNumber
        self._previous: Any = None

    def dump(self) -> None:
        """
        Log the table of every port's counters.
        """
        log.info("port counters:\n{table}", table=statsTable(self._ports()))

    def _received(self, number: int, frame: FrameType | None) -> None:
        self._reactor.callFromThread(self.dump)

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(self._signal, self._received)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(self._signal, self._previous)
            self._previous = None
