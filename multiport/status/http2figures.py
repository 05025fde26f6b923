"""
The HTTP/2 figures of the ports that speak it, in C{/status} (a port's
C{http2} key) and in C{/metrics} (the C{multiport_http2_*} families).

They come from the handler counters that L{multiport.ports.counters} names
(C{http2_streams}...): the http handler publishes them, at 0, on every TLS
port where HTTP/2 is on, so a port shows them before its first HTTP/2
client.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from multiport.handlers.interface import PortStatus
from multiport.ports.counters import (
    HTTP2_CONNECTIONS,
    HTTP2_CONNECTIONS_OPEN,
    HTTP2_FLOOD_KINDS,
    HTTP2_FLOODS,
    HTTP2_RESETS,
    HTTP2_STREAMS,
    HTTP2_STREAMS_OPEN,
    LabelSet,
)

#: (family name, counter, help) of the plain counters and gauges.
_COUNTERS = (
    (
        "multiport_http2_connections",
        HTTP2_CONNECTIONS,
        "HTTP/2 connections (TLS with ALPN h2) the port took.",
    ),
    (
        "multiport_http2_streams",
        HTTP2_STREAMS,
        "HTTP/2 streams (one a request) clients opened.",
    ),
    (
        "multiport_http2_stream_resets",
        HTTP2_RESETS,
        "HTTP/2 streams the client reset (RST_STREAM).",
    ),
)
_GAUGES = (
    (
        "multiport_http2_connections_current",
        HTTP2_CONNECTIONS_OPEN,
        "HTTP/2 connections open now.",
    ),
    (
        "multiport_http2_streams_current",
        HTTP2_STREAMS_OPEN,
        "HTTP/2 streams open now (requests received and not yet answered).",
    ),
)
_FLOODS = "multiport_http2_floods"

#: Every family name defined here (without C{_total}).
HTTP2_FAMILIES = frozenset({_FLOODS, *(name for name, _, _ in _COUNTERS + _GAUGES)})


def http2Figures(
    counters: Mapping[tuple[str, LabelSet], int],
) -> dict[str, object] | None:
    """
    A port's HTTP/2 figures from its handler counters, as C{/status} shows
    them; L{None} for a port that does not speak HTTP/2.
    """
    if (HTTP2_CONNECTIONS, ()) not in counters:
        return None

    def value(name: str, *labels: tuple[str, str]) -> int:
        return counters.get((name, labels), 0)

    return {
        "connections": {
            "current": value(HTTP2_CONNECTIONS_OPEN),
            "total": value(HTTP2_CONNECTIONS),
        },
        "streams": {
            "current": value(HTTP2_STREAMS_OPEN),
            "total": value(HTTP2_STREAMS),
        },
        "stream_resets": value(HTTP2_RESETS),
        "floods": {
            kind: value(HTTP2_FLOODS, ("kind", kind)) for kind in HTTP2_FLOOD_KINDS
        },
    }


def http2Families(
    rows: list[tuple[PortStatus, list[str]]], labelNames: Sequence[str]
) -> Iterator[Metric]:
    """
    The C{multiport_http2_*} families for the ports among C{rows} that speak
    HTTP/2; none when no port does.
    """
    counters = [
        (CounterMetricFamily(name, help, labels=labelNames), counter)
        for name, counter, help in _COUNTERS
    ]
    gauges = [
        (GaugeMetricFamily(name, help, labels=labelNames), counter)
        for name, counter, help in _GAUGES
    ]
    floods = CounterMetricFamily(
        _FLOODS,
        "HTTP/2 connections ended with GOAWAY ENHANCE_YOUR_CALM for a flood, "
        "by kind (ping_settings: SETTINGS and PING frames; rapid_reset: "
        "streams reset at once, CVE-2023-44487).",
        labels=[*labelNames, "kind"],
    )
    speaking = False
    for status, labels in rows:
        figures = status.handlerCounters
        if (HTTP2_CONNECTIONS, ()) not in figures:
            continue
        speaking = True
        for family, counter in counters:
            family.add_metric(labels, figures.get((counter, ()), 0))
        for gauge, counter in gauges:
            gauge.add_metric(labels, figures.get((counter, ()), 0))
        for kind in HTTP2_FLOOD_KINDS:
            floods.add_metric(
                [*labels, kind], figures.get((HTTP2_FLOODS, (("kind", kind),)), 0)
            )
    if speaking:
        yield from (family for family, _ in counters)
        yield from (gauge for gauge, _ in gauges)
        yield floods
