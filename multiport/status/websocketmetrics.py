"""
The WebSocket families in C{/metrics}, for every port that served
WebSocket whatever its handler (the C{websocket} handler's, or a plugin's
endpoint): connections open now, messages and payload bytes each way,
refused handshakes by reason and closes by code.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from multiport.handlers.interface import PortStatus
from multiport.ports.websocketcounters import (
    BYTES,
    CLOSES,
    CONNECTIONS,
    HANDSHAKE_FAILURES,
    MESSAGES,
)

#: Handler counter name to (family, help, its own labels).
_COUNTERS = {
    MESSAGES: (
        "multiport_websocket_messages",
        "WebSocket messages, by direction (in: from clients, out: to them).",
        ("direction",),
    ),
    BYTES: (
        "multiport_websocket_bytes",
        "WebSocket message payload bytes, by direction.",
        ("direction",),
    ),
    HANDSHAKE_FAILURES: (
        "multiport_websocket_handshake_failures",
        "WebSocket upgrade requests refused, by reason.",
        ("reason",),
    ),
    CLOSES: (
        "multiport_websocket_closes",
        "WebSocket connections ended, by close code and by the side that "
        "sent it first (1006: no closing handshake).",
        ("code", "by"),
    ),
}


def webSocketFamilies(
    rows: list[tuple[PortStatus, list[str]]], labelNames: Sequence[str]
) -> Iterator[Metric]:
    """
    The WebSocket families for the ports among C{rows} that have
    WebSocket counters; none when no port has.
    """
    connections = GaugeMetricFamily(
        "multiport_websocket_connections",
        "WebSocket connections open now.",
        labels=labelNames,
    )
    families = {
        counter: CounterMetricFamily(name, help, labels=[*labelNames, *own])
        for counter, (name, help, own) in _COUNTERS.items()
    }
    for status, labels in rows:
        counters = status.handlerCounters
        if not any(name == CONNECTIONS for name, _ in counters):
            continue
        open = 0
        for (counter, counterLabels), value in sorted(counters.items()):
            if counter == CONNECTIONS:
                open += value
            elif counter in _COUNTERS:
                own = dict(counterLabels)
                family = families[counter]
                names = _COUNTERS[counter][2]
                family.add_metric([*labels, *(own.get(n, "") for n in names)], value)
        connections.add_metric(labels, open)
    if connections.samples:
        yield connections
        yield from families.values()
