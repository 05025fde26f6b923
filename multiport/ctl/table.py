"""
The tables C{multiport-ctl} prints: the ports and their counters, and the
same with rates per second between two samples (C{watch}).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from multiport.text import alignTable


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return str(value)


_COLUMNS = ("port", "handler", "state", "current", "accepted", "received", "sent")


def _portCells(port: Mapping[str, object]) -> tuple[str, str, str]:
    """
    The name, handler and state cells of a port of C{GET /api/ports}.
    """
    handler = _cell(port.get("handler"))
    if port.get("tls"):
        handler += "+tls"
    if port.get("draining"):
        state = "draining"
    elif port.get("listening"):
        state = "listening"
    elif port.get("listening") is None:
        state = "-"
    else:
        state = "stopped"
    return _cell(port.get("name")), handler, state


def _counters(port: Mapping[str, object]) -> Mapping[str, object]:
    counters = port.get("counters")
    return counters if isinstance(counters, dict) else {}


def portsTable(ports: Sequence[object]) -> str:
    """
    The ports of C{GET /api/ports} as a plain-text table, like the SIGUSR2
    dump's; what an entry lacks shows as C{-}.
    """
    rows = [_COLUMNS]
    for port in ports:
        if not isinstance(port, dict):
            continue
        counters = _counters(port)
        rows.append(
            (
                *_portCells(port),
                _cell(counters.get("current")),
                _cell(counters.get("accepted")),
                _cell(counters.get("bytesReceived")),
                _cell(counters.get("bytesSent")),
            )
        )
    return alignTable(rows, left=3)


#: The counters L{watchTable} shows a rate per second of, and the column.
_RATES = (("accepted", "conn/s"), ("bytesReceived", "in/s"), ("bytesSent", "out/s"))

_WATCH_COLUMNS = (
    "port",
    "handler",
    "state",
    "current",
    "accepted",
    "conn/s",
    "received",
    "in/s",
    "sent",
    "out/s",
)

#: A refresh of C{watch}: when (C{time.monotonic()}) and each port's counters.
Sample = tuple[float, dict[str, Mapping[str, object]]]


def sample(ports: Sequence[object], now: float) -> Sample:
    """
    The counters of C{ports} by port name, taken at C{now}.
    """
    return now, {
        str(port.get("name")): _counters(port)
        for port in ports
        if isinstance(port, dict)
    }


def _rate(
    now: Mapping[str, object],
    before: Mapping[str, object] | None,
    key: str,
    seconds: float,
) -> str:
    if before is None or seconds <= 0:
        return "-"
    new, old = now.get(key), before.get(key)
    if not isinstance(new, int) or not isinstance(old, int) or new < old:
        return "-"
    return f"{(new - old) / seconds:.0f}"


def watchTable(ports: Sequence[object], now: Sample, before: Sample | None) -> str:
    """
    The table of C{watch}: L{portsTable}'s columns with the rate per second
    of new connections, bytes received and bytes sent since C{before}
    beside the totals (C{-} on the first refresh, for a port that is new,
    or for a counter that went back).
    """
    seconds = now[0] - before[0] if before is not None else 0.0
    rows = [_WATCH_COLUMNS]
    for port in ports:
        if not isinstance(port, dict):
            continue
        counters = _counters(port)
        old = before[1].get(str(port.get("name"))) if before is not None else None
        rates = [_rate(counters, old, key, seconds) for key, _ in _RATES]
        rows.append(
            (
                *_portCells(port),
                _cell(counters.get("current")),
                _cell(counters.get("accepted")),
                rates[0],
                _cell(counters.get("bytesReceived")),
                rates[1],
                _cell(counters.get("bytesSent")),
                rates[2],
            )
        )
    return alignTable(rows, left=3)
