"""
End-to-end tests: real ports on 127.0.0.1 and real clients, in process.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    readBody,
)

from multiport.config.model import TLSConfig
from multiport.daemon.service import PortsService
from multiport.handlers.registry import findHandlers
from multiport.handlers.simple import Chargen
from multiport.ports.tls import ensureSelfSigned
from tests.support import (
    GREET_PLUGIN,
    HANDLERS,
    configFor,
    installPlugin,
    waitUntilOnReactor,
)


class Collector(Protocol):
    """
    A client that sends C{payload}, collects what comes back, and fires
    C{done} with it when the connection closes or C{expected} bytes came.
    """

    def __init__(self, payload: bytes = b"", expected: int | None = None) -> None:
        self.payload = payload
        self.expected = expected
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        if self.payload:
            self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.expected is not None and len(self.received) >= self.expected:
            self.transport.loseConnection()

    def connectionLost(self, reason: object = None) -> None:
        if not self.done.called:
            self.done.callback(self.received)


class EndToEndTests(TestCase):
    """
    Every built-in handler served for real.
    """

    def start(self, ports: str) -> PortsService:
        """
        Start a service for C{ports} on the real reactor; stopped at cleanup.
        """
        config = configFor(ports, self.mktemp())
        certificates = {}
        if any(p.tls is not None for p in config.ports):
            certificates[TLSConfig()] = ensureSelfSigned(config.stateDir)
        self.certificate = config.stateDir / "selfsigned-cert.pem"
        service = PortsService(config, HANDLERS, certificates, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def endpoint(self, service: PortsService, index: int, tls: bool = False):
        """
        A client endpoint for the service's port number C{index}.
        """
        port = service.boundPorts()[index].address.port
        plain = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        if not tls:
            return plain
        trust = Certificate.loadPEM(self.certificate.read_bytes())
        return wrapClientTLS(optionsForClientTLS("localhost", trust), plain)

    @inlineCallbacks
    def exchange(self, endpoint, payload: bytes = b"", expected: int | None = None):
        """
        Connect, send C{payload}, and return what came back.
        """
        client = Collector(payload, expected)
        yield endpoint.connect(Factory.forProtocol(lambda: client))
        received = yield client.done
        return received

    @inlineCallbacks
    def test_echoRoundTrip(self):
        """
        The echo port sends back exactly what it got, and counts it.
        """
        service = self.start("127.0.0.1:0=echo")
        payload = bytes(range(256)) * 64
        received = yield self.exchange(self.endpoint(service, 0), payload, len(payload))
        self.assertEqual(received, payload)
        counters = service.boundPorts()[0].counters
        yield waitUntilOnReactor(lambda: counters.closed == 1)
        self.assertEqual(
            (
                counters.accepted,
                counters.current,
                counters.bytesReceived,
                counters.bytesSent,
            ),
            (1, 0, len(payload), len(payload)),
        )

    @inlineCallbacks
    def test_echoOverTLS(self):
        """
        echo+tls echoes through a verified TLS connection.
        """
        service = self.start("127.0.0.1:0=echo+tls")
        received = yield self.exchange(
            self.endpoint(service, 0, tls=True), b"over TLS", 8
        )
        self.assertEqual(received, b"over TLS")

    @inlineCallbacks
    def test_tlsConnectionSeenBeforeHandshake(self):
        """
        A TLS port's wrapper counts a connection as soon as it is accepted,
        before any handshake byte arrives.
        """
        service = self.start("127.0.0.1:0=echo+tls")
        client = Collector()
        yield self.endpoint(service, 0).connect(Factory.forProtocol(lambda: client))
        counters = service.boundPorts()[0].counters
        yield waitUntilOnReactor(lambda: counters.current == 1)
        self.assertEqual((counters.accepted, counters.bytesReceived), (1, 0))
        client.transport.loseConnection()
        yield client.done
        yield waitUntilOnReactor(lambda: counters.closed == 1)

    @inlineCallbacks
    def test_daytime(self):
        """
        The daytime port sends one RFC 867 line and closes.
        """
        service = self.start("127.0.0.1:0=daytime")
        received = yield self.exchange(self.endpoint(service, 0))
        self.assertRegex(
            received.decode("ascii"),
            r"^[A-Z][a-z]+day, [A-Z][a-z]+ \d\d, \d{4} \d\d:\d\d:\d\d-UTC\r\n$",
        )

    @inlineCallbacks
    def test_qotdAndDiscard(self):
        """
        qotd sends its quote and closes; discard answers nothing.
        """
        service = self.start("127.0.0.1:0=qotd,127.0.0.1:0=discard")
        quote = yield self.exchange(self.endpoint(service, 0))
        self.assertIn(b"Alan Kay", quote)
        client = Collector(b"dropped")
        protocol = yield self.endpoint(service, 1).connect(
            Factory.forProtocol(lambda: client)
        )
        counters = service.boundPorts()[1].counters
        yield waitUntilOnReactor(lambda: counters.bytesReceived == 7)
        protocol.transport.loseConnection()
        received = yield client.done
        self.assertEqual(received, b"")

    @inlineCallbacks
    def test_httpGet(self):
        """
        The http port serves its built-in page.
        """
        service = self.start("127.0.0.1:0=http")
        port = service.boundPorts()[0].address.port
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        response = yield agent.request(b"GET", b"http://127.0.0.1:%d/" % (port,))
        body = yield readBody(response)
        self.assertEqual(response.code, 200)
        self.assertIn(b"multiport is running", body)

    @inlineCallbacks
    def test_httpsGetVerified(self):
        """
        The https port serves over TLS with the self-signed certificate, which
        a client trusting it verifies (name localhost).
        """
        service = self.start("127.0.0.1:0=https")
        port = service.boundPorts()[0].address.port
        trust = Certificate.loadPEM(self.certificate.read_bytes())
        agent = Agent(
            reactor,
            contextFactory=BrowserLikePolicyForHTTPS(trustRoot=trust),
            pool=HTTPConnectionPool(reactor, persistent=False),
        )
        response = yield agent.request(b"GET", b"https://localhost:%d/" % (port,))
        body = yield readBody(response)
        self.assertEqual(response.code, 200)
        self.assertIn(b"multiport is running", body)

    @inlineCallbacks
    def test_chargenStopsForAClientThatDoesNotRead(self):
        """
        chargen pauses while its client doesn't read: what the process
        buffers stays bounded, and it goes on once the client reads.
        """
        service = self.start("127.0.0.1:0=chargen")
        client = Collector()
        yield self.endpoint(service, 0).connect(Factory.forProtocol(lambda: client))
        client.transport.pauseProducing()
        port = list(service)[0]
        counters = port.factory.counters
        yield waitUntilOnReactor(lambda: len(port.factory.protocols) == 1)
        [server] = list(port.factory.protocols)
        transport = server.transport
        yield waitUntilOnReactor(lambda: transport.producerPaused)
        limit = transport.bufferSize + len(Chargen.chunk)
        for _ in range(100):
            buffered = len(transport.dataBuffer) + sum(
                map(len, transport._tempDataBuffer)
            )
            self.assertLessEqual(buffered, limit)
            yield deferLater(reactor, 0.005, lambda: None)
        sent = counters.bytesSent
        # The rest sits in the kernel's socket buffers, which it bounds.
        self.assertLess(sent, 64 * 1024 * 1024)
        client.transport.resumeProducing()
        yield waitUntilOnReactor(lambda: counters.bytesSent > sent + 1024 * 1024)
        client.transport.loseConnection()
        yield client.done


class ThirdPartyPluginTests(TestCase):
    """
    A handler from another package's twisted/plugins folder is served
    without any change to multiport.
    """

    def setUp(self) -> None:
        installPlugin(self, "greet_handler", GREET_PLUGIN)

    def test_found(self):
        """
        findHandlers finds the plugin next to the built-ins.
        """
        handlers = findHandlers()
        self.assertIn("greet", handlers)
        self.assertEqual(handlers["greet"].description, "Greets, then closes.")
        self.assertIn("echo", handlers)

    @inlineCallbacks
    def test_served(self):
        """
        --ports N=greet serves the plugin's protocol.
        """
        from multiport.config.build import buildConfig
        from multiport.config.model import Defaults
        from multiport.config.portspec import parsePorts

        config = buildConfig(
            parsePorts("127.0.0.1:0=greet"),
            Defaults(),
            findHandlers(),
            Path(self.mktemp()),
        )
        service = PortsService(config, findHandlers(), {}, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        port = service.boundPorts()[0].address.port
        client = Collector()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: client)
        )
        received = yield client.done
        self.assertEqual(received, b"hello from a plugin\r\n")
        self.assertTrue(
            re.match(r"tcp:127\.0\.0\.1:\d+$", service.boundPorts()[0].name)
        )
