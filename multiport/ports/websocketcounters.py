"""
A port's WebSocket figures, kept among its handler counters (so that
workers' figures are summed like any handler's) under the names
L{COUNTER_NAMES}; L{webSocketReport} reads them back for C{/status}, and
C{/metrics} exports them as the C{multiport_websocket_*} families whatever
the port's handler (L{multiport.status.metrics}).
"""

from __future__ import annotations

from collections.abc import Mapping

from multiport.ports.counters import HandlerCounters, LabelSet

#: Open WebSocket connections now (a gauge: up at open, down at close).
CONNECTIONS = "websocket_connections"
#: Whole messages, label C{direction} (C{in}: from clients, C{out}).
MESSAGES = "websocket_messages"
#: Message payload bytes, label C{direction}.
BYTES = "websocket_bytes"
#: Upgrade requests refused, label C{reason}.
HANDSHAKE_FAILURES = "websocket_handshake_failures"
#: Connections ended, labels C{code} (the close code) and C{by} (C{client}
#: or C{server}: who sent it first; 1006, no closing handshake, is the
#: client's).
CLOSES = "websocket_closes"

COUNTER_NAMES = (CONNECTIONS, MESSAGES, BYTES, HANDSHAKE_FAILURES, CLOSES)


class WebSocketCounters:
    """
    The WebSocket counters of one port, written into its handler counters.
    """

    def __init__(self, counters: HandlerCounters) -> None:
        self._counters = counters

    def opened(self) -> None:
        """
        A connection finished its handshake.
        """
        self._counters.add(CONNECTIONS)

    def gone(self) -> None:
        """
        An open connection ended.
        """
        self._counters.add(CONNECTIONS, -1)

    def message(self, direction: str, size: int) -> None:
        """
        One whole message of C{size} bytes went C{direction}.
        """
        self._counters.add(MESSAGES, direction=direction)
        self._counters.add(BYTES, size, direction=direction)

    def handshakeFailed(self, reason: str) -> None:
        """
        An upgrade request was refused for C{reason}.
        """
        self._counters.add(HANDSHAKE_FAILURES, reason=reason)

    def closed(self, code: int, by: str) -> None:
        """
        A connection ended with close C{code}, sent first C{by} one side.
        """
        self._counters.add(CLOSES, code=str(code), by=by)


def webSocketReport(
    counters: Mapping[tuple[str, LabelSet], int],
) -> dict[str, object] | None:
    """
    The C{websocket} block of a port's C{/status} entry, from its handler
    counters; C{None} for a port that never served WebSocket.
    """
    found = {key: value for key, value in counters.items() if key[0] in COUNTER_NAMES}
    if not found:
        return None

    def byLabel(name: str, label: str) -> dict[str, int]:
        table: dict[str, int] = {}
        for (counter, labels), value in sorted(found.items()):
            if counter == name:
                key = dict(labels).get(label, "")
                table[key] = table.get(key, 0) + value
        return table

    messages = byLabel(MESSAGES, "direction")
    sizes = byLabel(BYTES, "direction")
    return {
        "connections": sum(v for (n, _), v in found.items() if n == CONNECTIONS),
        "messages": {"in": messages.get("in", 0), "out": messages.get("out", 0)},
        "bytes": {"in": sizes.get("in", 0), "out": sizes.get("out", 0)},
        "handshake_failures": byLabel(HANDSHAKE_FAILURES, "reason"),
        "close_codes": byLabel(CLOSES, "code"),
    }
