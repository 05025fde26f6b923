"""
C{/metrics}: the daemon's figures for Prometheus, read at scrape time.

Every status port has its own L{CollectorRegistry} (never the global
default one) holding a L{DaemonCollector} and prometheus_client's process
and platform collectors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.logger import Logger

from multiport.handlers.interface import IDaemonView, PortStatus
from multiport.ports.counters import HTTP2_COUNTERS
from multiport.ports.websocketcounters import COUNTER_NAMES as WEBSOCKET_COUNTERS
from multiport.status.datagrammetrics import DATAGRAM_FAMILIES, datagramFamilies
from multiport.status.drainstate import drainStateOf
from multiport.status.http2figures import HTTP2_FAMILIES, http2Families
from multiport.status.report import figure, rejectedByReason, workerStatusOf
from multiport.status.websocketmetrics import webSocketFamilies

log = Logger()

#: The labels every per-port sample has.
PORT_LABELS = ("port", "interface", "handler")

#: (family name, snapshot group, snapshot key, help) of the plain counters.
_COUNTERS = (
    (
        "multiport_connections_accepted",
        "connections",
        "accepted",
        "Connections handed to the port's handler.",
    ),
    (
        "multiport_connections_closed",
        "connections",
        "closed",
        "Accepted connections that ended.",
    ),
    (
        "multiport_bytes_received",
        "bytes",
        "received",
        "Application bytes received from clients (after TLS).",
    ),
    (
        "multiport_bytes_sent",
        "bytes",
        "sent",
        "Application bytes sent to clients (before TLS).",
    ),
    (
        "multiport_tls_handshake_failures",
        "errors",
        "tls_handshake",
        "TLS connections that ended before their handshake completed.",
    ),
    (
        "multiport_protocol_errors",
        "errors",
        "protocol",
        "Connections on which the handler raised.",
    ),
)

#: Every family name this collector defines itself (without C{_total}).
BUILTIN_FAMILIES = frozenset(
    {
        "multiport_info",
        "multiport_start_time_seconds",
        "multiport_connections_current",
        "multiport_connections_rejected",
        "multiport_port_up",
        "multiport_tls_certificate_expiry_timestamp_seconds",
        "multiport_acme_renewal_failures",
        "multiport_acme_next_renewal_timestamp_seconds",
        *(name for name, _, _, _ in _COUNTERS),
        *DATAGRAM_FAMILIES,
        *HTTP2_FAMILIES,
    }
)

_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def metricName(text: str) -> str:
    """
    C{text} as a valid Prometheus name: every other character becomes
    C{_}, and a leading digit gets a C{_} before it.
    """
    name = _UNSAFE.sub("_", text)
    if not name or name[0].isdigit():
        name = "_" + name
    return name


def handlerFamilyName(handler: str, counter: str) -> str:
    """
    The family of a handler-published counter: C{multiport_<handler>_<name>}
    (samples get C{_total}).
    """
    name = metricName(f"multiport_{handler}_{counter}")
    return name.removesuffix("_total")


def handlerLabelName(label: str) -> str:
    """
    A handler counter's label as a Prometheus label; one clashing with a
    per-port label (C{port}...) is renamed C{exported_<label>}, as
    Prometheus itself does.
    """
    name = metricName(label)
    if name in PORT_LABELS:
        return "exported_" + name
    return name


def portLabels(status: PortStatus) -> list[str]:
    """
    The per-port label values, in L{PORT_LABELS} order.
    """
    return [status.name, status.config.interface, status.config.handler]


class DaemonCollector(Collector):
    """
    Every port's figures as Prometheus families, read from the daemon view
    at each scrape.
    """

    def __init__(
        self, view: Callable[[], IDaemonView], perWorker: bool = False
    ) -> None:
        self._view = view
        self._perWorker = perWorker
        self._warned: set[str] = set()

    def collect(self) -> Iterable[Metric]:
        view = self._view()
        statuses = view.portStatus()
        info = GaugeMetricFamily(
            "multiport_info", "multiport's version.", labels=["version"]
        )
        info.add_metric([str(view.version)], 1)
        yield info
        yield GaugeMetricFamily(
            "multiport_start_time_seconds",
            "When the daemon started (POSIX time).",
            value=float(view.started),
        )
        workerStatus = workerStatusOf(view)
        labels: tuple[str, ...]
        if self._perWorker and workerStatus is not None:
            # Series per port and worker: only when asked for, since it
            # multiplies the number of series.
            labels = (*PORT_LABELS, "worker")
            rows = [
                (status, [*portLabels(status), str(index)])
                for index, _, statuses in workerStatus()
                for status in statuses
            ]
        else:
            labels = PORT_LABELS
            rows = [(status, portLabels(status)) for status in statuses]
        yield from self._portFamilies(rows, labels)
        yield from datagramFamilies(rows, labels)
        # WebSocket: its own families, whatever the port's handler.
        yield from webSocketFamilies(rows, labels)
        yield from http2Families(rows, labels)
        yield from self._handlerFamilies(rows, labels)

    def _portFamilies(
        self, rows: list[tuple[PortStatus, list[str]]], labelNames: Sequence[str]
    ) -> Iterator[Metric]:
        current = GaugeMetricFamily(
            "multiport_connections_current",
            "Connections open now.",
            labels=labelNames,
        )
        up = GaugeMetricFamily(
            "multiport_port_up",
            "1 while the port listens, else 0.",
            labels=labelNames,
        )
        draining = GaugeMetricFamily(
            "multiport_port_draining",
            "1 while a removed port's connections drain (it no longer listens).",
            labels=labelNames,
        )
        rejected = CounterMetricFamily(
            "multiport_connections_rejected",
            "Connections turned away before the handler, by reason.",
            labels=[*labelNames, "reason"],
        )
        expiry = GaugeMetricFamily(
            "multiport_tls_certificate_expiry_timestamp_seconds",
            "When the TLS port's certificate expires (POSIX time).",
            labels=labelNames,
        )
        acmeFailures = CounterMetricFamily(
            "multiport_acme_renewal_failures",
            "ACME orders for the port's certificate that failed.",
            labels=labelNames,
        )
        acmeNext = GaugeMetricFamily(
            "multiport_acme_next_renewal_timestamp_seconds",
            "When the port's ACME certificate is next ordered (POSIX time).",
            labels=labelNames,
        )
        counters = [
            (CounterMetricFamily(name, help, labels=labelNames), group, key)
            for name, group, key, help in _COUNTERS
        ]
        for status, labels in rows:
            snapshot = status.counters
            up.add_metric(labels, 1 if status.listening else 0)
            draining.add_metric(labels, 1 if status.draining else 0)
            if status.config.datagram:
                # No connections on a UDP port: only its bytes here.
                for family, group, key in counters:
                    if group == "bytes":
                        family.add_metric(labels, figure(snapshot, group, key))
                continue
            current.add_metric(labels, figure(snapshot, "connections", "current"))
            for reason, count in sorted(rejectedByReason(snapshot).items()):
                rejected.add_metric([*labels, reason], count)
            if status.config.tls is not None and status.certificateExpiry is not None:
                expiry.add_metric(labels, status.certificateExpiry)
            if status.acme is not None:
                failures = status.acme.get("renewal_failures_total")
                when = status.acme.get("next_renewal")
                if isinstance(failures, int):
                    acmeFailures.add_metric(labels, failures)
                if isinstance(when, float | int):
                    acmeNext.add_metric(labels, when)
            for family, group, key in counters:
                family.add_metric(labels, figure(snapshot, group, key))
        yield current
        for family, _, _ in counters[:2]:
            yield family
        yield rejected
        for family, _, _ in counters[2:]:
            yield family
        yield up
        yield draining
        yield expiry
        if acmeFailures.samples:
            # Only a daemon with ACME ports has these families.
            yield acmeFailures
            yield acmeNext

    def _handlerFamilies(
        self, rows: list[tuple[PortStatus, list[str]]], labelNames: Sequence[str]
    ) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for status, values in rows:
            handler = status.config.handler
            ours = dict(zip(labelNames, values, strict=True))
            for (counter, labels), value in sorted(status.handlerCounters.items()):
                if counter in WEBSOCKET_COUNTERS or counter in HTTP2_COUNTERS:
                    continue  # in webSocketFamilies and http2Families
                name = handlerFamilyName(handler, counter)
                if name in BUILTIN_FAMILIES:
                    if name not in self._warned:
                        self._warned.add(name)
                        log.warn(
                            "handler {handler!r} counter {counter!r} is not "
                            "exported: {name} is a built-in metric",
                            handler=handler,
                            counter=counter,
                            name=name,
                        )
                    continue
                family = families.get(name)
                if family is None:
                    family = families[name] = Metric(
                        name, f"Counter {counter!r} of handler {handler!r}.", "counter"
                    )
                sampleLabels = {handlerLabelName(k): v for k, v in labels}
                sampleLabels.update(ours)
                family.add_sample(name + "_total", sampleLabels, value)
        yield from families.values()


class DrainCollector:
    """
    C{multiport_balancer_draining}: 1 while the daemon is drained for its
    load balancer, else 0.
    """

    def __init__(self, view: Callable[[], IDaemonView]) -> None:
        self._view = view

    def collect(self) -> list[Metric]:
        gauge = GaugeMetricFamily(
            "multiport_balancer_draining",
            "1 while the daemon is drained for its load balancer (/healthz "
            "answers 503 draining, every port serving), else 0.",
        )
        gauge.add_metric([], 1 if drainStateOf(self._view()).draining else 0)
        return [gauge]


def metricsRegistry(
    view: Callable[[], IDaemonView], perWorker: bool = False
) -> CollectorRegistry:
    """
    A new registry for one status port: the daemon's figures (with
    C{perWorker}, per port and worker process), the process's (CPU, memory,
    file descriptors) and the platform's.
    """
    registry = CollectorRegistry()
    registry.register(DaemonCollector(view, perWorker))
    registry.register(DrainCollector(view))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
