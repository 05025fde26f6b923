"""
The UDP ports' families in C{/metrics}: datagrams and bytes each way,
drops by reason and the relay's open sessions.  A UDP port has no
connections, so it never appears in the connection families.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from multiport.handlers.interface import PortStatus
from multiport.status.report import figure

#: (family name, snapshot group, snapshot key, help) of the UDP counters.
DATAGRAM_COUNTERS = (
    (
        "multiport_datagrams_received",
        "datagrams",
        "received",
        "Datagrams handed to the UDP port's handler.",
    ),
    (
        "multiport_datagrams_sent",
        "datagrams",
        "sent",
        "Datagrams the UDP port sent.",
    ),
)

#: Every family name defined here (without C{_total}).
DATAGRAM_FAMILIES = frozenset(
    {
        "multiport_datagrams_dropped",
        "multiport_udp_sessions",
        *(name for name, _, _, _ in DATAGRAM_COUNTERS),
    }
)


def droppedByReason(counters: Mapping[str, object]) -> dict[str, int]:
    """
    The dropped datagrams of a UDP port's snapshot by reason.
    """
    reasons = counters.get("dropped_by_reason")
    if not isinstance(reasons, Mapping):
        return {}
    return {str(k): int(v) for k, v in reasons.items() if isinstance(v, int | float)}


def datagramFamilies(
    rows: list[tuple[PortStatus, list[str]]], labelNames: Sequence[str]
) -> Iterator[Metric]:
    """
    The UDP families for the UDP ports among C{rows}.
    """
    counters = [
        (CounterMetricFamily(name, help, labels=labelNames), group, key)
        for name, group, key, help in DATAGRAM_COUNTERS
    ]
    dropped = CounterMetricFamily(
        "multiport_datagrams_dropped",
        "Datagrams dropped, by reason (access, rate, too_large, reflection, "
        "send_error, no_upstream, sessions_full).",
        labels=[*labelNames, "reason"],
    )
    sessions = GaugeMetricFamily(
        "multiport_udp_sessions",
        "Client sessions open now (the UDP relay's).",
        labels=labelNames,
    )
    for status, labels in rows:
        if not status.config.datagram:
            continue
        snapshot = status.counters
        for family, group, key in counters:
            family.add_metric(labels, figure(snapshot, group, key))
        for reason, count in sorted(droppedByReason(snapshot).items()):
            dropped.add_metric([*labels, reason], count)
        value = snapshot.get("sessions", 0)
        sessions.add_metric(labels, value if isinstance(value, int) else 0)
    for family, _, _ in counters:
        yield family
    yield dropped
    yield sessions
