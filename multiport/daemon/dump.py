"""
SIGUSR2: a table of every port's counters written to the log, like
xinetd's state dump.  (SIGUSR1 belongs to twistd's log rotation; with
C{twistd --debug}, SIGUSR2 is taken for the debugger.)
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from multiport.daemon.signals import OnSignal
from multiport.handlers.interface import PortStatus
from multiport.text import alignTable

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


_DATAGRAM_COLUMNS = (
    "port",
    "handler",
    "state",
    "datagrams in",
    "datagrams out",
    "received",
    "sent",
    "dropped",
    "sessions",
    "errors",
)


def datagramTable(ports: Sequence[PortStatus]) -> str:
    """
    The counters of the UDP ports among C{ports} as a plain-text table
    (its own columns: a UDP port has no connections), or C{""}.
    """
    rows = [_DATAGRAM_COLUMNS]
    for port in ports:
        if not port.config.datagram:
            continue
        counters: Any = port.counters
        dropped = counters["dropped_by_reason"]
        rows.append(
            (
                port.name,
                port.config.handler,
                "listening" if port.listening else "stopped",
                str(counters["datagrams"]["received"]),
                str(counters["datagrams"]["sent"]),
                str(counters["bytes"]["received"]),
                str(counters["bytes"]["sent"]),
                " ".join(f"{k}={v}" for k, v in sorted(dropped.items())) or "0",
                str(counters["sessions"]),
                str(counters["errors"]["protocol"]),
            )
        )
    return alignTable(rows, left=3) if len(rows) > 1 else ""


def statsTable(ports: Sequence[PortStatus]) -> str:
    """
    The counters of C{ports} as a plain-text table; the UDP ports in a
    second table of their own.
    """
    udp = datagramTable(ports)
    tcp = _connectionTable([p for p in ports if not p.config.datagram])
    return tcp + "\n" + udp if udp else tcp


def _connectionTable(ports: Sequence[PortStatus]) -> str:
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
    return alignTable(rows, left=3)


class StatsDumpService(OnSignal):
    """
    Writes the counters table to the log on SIGUSR2 (while running).
    """

    name = "multiport:stats-dump"

    def __init__(
        self,
        ports: Callable[[], Sequence[PortStatus]],
        reactor: IReactorFromThreads,
        signalNumber: int = signal.SIGUSR2,
    ) -> None:
        super().__init__(signalNumber, self.dump, reactor)
        self._ports = ports

    def dump(self) -> None:
        """
        Log the table of every port's counters.
        """
        log.info("port counters:\n{table}", table=statsTable(self._ports()))
