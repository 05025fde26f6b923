"""
Tests for L{multiport.ports.connection} and L{multiport.ports.factory}:
what the per-port wrapper counts, logs and contains, with real connections
on 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from multiport.config.build import buildConfig
from multiport.config.model import Defaults, TLSConfig
from multiport.config.portspec import parsePorts
from multiport.daemon.service import PortsService
from multiport.handlers import Handler
from multiport.ports.tls import ensureSelfSigned
from tests.support import DEFAULTS, HANDLERS, configFor, waitUntilOnReactor
from tests.test_endtoend import Collector


class Explode(Protocol):
    """
    Raises on the first byte it gets; answers nothing.
    """

    def dataReceived(self, data: bytes) -> None:
        raise ValueError("boom")


class ExplodeAtOnce(Protocol):
    """
    Raises as soon as the connection is made.
    """

    def connectionMade(self) -> None:
        raise ValueError("boom at once")


TEST_HANDLERS = {
    **HANDLERS,
    "explode": Handler("explode", "raises", lambda c: Factory.forProtocol(Explode)),
    "explode-at-once": Handler(
        "explode-at-once", "raises", lambda c: Factory.forProtocol(ExplodeAtOnce)
    ),
}


def connectionLines(events: list[dict]) -> list[str]:
    """
    The connection log lines among C{events}, formatted.
    """
    return [
        e["log_format"].format(**e)
        for e in events
        if e.get("log_namespace") == "multiport.connection"
    ]


class WrapperTests(TestCase):
    """
    The per-port wrapper on real connections.
    """

    def start(self, ports: str, defaults: Defaults = DEFAULTS) -> PortsService:
        config = buildConfig(
            parsePorts(ports), defaults, TEST_HANDLERS, Path(self.mktemp())
        )
        certificates = {}
        if any(p.tls for p in config.ports):
            certificates[TLSConfig()] = ensureSelfSigned(config.stateDir)
        service = PortsService(config, TEST_HANDLERS, certificates, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def port(self, service: PortsService, index: int = 0) -> int:
        return service.boundPorts()[index].address.port

    @inlineCallbacks
    def exchange(self, port: int, payload: bytes, expected: int | None = None):
        client = Collector(payload, expected)
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: client)
        )
        received = yield client.done
        return received

    @inlineCallbacks
    def test_connectionLogLine(self):
        """
        A closed connection leaves one line: port, handler, peer, reason,
        duration and bytes each way.
        """
        service = self.start("127.0.0.1:0=echo")
        counters = service.boundPorts()[0].counters
        with capturedLogs() as events:
            yield self.exchange(self.port(service), b"x" * 10, 10)
            yield waitUntilOnReactor(lambda: counters.closed == 1)
        [line] = connectionLines(events)
        name = service.boundPorts()[0].name
        self.assertRegex(
            line,
            rf"^{name} echo 127\.0\.0\.1:\d+ closed clean after \d+\.\d{{3}}s, "
            r"received 10 B, sent 10 B$",
        )

    @inlineCallbacks
    def test_noConnectionLog(self):
        """
        log_connections false leaves no line.
        """
        service = self.start("127.0.0.1:0=echo", Defaults(logConnections=False))
        counters = service.boundPorts()[0].counters
        with capturedLogs() as events:
            yield self.exchange(self.port(service), b"x", 1)
            yield waitUntilOnReactor(lambda: counters.closed == 1)
        self.assertEqual(connectionLines(events), [])

    @inlineCallbacks
    def test_resetCounted(self):
        """
        A client that resets is counted like any other and logged as reset.
        """
        service = self.start("127.0.0.1:0=discard")
        counters = service.boundPorts()[0].counters
        with capturedLogs() as events:
            client = socket.create_connection(("127.0.0.1", self.port(service)))
            client.sendall(b"abc")
            yield waitUntilOnReactor(lambda: counters.bytesReceived == 3)
            client.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            client.close()
            yield waitUntilOnReactor(lambda: counters.closed == 1)
        self.assertEqual((counters.accepted, counters.current), (1, 0))
        [line] = connectionLines(events)
        self.assertIn("closed reset", line)

    @inlineCallbacks
    def test_handlerRaisesInDataReceived(self):
        """
        A handler raising in dataReceived closes only that connection, is
        logged once with its traceback and counted; the port goes on.
        """
        service = self.start("127.0.0.1:0=explode")
        counters = service.boundPorts()[0].counters
        with capturedLogs() as events:
            yield self.exchange(self.port(service), b"x")
            yield self.exchange(self.port(service), b"y")
            yield waitUntilOnReactor(lambda: counters.closed == 2)
        self.assertEqual((counters.protocolErrors, counters.accepted), (2, 2))
        failures = [e for e in events if "log_failure" in e]
        self.assertEqual(len(failures), 2)
        self.assertTrue(failures[0]["log_failure"].check(ValueError))
        self.assertEqual(failures[0]["where"], "dataReceived")
        self.assertEqual(
            [line.split()[3:5] for line in connectionLines(events)],
            [["closed", "error"], ["closed", "error"]],
        )
        self.flushLoggedErrors(ValueError)

    @inlineCallbacks
    def test_handlerRaisesInConnectionMade(self):
        """
        A handler raising in connectionMade is contained and counted too.
        """
        service = self.start("127.0.0.1:0=explode-at-once")
        counters = service.boundPorts()[0].counters
        with capturedLogs() as events:
            yield self.exchange(self.port(service), b"")
            yield waitUntilOnReactor(lambda: counters.closed == 1)
        self.assertEqual(counters.protocolErrors, 1)
        [failure] = [e for e in events if "log_failure" in e]
        self.assertEqual(failure["where"], "connectionMade")
        self.flushLoggedErrors(ValueError)

    @inlineCallbacks
    def test_tlsHandshakeFailure(self):
        """
        Garbage instead of a ClientHello is a handshake failure; a bare TCP
        check (connect, close) is not.
        """
        service = self.start("127.0.0.1:0=echo+tls")
        counters = service.boundPorts()[0].counters
        port = self.port(service)
        probe = socket.create_connection(("127.0.0.1", port))
        probe.close()
        yield waitUntilOnReactor(lambda: counters.closed == 1)
        self.assertEqual(counters.tlsHandshakeFailures, 0)
        yield self.exchange(port, b"GET / HTTP/1.0\r\n\r\n" * 4)
        yield waitUntilOnReactor(lambda: counters.closed == 2)
        self.assertEqual(counters.tlsHandshakeFailures, 1)
        self.assertEqual(counters.bytesReceived, 0)


class ExactCountTests(TestCase):
    """
    Scripted traffic on several ports at once gives exact figures.
    """

    @inlineCallbacks
    def test_severalPortsPlainAndTLS(self):
        """
        N connections of K bytes each way on a plain and a TLS echo port at
        once, plus a client that resets, add up exactly on each port.
        """
        config = buildConfig(
            parsePorts("127.0.0.1:0=echo,127.0.0.1:0=echo+tls"),
            DEFAULTS,
            TEST_HANDLERS,
            Path(self.mktemp()),
        )
        loaded = ensureSelfSigned(config.stateDir)
        service = PortsService(config, TEST_HANDLERS, {TLSConfig(): loaded}, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        plain, tls = service.boundPorts()
        trust = Certificate.loadPEM(loaded.tls.cert.read_bytes())
        count, size = 5, 3000
        clients = []
        for bound, secure in ((plain, False), (tls, True)):
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", bound.address.port)
            if secure:
                endpoint = wrapClientTLS(
                    optionsForClientTLS("localhost", trust), endpoint
                )
            for index in range(count):
                client = Collector(bytes([index]) * size, size)
                clients.append(client)
                yield endpoint.connect(Factory.forProtocol(lambda c=client: c))
        received = yield gatherResults([c.done for c in clients])
        self.assertEqual([len(r) for r in received], [size] * (2 * count))
        reset = socket.create_connection(("127.0.0.1", plain.address.port))
        reset.sendall(b"12345")
        yield waitUntilOnReactor(lambda: plain.counters.bytesSent == count * size + 5)
        reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reset.close()
        yield waitUntilOnReactor(lambda: plain.counters.closed == count + 1)
        yield waitUntilOnReactor(lambda: tls.counters.closed == count)
        self.assertEqual(
            [
                (c.accepted, c.closed, c.current, c.bytesReceived, c.bytesSent)
                for c in (plain.counters, tls.counters)
            ],
            [
                (count + 1, count + 1, 0, count * size + 5, count * size + 5),
                (count, count, 0, count * size, count * size),
            ],
        )
        self.assertEqual(tls.counters.tlsHandshakeFailures, 0)


class HostCacheTests(SynchronousTestCase):
    """
    The wrapper asks the socket for the connection's own address once.
    """

    def test_getHostOnce(self):
        from twisted.internet.address import IPv4Address
        from twisted.internet.protocol import Protocol
        from twisted.internet.testing import MemoryReactorClock, StringTransport

        from multiport.handlers.interface import HandlerContext
        from multiport.ports.counters import PortCounters
        from multiport.ports.factory import PortFactory

        config = buildConfig(
            parsePorts("127.0.0.1:7000=echo"), DEFAULTS, TEST_HANDLERS, Path(".")
        ).ports[0]
        clock = MemoryReactorClock()
        context = HandlerContext(reactor=clock, clock=clock, port=config)
        factory = PortFactory(Factory.forProtocol(Protocol), PortCounters(), context)
        address = IPv4Address("TCP", "127.0.0.1", 5555)
        protocol = factory.buildProtocol(address)
        transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 7000))
        asked = []
        original = transport.getHost
        transport.getHost = lambda: asked.append(1) or original()
        protocol.makeConnection(transport)
        for _ in range(3):
            self.assertEqual(protocol.getHost().port, 7000)
        self.assertEqual(len(asked), 1)


class TransportChoiceTests(TestCase):
    """
    C{--transport} picks the class of a port's accepted connections, passed
    down to where the port listens; the environment plays no part.
    """

    def listen(self, **kwargs: object) -> type:
        from multiport.ports.sockets import listenTCP

        port = listenTCP(
            reactor,
            0,
            Factory.forProtocol(Protocol),
            50,
            "127.0.0.1",
            **kwargs,  # type: ignore[arg-type]
        )
        self.addCleanup(port.stopListening)
        transport: type = port.transport  # type: ignore[attr-defined]
        return transport

    def test_fastByDefault(self) -> None:
        """
        Unless told otherwise, a port's connections are L{FastServer}s, even
        with the old C{MULTIPORT_TRANSPORT} switch in the environment.
        """
        from multiport.io.transport import FastServer

        self.patch(os, "environ", {"MULTIPORT_TRANSPORT": "twisted"})
        self.assertIs(self.listen(), FastServer)

    def test_twistedWhenAsked(self) -> None:
        """
        A port told C{tcp.Server} accepts Twisted's own connections.
        """
        from twisted.internet import tcp

        self.assertIs(self.listen(transport=tcp.Server), tcp.Server)

    def test_sourcesPassItOn(self) -> None:
        """
        A port service's transport reaches the socket it listens on, bound
        here or inherited.
        """
        import socket

        from twisted.internet import tcp

        from multiport.ports.sockets import BoundHere, Inherited

        config = configFor("127.0.0.1:0=echo", self.mktemp()).ports[0]
        factory = Factory.forProtocol(Protocol)
        bound = BoundHere().listen(reactor, config, factory, tcp.Server)
        self.addCleanup(bound.stopListening)
        self.assertIs(bound.transport, tcp.Server)  # type: ignore[attr-defined]
        skt = socket.socket()
        self.addCleanup(skt.close)
        skt.bind(("127.0.0.1", 0))
        skt.listen(5)
        inherited = Inherited(skt.fileno()).listen(reactor, config, factory, tcp.Server)
        self.addCleanup(inherited.stopListening)
        self.assertIs(inherited.transport, tcp.Server)  # type: ignore[attr-defined]

    def test_named(self) -> None:
        """
        L{transportNamed} knows multiport and twisted; anything else is an
        error naming C{--transport} and the value.
        """
        from twisted.internet import tcp

        from multiport.errors import ConfigError
        from multiport.io.transport import FastServer
        from multiport.io.transports import transportNamed

        self.assertIs(transportNamed("twisted"), tcp.Server)
        self.assertIs(transportNamed("multiport"), FastServer)
        error = self.assertRaises(ConfigError, transportNamed, "fast")
        self.assertEqual(
            str(error), "--transport: expected multiport or twisted, got 'fast'"
        )
