"""
Live counters: per port (kept by the port's wrapper) and per handler.

They are plain integers updated in place on the connection path: no locks,
no calls into a metrics library per byte.  Readers take a snapshot.  A
port's byte totals are its closed connections' bytes plus the open ones'
own counts, summed when read: a read or write adds to one count only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from attrs import define, field


@define
class PortCounters:
    """
    One port's figures.

    Definitions: I{accepted} counts connections handed to the handler,
    I{rejected} those turned away before it (never also accepted), I{closed}
    the accepted ones that ended; so C{accepted == closed + current} always.

    @ivar rejected: Rejected connections by reason (C{"max_connections"}...).
    @ivar bytesReceived: Application bytes from clients (after TLS): those
        of the closed connections, and the open ones' counts so far.
    @ivar bytesSent: Application bytes to clients (before TLS), likewise.
    @ivar tlsHandshakeFailures: TLS connections that ended before their
        handshake completed although the client had sent at least one byte
        (a load balancer's bare TCP check is no failure).
    @ivar protocolErrors: Connections on which the handler raised.
    @ivar listeningSince: When the port started listening (POSIX time), or
        C{None} while it is not listening.
    @ivar openConnections: The port's open connections, each counting its
        own bytes (C{received}, C{sent}): a connection adds only to its own
        count per read and write, and its bytes move to the port's totals
        when it closes (L{addClosed}); the totals sum the open ones when
        asked.
    """

    current: int = 0
    accepted: int = 0
    closed: int = 0
    rejected: dict[str, int] = field(factory=dict)
    _closedReceived: int = field(default=0, alias="bytesReceived")
    _closedSent: int = field(default=0, alias="bytesSent")
    tlsHandshakeFailures: int = 0
    protocolErrors: int = 0
    listeningSince: float | None = None
    openConnections: Iterable[Any] = field(default=(), repr=False, eq=False)

    def _open(self, count: str) -> int:
        """
        The open connections' own C{count} (C{received} or C{sent}), summed.
        """
        return sum(getattr(c, count) for c in self.openConnections)

    @property
    def bytesReceived(self) -> int:
        return self._closedReceived + self._open("received")

    @bytesReceived.setter
    def bytesReceived(self, value: int) -> None:
        self._closedReceived = value - self._open("received")

    @property
    def bytesSent(self) -> int:
        return self._closedSent + self._open("sent")

    @bytesSent.setter
    def bytesSent(self, value: int) -> None:
        self._closedSent = value - self._open("sent")

    def addClosed(self, received: int, sent: int) -> None:
        """
        A connection that counted C{received} and C{sent} bytes is leaving
        L{openConnections}: its bytes join the totals.
        """
        self._closedReceived += received
        self._closedSent += sent

    def reject(self, reason: str) -> None:
        """
        Count one connection turned away for C{reason}.
        """
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def snapshot(self) -> Mapping[str, object]:
        """
        The figures now, as a plain mapping (the shape of C{/status}).
        """
        return {
            "connections": {
                "current": self.current,
                "accepted": self.accepted,
                "closed": self.closed,
                "rejected": sum(self.rejected.values()),
            },
            "rejected_by_reason": dict(self.rejected),
            "bytes": {"received": self.bytesReceived, "sent": self.bytesSent},
            "errors": {
                "tls_handshake": self.tlsHandshakeFailures,
                "protocol": self.protocolErrors,
            },
            "listening_since": self.listeningSince,
        }


LabelSet = tuple[tuple[str, str], ...]

#: The HTTP/2 handler counters of an http port that speaks it, which
#: C{/status}, C{/metrics} and the dashboard show as its HTTP/2 figures:
#: connections and streams (requests) so far and open now, streams the
#: client reset, and connections ended for a flood (label C{kind}:
#: C{ping_settings}, or C{rapid_reset} for CVE-2023-44487).
HTTP2_CONNECTIONS = "http2_connections"
HTTP2_CONNECTIONS_OPEN = "http2_connections_open"
HTTP2_STREAMS = "http2_streams"
HTTP2_STREAMS_OPEN = "http2_streams_open"
HTTP2_RESETS = "http2_resets"
HTTP2_FLOODS = "http2_floods"
#: The kinds of flood an HTTP/2 connection is ended for (C{http2_floods}).
HTTP2_FLOOD_KINDS = ("ping_settings", "rapid_reset")
HTTP2_COUNTERS = (
    HTTP2_CONNECTIONS,
    HTTP2_CONNECTIONS_OPEN,
    HTTP2_STREAMS,
    HTTP2_STREAMS_OPEN,
    HTTP2_RESETS,
    HTTP2_FLOODS,
)
#: Handler counters of what is open now rather than of events: what a
#: worker process had open ends with it.
CURRENT_COUNTERS = frozenset({HTTP2_CONNECTIONS_OPEN, HTTP2_STREAMS_OPEN})


class HandlerCounters:
    """
    Counters a handler publishes for its port, each named and optionally
    labelled (the relay counts per upstream: C{upstream="db:5432"}).
    """

    def __init__(self) -> None:
        self._values: dict[tuple[str, LabelSet], int] = {}

    def add(self, name: str, amount: int = 1, **labels: str) -> None:
        """
        Add C{amount} to the counter C{name} with C{labels}.
        """
        key = (name, tuple(sorted(labels.items())))
        self._values[key] = self._values.get(key, 0) + amount

    def value(self, name: str, **labels: str) -> int:
        """
        The counter's value now, 0 if it was never added to.
        """
        return self._values.get((name, tuple(sorted(labels.items()))), 0)

    def snapshot(self) -> Mapping[tuple[str, LabelSet], int]:
        """
        Every counter now, keyed by name and sorted labels.
        """
        return dict(self._values)


def publishHTTP2Counters(counters: HandlerCounters) -> None:
    """
    Publish a port's HTTP/2 counters at 0: the port shows its HTTP/2
    figures before its first HTTP/2 client.
    """
    for name in HTTP2_COUNTERS:
        if name != HTTP2_FLOODS:
            counters.add(name, 0)
    for kind in HTTP2_FLOOD_KINDS:
        counters.add(HTTP2_FLOODS, 0, kind=kind)
