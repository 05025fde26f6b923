"""
Tests for the status handler (L{multiport.status}): its JSON, metrics,
health and history pages on a fake daemon view and a memory reactor, and
end to end on a real L{PortsService}.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from attrs import evolve, frozen
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample as PrometheusSample
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.plugin import IPlugin
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from zope.interface import implementer
from zope.interface.verify import verifyObject

from multiport import __version__
from multiport.config.build import buildConfig
from multiport.config.model import PortConfig, TLSConfig
from multiport.config.portspec import parsePorts
from multiport.daemon.service import PortsService
from multiport.handlers.interface import (
    HandlerContext,
    IDaemonView,
    IHandler,
    OptionError,
    PortStatus,
)
from multiport.ports.counters import HandlerCounters, PortCounters
from multiport.status import StatusOptions, status
from multiport.status.history import LENGTH
from multiport.status.site import StatusSite
from tests.support import DEFAULTS, HANDLERS, waitUntilOnReactor

#: The handlers a daemon with a status port finds.
STATUS_HANDLERS = {**HANDLERS, "status": status}

#: The connection figures of a port with no traffic.
NO_CONNECTIONS = {"current": 0, "accepted": 0, "closed": 0, "rejected": 0}


def portConfig(
    handler: str = "echo",
    port: int = 7,
    interface: str = "127.0.0.1",
    tls: TLSConfig | None = None,
) -> PortConfig:
    """
    A validated port configuration, as L{multiport.config.model} builds them.
    """
    return PortConfig(
        interface=interface,
        port=port,
        handler=handler,
        tls=tls,
        backlog=50,
        options=None,
    )


class FakePort:
    """
    One port of L{FakeDaemon}, with live counters tests change in place.
    """

    def __init__(
        self,
        config: PortConfig,
        name: str | None = None,
        listening: bool = True,
        certificateExpiry: float | None = None,
    ) -> None:
        self.config = config
        self.name = config.name if name is None else name
        self.listening = listening
        self.counters = PortCounters()
        self.handlerCounters = HandlerCounters()
        self.certificateExpiry = certificateExpiry

    def status(self) -> PortStatus:
        """
        A snapshot, as L{PortsService.portStatus} takes them.
        """
        return PortStatus(
            name=self.name,
            config=self.config,
            listening=self.listening,
            counters=self.counters.snapshot(),
            handlerCounters=self.handlerCounters.snapshot(),
            certificateExpiry=self.certificateExpiry,
        )


@implementer(IDaemonView)
class FakeDaemon:
    """
    A daemon view made of L{FakePort}s.
    """

    def __init__(self, ports: Iterable[FakePort] = (), started: float = 1000.0) -> None:
        self.version = "9.8.7"
        self.started = started
        self.ports = list(ports)

    def portStatus(self) -> list[PortStatus]:
        return [port.status() for port in self.ports]


@frozen
class Response:
    """
    One parsed HTTP response.
    """

    status: int
    headers: dict[bytes, list[bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """
        The only value of header C{name}, or C{None} if absent.
        """
        values = self.headers.get(name.lower(), [])
        assert len(values) <= 1, values
        return values[0] if values else None

    def json(self) -> object:
        """
        The body as JSON.
        """
        return json.loads(self.body)


def parseResponse(data: bytes) -> Response:
    """
    Parse a complete HTTP/1.1 response with a body of C{Content-Length}.
    """
    head, separator, body = data.partition(b"\r\n\r\n")
    assert separator, data
    statusLine, *lines = head.split(b"\r\n")
    headers: dict[bytes, list[bytes]] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return Response(int(statusLine.split(b" ")[1]), headers, body)


def metricSamples(text: str) -> list[PrometheusSample]:
    """
    Every sample of a Prometheus text exposition.
    """
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def sampleValue(samples: list[PrometheusSample], name: str, **labels: str) -> float:
    """
    The value of the only sample named C{name} whose labels include
    C{labels}.
    """
    found = [
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


class _StatusTestCase(SynchronousTestCase):
    """
    Builds status sites on a memory reactor over a L{FakeDaemon}.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(1060.5)
        self.echo = FakePort(portConfig("echo", 7))
        self.daemon = FakeDaemon([self.echo])

    def site(self, daemon: object = None, options: object = None) -> StatusSite:
        """
        A status site for C{daemon} (this test's fake by default), with the
        status handler's C{options} table.
        """
        port = evolve(
            portConfig("status", 9100),
            options=status.parseOptions(options or {}, Path(".")),
        )
        context = HandlerContext(
            reactor=self.clock,
            clock=self.clock,
            port=port,
            daemon=self.daemon if daemon is None else daemon,
        )
        site = status.buildFactory(context)
        assert isinstance(site, StatusSite)
        return site

    def request(
        self,
        site: StatusSite,
        target: bytes,
        method: bytes = b"GET",
        hosts: Iterable[bytes] = (b"127.0.0.1:9099",),
    ) -> Response:
        """
        Send one request to C{site}, naming C{hosts} in C{Host} headers,
        and return its complete response.
        """
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        headers = b"".join(b"Host: " + host + b"\r\n" for host in hosts)
        channel.dataReceived(
            method
            + b" "
            + target
            + b" HTTP/1.1\r\n"
            + headers
            + b"Connection: close\r\n\r\n"
        )
        for _ in range(100):
            if transport.disconnecting:
                break
            self.clock.advance(0)
        else:
            self.fail(f"no complete response: {transport.value()!r}")
        return parseResponse(transport.value())

    def get(self, target: bytes, daemon: object = None) -> Response:
        """
        GET C{target} from a new site.
        """
        return self.request(self.site(daemon), target)

    def metrics(self) -> list[PrometheusSample]:
        """
        The samples of C{/metrics}.
        """
        response = self.get(b"/metrics")
        self.assertEqual(response.status, 200)
        return metricSamples(response.body.decode("utf-8"))


class HandlerTests(_StatusTestCase):
    """
    Tests for the C{status} handler plugin itself.
    """

    def test_providesIHandlerAndIPlugin(self) -> None:
        """
        The handler is an L{IHandler} plugin named C{status} without TLS.
        """
        self.assertTrue(verifyObject(IHandler, status))
        self.assertTrue(IPlugin.providedBy(status))
        self.assertEqual(status.name, "status")
        self.assertFalse(status.impliesTLS)

    def test_descriptionIsOneLine(self) -> None:
        """
        The description is one non-empty line.
        """
        self.assertTrue(status.description)
        self.assertNotIn("\n", status.description)

    def test_noOptions(self) -> None:
        """
        No options: no host names allowed beyond addresses and localhost.
        """
        self.assertEqual(status.parseOptions({}, Path(".")), StatusOptions())

    def test_allowedHosts(self) -> None:
        """
        C{allowed_hosts} is a list of host names, kept in lower case without
        a trailing dot.
        """
        self.assertEqual(
            status.parseOptions(
                {"allowed_hosts": ["Status.Example.org.", "box-1"]}, Path(".")
            ),
            StatusOptions(frozenset({"status.example.org", "box-1"})),
        )

    def test_badAllowedHosts(self) -> None:
        """
        Anything but a list of host names is an L{OptionError} naming the
        key and the value.
        """
        for value, message in [
            ("a.example", "expected an array of host names, got string 'a.example'"),
            ([1], "1 is not a host name"),
            (["a b"], "'a b' is not a host name"),
            (["evil\r\nx"], "'evil\\r\\nx' is not a host name"),
            (["-a.example"], "'-a.example' is not a host name"),
        ]:
            error = self.assertRaises(
                OptionError,
                status.parseOptions,
                {"allowed_hosts": value},
                Path("."),
            )
            self.assertEqual((error.key, error.message), ("allowed_hosts", message))

    def test_unknownOptionRejected(self) -> None:
        """
        Any option is an L{OptionError} naming its key.
        """
        error = self.assertRaises(
            OptionError, status.parseOptions, {"refresh": 5}, Path(".")
        )
        self.assertEqual(error.key, "refresh")

    def test_newSiteEachCall(self) -> None:
        """
        Every call builds a new site, which hides tracebacks.
        """
        first, second = self.site(), self.site()
        self.assertTrue(IProtocolFactory.providedBy(first))
        self.assertIsNot(first, second)
        self.assertFalse(first.displayTracebacks)

    def test_noAccessLog(self) -> None:
        """
        Requests are not written to an access log.
        """
        site = self.site()
        site.doStart()
        self.addCleanup(site.doStop)
        written: list[str] = []
        self.patch(site, "_logFile", type("Log", (), {"write": written.append})())
        self.request(site, b"/healthz")
        self.assertEqual(written, [])

    def test_withoutDaemon(self) -> None:
        """
        A site built without a daemon view reports no ports.
        """
        context = HandlerContext(
            reactor=self.clock, clock=self.clock, port=portConfig("status", 9100)
        )
        body = self.request(status.buildFactory(context), b"/status").json()
        self.assertEqual((body["version"], body["ports"]), (__version__, []))


class StatusPageTests(_StatusTestCase):
    """
    Tests for C{GET /status}.
    """

    def test_contentType(self) -> None:
        """
        The answer is 200 JSON, never cached.
        """
        response = self.get(b"/status")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"content-type"), b"application/json")
        self.assertEqual(response.header(b"cache-control"), b"no-store")

    def test_document(self) -> None:
        """
        The document holds the daemon's version, start and uptime, and each
        port's configuration, state and figures.
        """
        counters = self.echo.counters
        counters.accepted, counters.current, counters.closed = 5, 2, 3
        counters.bytesReceived, counters.bytesSent = 100, 90
        counters.tlsHandshakeFailures, counters.protocolErrors = 1, 4
        counters.reject("max_connections")
        counters.listeningSince = 1001.0
        self.assertEqual(
            self.get(b"/status").json(),
            {
                "version": "9.8.7",
                "pid": os.getpid(),
                "started": 1000.0,
                "now": 1060.5,
                "uptime_s": 60.5,
                "drain": {"draining": False, "since": None},
                "peers": [],
                "ports": [
                    {
                        "name": "tcp:127.0.0.1:7",
                        "interface": "127.0.0.1",
                        "port": 7,
                        "handler": "echo",
                        "protocol": "tcp",
                        "tls": False,
                        "listening": True,
                        "draining": False,
                        "listening_since": 1001.0,
                        "connections": {
                            "current": 2,
                            "accepted": 5,
                            "closed": 3,
                            "rejected": 1,
                        },
                        "rejected_by_reason": {"max_connections": 1},
                        "bytes": {"received": 100, "sent": 90},
                        "errors": {"tls_handshake": 1, "protocol": 4},
                        "certificate_expiry": None,
                        "handler_counters": [],
                    }
                ],
            },
        )

    def test_portsInOrder(self) -> None:
        """
        Ports are listed in the view's order.
        """
        self.daemon.ports.append(FakePort(portConfig("http", 80)))
        ports = self.get(b"/status").json()["ports"]
        self.assertEqual([p["handler"] for p in ports], ["echo", "http"])

    def test_realPortNumber(self) -> None:
        """
        A port configured as 0 shows the number it is bound to, from its name.
        """
        self.echo.config = portConfig("echo", 0)
        self.echo.name = "tcp:127.0.0.1:41234"
        port = self.get(b"/status").json()["ports"][0]
        self.assertEqual((port["name"], port["port"]), ("tcp:127.0.0.1:41234", 41234))

    def test_ipv6(self) -> None:
        """
        An IPv6 port has its bare address as interface and its number.
        """
        self.echo.config = portConfig("http", 80, interface="::1")
        self.echo.name = "tcp:[::1]:80"
        port = self.get(b"/status").json()["ports"][0]
        self.assertEqual(
            (port["name"], port["interface"], port["port"]),
            ("tcp:[::1]:80", "::1", 80),
        )

    def test_uptimeFromClock(self) -> None:
        """
        The uptime follows the context's clock.
        """
        site = self.site()
        self.clock.advance(39.5)
        body = self.request(site, b"/status").json()
        self.assertEqual((body["uptime_s"], body["now"]), (100.0, 1100.0))

    def test_readAtRequestTime(self) -> None:
        """
        Each request reads the daemon anew.
        """
        site = self.site()
        self.request(site, b"/status")
        self.echo.counters.accepted = 12
        self.echo.listening = False
        port = self.request(site, b"/status").json()["ports"][0]
        self.assertEqual(
            (port["connections"]["accepted"], port["listening"]), (12, False)
        )

    def test_tlsPort(self) -> None:
        """
        A TLS port says so and gives its certificate's expiry.
        """
        self.echo.config = portConfig("https", 443, tls=TLSConfig())
        self.echo.certificateExpiry = 1_900_000_000.0
        port = self.get(b"/status").json()["ports"][0]
        self.assertEqual(
            (port["tls"], port["certificate_expiry"]), (True, 1_900_000_000.0)
        )

    def test_handlerCounters(self) -> None:
        """
        The handler's published counters are listed with their labels.
        """
        self.echo.handlerCounters.add("upstream_failures", 2, upstream="db:5432")
        self.echo.handlerCounters.add("requests", 7)
        port = self.get(b"/status").json()["ports"][0]
        self.assertEqual(
            port["handler_counters"],
            [
                {"name": "requests", "labels": {}, "value": 7},
                {
                    "name": "upstream_failures",
                    "labels": {"upstream": "db:5432"},
                    "value": 2,
                },
            ],
        )

    def test_head(self) -> None:
        """
        HEAD answers GET's status and headers, its length, and no body.
        """
        site = self.site()
        get = self.request(site, b"/status")
        head = self.request(site, b"/status", b"HEAD")
        self.assertEqual(head.status, 200)
        self.assertEqual(head.body, b"")
        self.assertEqual(head.header(b"content-type"), b"application/json")
        self.assertEqual(head.header(b"content-length"), b"%d" % (len(get.body),))


class MetricsTests(_StatusTestCase):
    """
    Tests for C{GET /metrics}.
    """

    def test_contentType(self) -> None:
        """
        The answer has prometheus_client's latest text content type.
        """
        response = self.get(b"/metrics")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"content-type"), CONTENT_TYPE_LATEST.encode())

    def test_portFigures(self) -> None:
        """
        Each port figure is a sample labelled with the port's name,
        interface and handler.
        """
        counters = self.echo.counters
        counters.accepted, counters.current, counters.closed = 5, 2, 3
        counters.bytesReceived, counters.bytesSent = 100, 90
        counters.tlsHandshakeFailures, counters.protocolErrors = 1, 4
        samples = self.metrics()
        labels = {"port": "tcp:127.0.0.1:7", "interface": "127.0.0.1"}
        labels["handler"] = "echo"
        self.assertEqual(
            {
                name: sampleValue(samples, name, **labels)
                for name in [
                    "multiport_connections_current",
                    "multiport_connections_accepted_total",
                    "multiport_connections_closed_total",
                    "multiport_bytes_received_total",
                    "multiport_bytes_sent_total",
                    "multiport_tls_handshake_failures_total",
                    "multiport_protocol_errors_total",
                    "multiport_port_up",
                ]
            },
            {
                "multiport_connections_current": 2,
                "multiport_connections_accepted_total": 5,
                "multiport_connections_closed_total": 3,
                "multiport_bytes_received_total": 100,
                "multiport_bytes_sent_total": 90,
                "multiport_tls_handshake_failures_total": 1,
                "multiport_protocol_errors_total": 4,
                "multiport_port_up": 1,
            },
        )

    def test_familyTypes(self) -> None:
        """
        Open connections and being up are gauges, the rest counters.
        """
        text = self.get(b"/metrics").body.decode()
        types = {f.name: f.type for f in text_string_to_metric_families(text)}
        self.assertEqual(
            {n: t for n, t in types.items() if n.startswith("multiport_")},
            {
                "multiport_info": "gauge",
                "multiport_start_time_seconds": "gauge",
                "multiport_connections_current": "gauge",
                "multiport_connections_accepted": "counter",
                "multiport_connections_closed": "counter",
                "multiport_connections_rejected": "counter",
                "multiport_bytes_received": "counter",
                "multiport_bytes_sent": "counter",
                "multiport_tls_handshake_failures": "counter",
                "multiport_protocol_errors": "counter",
                "multiport_port_up": "gauge",
                "multiport_port_draining": "gauge",
                "multiport_tls_certificate_expiry_timestamp_seconds": "gauge",
                "multiport_balancer_draining": "gauge",
                "multiport_datagrams_received": "counter",
                "multiport_datagrams_sent": "counter",
                "multiport_datagrams_dropped": "counter",
                "multiport_udp_sessions": "gauge",
            },
        )

    def test_rejectedByReason(self) -> None:
        """
        Rejected connections are counted per reason.
        """
        self.echo.counters.reject("max_connections")
        self.echo.counters.reject("max_connections")
        self.echo.counters.reject("denied")
        samples = self.metrics()
        name = "multiport_connections_rejected_total"
        self.assertEqual(
            (
                sampleValue(samples, name, reason="max_connections", handler="echo"),
                sampleValue(samples, name, reason="denied", handler="echo"),
            ),
            (2, 1),
        )

    def test_rejectedFamilyWithoutRejections(self) -> None:
        """
        The rejected family is declared even when nothing was rejected.
        """
        text = self.get(b"/metrics").body.decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        self.assertEqual(families["multiport_connections_rejected"].samples, [])
        self.assertIn("# TYPE multiport_connections_rejected_total counter", text)

    def test_portDown(self) -> None:
        """
        A port that does not listen is 0 in C{multiport_port_up}.
        """
        self.echo.listening = False
        samples = self.metrics()
        self.assertEqual(sampleValue(samples, "multiport_port_up", handler="echo"), 0)

    def test_certificateExpiry(self) -> None:
        """
        TLS ports, and only they, have their certificate's expiry.
        """
        tls = FakePort(portConfig("https", 443, tls=TLSConfig()), certificateExpiry=2e9)
        self.daemon.ports.append(tls)
        samples = self.metrics()
        expiry = [
            (s.labels["port"], s.value)
            for s in samples
            if s.name == "multiport_tls_certificate_expiry_timestamp_seconds"
        ]
        self.assertEqual(expiry, [("tcp:127.0.0.1:443", 2e9)])

    def test_daemonInfo(self) -> None:
        """
        The version and start time are exported.
        """
        samples = self.metrics()
        self.assertEqual(sampleValue(samples, "multiport_info", version="9.8.7"), 1)
        self.assertEqual(sampleValue(samples, "multiport_start_time_seconds"), 1000)

    def test_handlerCounters(self) -> None:
        """
        A handler's counter is C{multiport_<handler>_<name>_total} with its
        labels and the port's.
        """
        self.echo.handlerCounters.add("upstream_failures", 3, upstream="db:5432")
        samples = self.metrics()
        [sample] = [
            s for s in samples if s.name == "multiport_echo_upstream_failures_total"
        ]
        self.assertEqual(
            (sample.labels, sample.value),
            (
                {
                    "upstream": "db:5432",
                    "port": "tcp:127.0.0.1:7",
                    "interface": "127.0.0.1",
                    "handler": "echo",
                },
                3,
            ),
        )

    def test_handlerCountersOfSeveralPortsShareAFamily(self) -> None:
        """
        The same counter on two ports of a handler is one family with a
        sample per port.
        """
        other = FakePort(portConfig("echo", 8))
        self.daemon.ports.append(other)
        self.echo.handlerCounters.add("hits", 1)
        other.handlerCounters.add("hits", 2)
        text = self.get(b"/metrics").body.decode()
        [family] = [
            f for f in text_string_to_metric_families(text) if f.name.endswith("_hits")
        ]
        self.assertEqual(
            sorted((s.labels["port"], s.value) for s in family.samples),
            [("tcp:127.0.0.1:7", 1), ("tcp:127.0.0.1:8", 2)],
        )

    def test_handlerCounterNamesMadeValid(self) -> None:
        """
        Characters Prometheus does not allow in a name become C{_}, and a
        name ending in C{_total} does not get a second one.
        """
        self.echo.config = portConfig("my-relay", 7)
        self.echo.handlerCounters.add("bytes.dropped_total", 1)
        names = {s.name for s in self.metrics()}
        self.assertIn("multiport_my_relay_bytes_dropped_total", names)

    def test_handlerLabelClash(self) -> None:
        """
        A handler label named like a per-port label is exported as
        C{exported_<label>}.
        """
        self.echo.handlerCounters.add("hits", 1, port="upstream:80")
        [sample] = [s for s in self.metrics() if s.name == "multiport_echo_hits_total"]
        self.assertEqual(
            (sample.labels["exported_port"], sample.labels["port"]),
            ("upstream:80", "tcp:127.0.0.1:7"),
        )

    def test_handlerCounterClashingWithBuiltinSkipped(self) -> None:
        """
        A handler counter that would take a built-in family's name is left
        out, not mixed into it.
        """
        self.echo.config = portConfig("connections", 7)
        self.echo.handlerCounters.add("accepted", 99)
        samples = self.metrics()
        self.assertEqual(
            sampleValue(samples, "multiport_connections_accepted_total"), 0
        )

    def test_processAndPlatform(self) -> None:
        """
        prometheus_client's process and platform metrics are included.
        """
        if not os.path.exists("/proc/self/stat"):
            raise self.skipTest("process metrics need /proc")
        names = {s.name for s in self.metrics()}
        self.assertIn("process_cpu_seconds_total", names)
        self.assertIn("process_resident_memory_bytes", names)
        self.assertIn("python_info", names)

    def test_ownRegistry(self) -> None:
        """
        Two status sites never collide, and the global registry gains no
        multiport metric.
        """
        first, second = self.site(), self.site()
        for site in (first, second):
            self.assertEqual(self.request(site, b"/metrics").status, 200)
        self.assertIsNone(REGISTRY.get_sample_value("multiport_port_up"))

    def test_readAtScrapeTime(self) -> None:
        """
        Each scrape reads the daemon anew.
        """
        site = self.site()
        self.request(site, b"/metrics")
        self.echo.counters.accepted = 8
        samples = metricSamples(self.request(site, b"/metrics").body.decode())
        self.assertEqual(
            sampleValue(samples, "multiport_connections_accepted_total"), 8
        )


class HealthTests(_StatusTestCase):
    """
    Tests for C{GET /healthz}.
    """

    def test_allListening(self) -> None:
        """
        While every port listens the answer is 200 C{ok}.
        """
        self.daemon.ports.append(FakePort(portConfig("http", 80)))
        response = self.get(b"/healthz")
        self.assertEqual(
            (response.status, response.body, response.header(b"content-type")),
            (200, b"ok\n", b"text/plain; charset=utf-8"),
        )

    def test_portsDown(self) -> None:
        """
        A port that does not listen makes the answer 503, naming each such
        port on a line.
        """
        self.echo.listening = False
        self.daemon.ports.append(FakePort(portConfig("http", 80)))
        self.daemon.ports.append(FakePort(portConfig("qotd", 17), listening=False))
        response = self.get(b"/healthz")
        self.assertEqual(
            (response.status, response.body),
            (503, b"tcp:127.0.0.1:7\ntcp:127.0.0.1:17\n"),
        )


class HistoryTests(_StatusTestCase):
    """
    Tests for the sampler and C{GET /history}.
    """

    def startedSite(self) -> StatusSite:
        """
        A site started as its port starts listening, after the clock's next
        turn (when it takes its first sample); stopped at cleanup.
        """
        site = self.site()
        site.doStart()
        self.addCleanup(site.doStop)
        self.clock.advance(0)
        return site

    def test_emptyBeforeStart(self) -> None:
        """
        Before its port listens a site has no samples.
        """
        self.assertEqual(
            self.get(b"/history").json(),
            {"interval_s": 1, "length": LENGTH, "ports": {}},
        )

    def test_samplesEverySecond(self) -> None:
        """
        Once started, every port is sampled on the clock's next turn and
        then every second of the context's clock.
        """
        site = self.startedSite()
        self.echo.counters.current = 1
        self.echo.counters.bytesReceived = 10
        self.clock.advance(1)
        self.echo.counters.bytesSent = 20
        self.clock.advance(1)
        self.assertEqual(
            self.request(site, b"/history").json()["ports"],
            {
                "tcp:127.0.0.1:7": [
                    {
                        "t": 1060.5,
                        "current": 0,
                        "accepted": 0,
                        "bytes_received": 0,
                        "bytes_sent": 0,
                    },
                    {
                        "t": 1061.5,
                        "current": 1,
                        "accepted": 0,
                        "bytes_received": 10,
                        "bytes_sent": 0,
                    },
                    {
                        "t": 1062.5,
                        "current": 1,
                        "accepted": 0,
                        "bytes_received": 10,
                        "bytes_sent": 20,
                    },
                ]
            },
        )

    def test_bounded(self) -> None:
        """
        Only the last L{LENGTH} samples are kept.
        """
        site = self.startedSite()
        for _ in range(LENGTH + 50):
            self.clock.advance(1)
        samples = site.history.samples("tcp:127.0.0.1:7")
        self.assertEqual(len(samples), LENGTH)
        self.assertEqual(samples[-1].t, self.clock.seconds())

    def test_stopsWithFactory(self) -> None:
        """
        Sampling stops when the port stops, leaving nothing scheduled.
        """
        site = self.startedSite()
        self.clock.advance(1)
        site.doStop()
        self.clock.advance(10)
        self.assertEqual(len(site.history.samples("tcp:127.0.0.1:7")), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unboundPortNotSampled(self) -> None:
        """
        A port that has not listened yet is not sampled.
        """
        self.echo.listening = False
        site = self.startedSite()
        self.clock.advance(1)
        self.assertEqual(self.request(site, b"/history").json()["ports"], {})

    def test_stoppedPortStillSampled(self) -> None:
        """
        A port that stops listening goes on being sampled.
        """
        site = self.startedSite()
        self.echo.listening = False
        self.clock.advance(1)
        self.assertEqual(len(site.history.samples("tcp:127.0.0.1:7")), 2)

    def test_gonePortForgotten(self) -> None:
        """
        A port the daemon no longer reports is forgotten.
        """
        site = self.startedSite()
        self.daemon.ports.clear()
        self.clock.advance(1)
        self.assertEqual(self.request(site, b"/history").json()["ports"], {})

    def test_failingViewLoggedAndSamplingGoesOn(self) -> None:
        """
        A view that raises is logged and sampling goes on.
        """
        site = self.startedSite()
        working = self.daemon.portStatus
        self.patch(self.daemon, "portStatus", lambda: 1 / 0)
        self.clock.advance(1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.patch(self.daemon, "portStatus", working)
        self.clock.advance(1)
        self.assertEqual(len(site.history.samples("tcp:127.0.0.1:7")), 2)


class HostTests(_StatusTestCase):
    """
    A status port answers only requests that name it (its address,
    localhost, or a name in C{allowed_hosts}): a page whose name was made
    to resolve to 127.0.0.1 (DNS rebinding) gets 421 on every path.
    """

    def test_otherNameRefused(self) -> None:
        """
        A name that is not allowed gets 421 on every path, the API too.
        """
        site = self.site()
        for target in [b"/", b"/status", b"/metrics", b"/healthz", b"/api/ports"]:
            response = self.request(site, target, hosts=[b"rebind.example:9099"])
            self.assertEqual(response.status, 421, target)
            self.assertIn(b"allowed_hosts", response.body)

    def test_addressesAndLocalhost(self) -> None:
        """
        Any IP address (a rebinding page can't make its Host one),
        C{localhost}, and no Host at all are answered.
        """
        site = self.site()
        for hosts in [
            [b"127.0.0.1"],
            [b"127.0.0.1:9099"],
            [b"[::1]:9099"],
            [b"[::1]"],
            [b"10.1.2.3:9099"],
            [b"localhost:9099"],
            [b"LOCALHOST."],
            [],
        ]:
            response = self.request(site, b"/healthz", hosts=hosts)
            self.assertEqual(response.status, 200, hosts)

    def test_allowedHosts(self) -> None:
        """
        A name in C{allowed_hosts} is answered, in any case, with or without
        a port or a trailing dot.
        """
        site = self.site(options={"allowed_hosts": ["status.example.org"]})
        for host in [b"status.example.org", b"Status.Example.Org.:9099"]:
            response = self.request(site, b"/healthz", hosts=[host])
            self.assertEqual(response.status, 200, host)
        response = self.request(site, b"/healthz", hosts=[b"example.org"])
        self.assertEqual(response.status, 421)

    def test_unreadableHost(self) -> None:
        """
        A Host that is not a host (bad port, bad brackets, not ASCII) is
        421; two Host headers are 400.
        """
        site = self.site()
        for host in [b"127.0.0.1:http", b"[::1", b"[::1]x", "h\u00e9".encode()]:
            self.assertEqual(self.request(site, b"/", hosts=[host]).status, 421, host)
        response = self.request(site, b"/", hosts=[b"127.0.0.1", b"127.0.0.1"])
        self.assertEqual(response.status, 400)


class RoutingTests(_StatusTestCase):
    """
    Tests for paths and methods.
    """

    def test_unknownPath(self) -> None:
        """
        A path that is not a page is 404.
        """
        for target in [b"/nope", b"/status/", b"/status/x", b"/index.html"]:
            self.assertEqual(self.get(target).status, 404, target)

    def test_queryIgnored(self) -> None:
        """
        A query string does not change the page.
        """
        self.assertEqual(self.get(b"/healthz?verbose=1").body, b"ok\n")

    def test_otherMethods(self) -> None:
        """
        Methods other than GET and HEAD are 405 with an Allow header.
        """
        site = self.site()
        for method in [b"POST", b"PUT", b"DELETE", b"OPTIONS"]:
            response = self.request(site, b"/status", method)
            self.assertEqual(
                (response.status, response.header(b"allow")),
                (405, b"GET, HEAD"),
                method,
            )

    def test_unknownPathOtherMethod(self) -> None:
        """
        An unknown path is 404 whatever the method.
        """
        self.assertEqual(self.request(self.site(), b"/x", b"POST").status, 404)


class Echoer(Protocol):
    """
    A client that sends C{payload}, closes once it has it all back, and
    fires C{done} with what came back.
    """

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= len(self.payload):
            self.transport.loseConnection()

    def connectionLost(self, reason: object = None) -> None:
        self.done.callback(self.received)


def startService(testCase: TestCase, ports: str) -> PortsService:
    """
    Start a daemon with a status handler for C{ports} on the real reactor;
    stopped at cleanup.
    """
    config = buildConfig(
        parsePorts(ports), DEFAULTS, STATUS_HANDLERS, Path(testCase.mktemp())
    )
    service = PortsService(config, STATUS_HANDLERS, {}, reactor)
    service.startService()
    testCase.addCleanup(service.stopService)
    return service


def boundPort(service: PortsService, handler: str) -> tuple[str, int]:
    """
    The name and number of the service's only port with C{handler}.
    """
    [bound] = [b for b in service.boundPorts() if b.config.handler == handler]
    return bound.name, bound.address.port  # type: ignore[attr-defined]


def closedOn(service: PortsService, name: str) -> int:
    """
    How many connections port C{name} has seen close.
    """
    [port] = [s for s in service.portStatus() if s.name == name]
    connections = port.counters["connections"]
    assert isinstance(connections, dict)
    return int(connections["closed"])


@inlineCallbacks
def echoTraffic(service: PortsService, connections: int, size: int):
    """
    Make C{connections} connections to the echo port, one after the other,
    each echoing C{size} bytes; fires once the port has counted them closed.
    """
    name, number = boundPort(service, "echo")
    before = closedOn(service, name)
    for index in range(connections):
        client = Echoer(bytes([index % 256]) * size)
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", number).connect(
            Factory.forProtocol(lambda client=client: client)
        )
        received = yield client.done
        assert received == client.payload, (len(received), size)
    yield waitUntilOnReactor(lambda: closedOn(service, name) == before + connections)


@inlineCallbacks
def httpGet(port: int, path: str, method: bytes = b"GET"):
    """
    C{(code, headers, body)} of one request to 127.0.0.1:C{port}.
    """
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    url = f"http://127.0.0.1:{port}{path}".encode()
    response = yield agent.request(method, url)
    body = yield readBody(response)
    return response.code, response.headers, body


class EndToEndTests(TestCase):
    """
    A real daemon with an echo port and a status port on 127.0.0.1.
    """

    CONNECTIONS = 5
    SIZE = 3000

    def setUp(self) -> None:
        self.service = startService(self, "127.0.0.1:0=echo,127.0.0.1:0=status")
        self.echoName, _ = boundPort(self.service, "echo")
        self.statusName, self.statusPort = boundPort(self.service, "status")

    @inlineCallbacks
    def test_statusCountsTraffic(self):
        """
        After N echo connections of K bytes, C{/status} shows exactly N
        accepted and closed and N*K bytes each way, in the full schema.
        """
        yield echoTraffic(self.service, self.CONNECTIONS, self.SIZE)
        code, headers, body = yield httpGet(self.statusPort, "/status")
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        document = json.loads(body)
        self.assertEqual(
            sorted(document),
            ["drain", "now", "peers", "pid", "ports", "started", "uptime_s", "version"],
        )
        self.assertEqual(document["version"], __version__)
        self.assertEqual(document["pid"], os.getpid())
        self.assertGreaterEqual(document["uptime_s"], 0)
        echo, statusPort = document["ports"]
        self.assertEqual(
            sorted(echo),
            sorted(
                [
                    "name",
                    "interface",
                    "port",
                    "handler",
                    "protocol",
                    "tls",
                    "listening",
                    "draining",
                    "listening_since",
                    "connections",
                    "rejected_by_reason",
                    "bytes",
                    "errors",
                    "certificate_expiry",
                    "handler_counters",
                ]
            ),
        )
        total = self.CONNECTIONS * self.SIZE
        self.assertEqual(
            {k: echo[k] for k in ["name", "handler", "tls", "listening"]},
            {"name": self.echoName, "handler": "echo", "tls": False, "listening": True},
        )
        self.assertEqual(echo["port"], int(self.echoName.rpartition(":")[2]))
        self.assertEqual(
            (echo["connections"], echo["bytes"], echo["errors"]),
            (
                {
                    "current": 0,
                    "accepted": self.CONNECTIONS,
                    "closed": self.CONNECTIONS,
                    "rejected": 0,
                },
                {"received": total, "sent": total},
                {"tls_handshake": 0, "protocol": 0},
            ),
        )
        self.assertEqual(
            (statusPort["name"], statusPort["port"]),
            (self.statusName, self.statusPort),
        )

    @inlineCallbacks
    def test_metricsCountTraffic(self):
        """
        C{/metrics} shows the same figures, labelled with the echo port.
        """
        yield echoTraffic(self.service, self.CONNECTIONS, self.SIZE)
        code, headers, body = yield httpGet(self.statusPort, "/metrics")
        self.assertEqual(code, 200)
        self.assertEqual(
            headers.getRawHeaders(b"content-type"), [CONTENT_TYPE_LATEST.encode()]
        )
        samples = metricSamples(body.decode())
        labels = {"port": self.echoName, "interface": "127.0.0.1", "handler": "echo"}
        total = self.CONNECTIONS * self.SIZE
        self.assertEqual(
            [
                sampleValue(samples, name, **labels)
                for name in [
                    "multiport_connections_accepted_total",
                    "multiport_connections_closed_total",
                    "multiport_connections_current",
                    "multiport_bytes_received_total",
                    "multiport_bytes_sent_total",
                    "multiport_port_up",
                ]
            ],
            [self.CONNECTIONS, self.CONNECTIONS, 0, total, total, 1],
        )
        self.assertEqual(
            sampleValue(samples, "multiport_port_up", port=self.statusName), 1
        )

    @inlineCallbacks
    def test_healthzNamesStoppedPort(self):
        """
        C{/healthz} is 200 while both ports listen, and 503 naming the echo
        port once it has stopped.
        """
        code, _, body = yield httpGet(self.statusPort, "/healthz")
        self.assertEqual((code, body), (200, b"ok\n"))
        yield self.service.getServiceNamed(self.echoName).stopService()
        code, _, body = yield httpGet(self.statusPort, "/healthz")
        self.assertEqual((code, body), (503, f"{self.echoName}\n".encode()))

    @inlineCallbacks
    def test_notFoundAndNotAllowed(self):
        """
        An unknown path is 404 and a POST is 405.
        """
        code, _, _ = yield httpGet(self.statusPort, "/nothing-here")
        self.assertEqual(code, 404)
        code, headers, _ = yield httpGet(self.statusPort, "/status", b"POST")
        self.assertEqual((code, headers.getRawHeaders(b"allow")), (405, [b"GET, HEAD"]))

    @inlineCallbacks
    def test_historyWhileListening(self):
        """
        The status port samples both ports from the moment it listens.
        """
        code, _, body = yield httpGet(self.statusPort, "/history")
        history = json.loads(body)
        self.assertEqual(code, 200)
        self.assertEqual(
            sorted(history["ports"]), sorted([self.echoName, self.statusName])
        )
