"""
The C{/status} document: the daemon and every port, as plain JSON values.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

from attrs import frozen
from zope.interface import implementer

from multiport.handlers.interface import IDaemonView, PortStatus
from multiport.ports.counters import LabelSet
from multiport.ports.websocketcounters import webSocketReport
from multiport.status.drainstate import drainReport
from multiport.status.http2figures import http2Figures

#: Each worker's number, process id (L{None} while it has none) and ports.
WorkerStatus = Sequence[tuple[int, int | None, Sequence[PortStatus]]]


def workerStatusOf(view: IDaemonView) -> Callable[[], WorkerStatus] | None:
    """
    The view's C{workerStatus} method: a daemon with worker processes
    reports each one's figures too; L{None} for any other view.
    """
    workerStatus: Callable[[], WorkerStatus] | None = getattr(
        view, "workerStatus", None
    )
    return workerStatus


def peersOf(view: IDaemonView) -> tuple[str, ...]:
    """
    The other instances the daemon was told of (C{[cluster] peers}); none
    for a view without them.
    """
    peers: tuple[str, ...] = getattr(view, "peers", ())
    return peers


@implementer(IDaemonView)
@frozen
class NoDaemon:
    """
    The view a status port reports when its context has no daemon (a port
    built outside a L{multiport.daemon.service.PortsService}): no ports.
    """

    version: str
    started: float

    def portStatus(self) -> list[PortStatus]:
        """
        No ports.
        """
        return []


def portNumber(status: PortStatus) -> int:
    """
    The port's real number: from its name once bound (C{tcp:HOST:PORT}),
    else the configured one.
    """
    _, _, number = status.name.rpartition(":")
    if number.isascii() and number.isdigit():
        return int(number)
    return status.config.port


def handlerCounterList(
    counters: Mapping[tuple[str, LabelSet], int],
) -> list[dict[str, object]]:
    """
    A handler's published counters as a list sorted by name and labels.
    """
    return [
        {"name": name, "labels": dict(labels), "value": value}
        for (name, labels), value in sorted(counters.items())
    ]


def webSocketEntry(
    counters: Mapping[tuple[str, LabelSet], int],
) -> dict[str, object]:
    """
    C{{"websocket": ...}} (L{webSocketReport}) for a port with WebSocket
    counters, else nothing.
    """
    report = webSocketReport(counters)
    return {} if report is None else {"websocket": report}


def portReport(status: PortStatus) -> dict[str, object]:
    """
    One port's entry in C{/status}: its configuration, state and figures
    (every key of L{multiport.ports.counters.PortCounters.snapshot}).
    """
    config = status.config
    http2 = http2Figures(status.handlerCounters)
    return {
        "name": status.name,
        "interface": config.interface,
        "port": portNumber(status),
        "handler": config.handler,
        "protocol": config.protocol,
        "tls": config.tls is not None,
        "listening": status.listening,
        "draining": status.draining,
        **status.counters,
        "certificate_expiry": status.certificateExpiry,
        # Only ACME ports have the key: their certificate's renewal.
        **({} if status.acme is None else {"acme": dict(status.acme)}),
        "handler_counters": handlerCounterList(status.handlerCounters),
        # Only ports that served WebSocket have the key.
        **webSocketEntry(status.handlerCounters),
        # Only ports that speak HTTP/2 have the key.
        **({} if http2 is None else {"http2": http2}),
    }


def daemonReport(
    view: IDaemonView, now: float, perWorker: bool = False
) -> dict[str, object]:
    """
    The whole C{/status} document at time C{now}; with C{perWorker}, each
    port also lists its figures in each worker process (when the daemon
    has workers).
    """
    started = float(view.started)
    ports = [portReport(status) for status in view.portStatus()]
    workerStatus = workerStatusOf(view)
    if perWorker and workerStatus is not None:
        byName: dict[str, list[dict[str, object]]] = {}
        for index, pid, statuses in workerStatus():
            for status in statuses:
                byName.setdefault(status.name, []).append(
                    {
                        "worker": index,
                        "pid": pid,
                        "listening": status.listening,
                        "connections": status.counters.get("connections"),
                        "bytes": status.counters.get("bytes"),
                        **(
                            {"datagrams": status.counters.get("datagrams")}
                            if status.config.datagram
                            else {}
                        ),
                    }
                )
        for port in ports:
            port["workers"] = byName.get(str(port["name"]), [])
    return {
        "version": view.version,
        # The main process: after an upgrade, the new one's.
        "pid": os.getpid(),
        "started": started,
        "now": now,
        "uptime_s": max(0.0, now - started),
        "drain": drainReport(view),
        "peers": list(peersOf(view)),
        "ports": ports,
    }


def figure(counters: Mapping[str, object], group: str, key: str) -> int:
    """
    One number of a L{PortStatus.counters} snapshot (C{"bytes"},
    C{"sent"}), 0 if absent.
    """
    values = counters.get(group)
    if isinstance(values, Mapping):
        value = values.get(key, 0)
        if isinstance(value, int | float):
            return int(value)
    return 0


def rejectedByReason(counters: Mapping[str, object]) -> dict[str, int]:
    """
    The rejected connections of a snapshot by reason.
    """
    reasons = counters.get("rejected_by_reason")
    if not isinstance(reasons, Mapping):
        return {}
    return {str(k): int(v) for k, v in reasons.items() if isinstance(v, int | float)}
