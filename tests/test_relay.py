"""
Tests for the relay handler: options, upstream choice, and bytes relayed
intact to real upstreams on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from multiport.config import Defaults, buildConfig
from multiport.handlers.interface import OptionError
from multiport.handlers.relay import (
    RelayOptions,
    Upstream,
    UpstreamPool,
    parseRelayOptions,
)
from multiport.handlers.simple import Echo
from multiport.portspec import parsePortItem
from multiport.service import PortsService
from tests.support import HANDLERS
from tests.test_endtoend import Collector, waitUntil


class OptionTests(SynchronousTestCase):
    """
    The relay's options are checked, naming the bad key.
    """

    def parse(self, **options):
        return parseRelayOptions(options, Path("."))

    def test_upstream(self):
        """
        One upstream, IPv4, IPv6 or a host name.
        """
        self.assertEqual(
            self.parse(upstream="db.internal:5432").upstreams,
            (Upstream("db.internal", 5432),),
        )
        self.assertEqual(
            self.parse(upstream="[::1]:80").upstreams, (Upstream("::1", 80),)
        )

    def test_several(self):
        """
        Several upstreams, with a balance rule and timeouts.
        """
        options = self.parse(
            upstreams=["a:1", "b:2"],
            balance="first",
            connect_timeout=2,
            fail_timeout=30,
        )
        self.assertEqual(
            options,
            RelayOptions((Upstream("a", 1), Upstream("b", 2)), "first", 2.0, 30.0),
        )

    def test_errors(self):
        """
        Both or neither of upstream/upstreams, bad addresses and balances
        are refused with the key.
        """
        for options, key in (
            ({}, "upstream"),
            ({"upstream": "a:1", "upstreams": ["b:2"]}, "upstream"),
            ({"upstream": "nohost"}, "upstream"),
            ({"upstream": "a:99999"}, "upstream"),
            ({"upstream": "::1:80"}, "upstream"),
            ({"upstreams": ["a:1", 5]}, "upstreams[1]"),
            ({"upstreams": []}, "upstreams"),
            ({"upstream": "a:1", "balance": "random"}, "balance"),
            ({"upstream": "a:1", "connect_timeout": 0}, "connect_timeout"),
        ):
            error = self.assertRaises(
                OptionError, parseRelayOptions, options, Path(".")
            )
            self.assertEqual(error.key, key, options)


class PoolTests(SynchronousTestCase):
    """
    The pool orders upstreams by the balance rule and skips failed ones.
    """

    def pool(self, balance: str) -> tuple[UpstreamPool, Clock]:
        clock = Clock()
        options = RelayOptions(
            (Upstream("a", 1), Upstream("b", 2), Upstream("c", 3)), balance, 5.0, 10.0
        )
        return UpstreamPool(options, clock), clock

    def test_roundRobin(self):
        """
        Each new client starts one further along.
        """
        pool, _ = self.pool("round_robin")
        self.assertEqual(
            [pool.candidates()[0].host for _ in range(4)], ["a", "b", "c", "a"]
        )

    def test_first(self):
        """
        first always starts with the first.
        """
        pool, _ = self.pool("first")
        self.assertEqual([pool.candidates()[0].host for _ in range(2)], ["a", "a"])

    def test_leastConnections(self):
        """
        least_connections starts with the upstream holding fewest.
        """
        pool, _ = self.pool("least_connections")
        pool.active = {Upstream("a", 1): 3, Upstream("b", 2): 1, Upstream("c", 3): 2}
        self.assertEqual([u.host for u in pool.candidates()], ["b", "c", "a"])

    def test_failedSkipped(self):
        """
        A failed upstream is skipped for fail_timeout, then tried again.
        """
        pool, clock = self.pool("first")
        pool.failed(Upstream("a", 1))
        self.assertEqual([u.host for u in pool.candidates()], ["b", "c"])
        clock.advance(10)
        self.assertEqual([u.host for u in pool.candidates()], ["a", "b", "c"])


class RelayMixin:
    """
    Real upstreams and a relay port on 127.0.0.1.
    """

    def upstream(self) -> int:
        port = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def relay(self, options: dict) -> PortsService:
        request = parsePortItem("127.0.0.1:0=relay", "test")
        from attrs import evolve

        request = evolve(request, options=options)
        config = buildConfig([request], Defaults(), HANDLERS, Path(self.mktemp()))
        service = PortsService(config, HANDLERS, {}, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    @inlineCallbacks
    def exchange(self, service: PortsService, payload: bytes, expected: int):
        client = Collector(payload, expected)
        bound = service.boundPorts()[0]
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", bound.address.port).connect(
            Factory.forProtocol(lambda: client)
        )
        received = yield client.done
        # The relay passes the client's end of file to the upstream first;
        # its side closes a few turns later.
        yield waitUntil(lambda: bound.counters.current == 0)
        return received


class RelayTests(RelayMixin, TestCase):
    """
    The relay on real ports.
    """

    @inlineCallbacks
    def test_relaysIntact(self):
        """
        Several MB of random bytes come back through the relay unchanged.
        """
        service = self.relay({"upstream": f"127.0.0.1:{self.upstream()}"})
        payload = os.urandom(4 * 1024 * 1024)
        received = yield self.exchange(service, payload, len(payload))
        self.assertEqual(
            hashlib.sha256(received).hexdigest(), hashlib.sha256(payload).hexdigest()
        )

    @inlineCallbacks
    def test_nextUpstreamWhenOneRefuses(self):
        """
        An upstream that refuses is skipped and counted; the next serves.
        """
        import socket

        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        refused = probe.getsockname()[1]
        probe.close()
        service = self.relay(
            {
                "upstreams": [f"127.0.0.1:{refused}", f"127.0.0.1:{self.upstream()}"],
                "balance": "first",
            }
        )
        received = yield self.exchange(service, b"hello", 5)
        self.assertEqual(received, b"hello")
        context = list(service)[0].factory.handlerContext
        self.assertEqual(
            context.counters.value(
                "upstream_connect_failures", upstream=f"127.0.0.1:{refused}"
            ),
            1,
        )

    @inlineCallbacks
    def test_noUpstreamClosesClient(self):
        """
        When no upstream answers, the client is closed promptly and it is
        counted.
        """
        import socket

        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        refused = probe.getsockname()[1]
        probe.close()
        service = self.relay({"upstream": f"127.0.0.1:{refused}"})
        received = yield self.exchange(service, b"hello", 5)
        self.assertEqual(received, b"")
        context = list(service)[0].factory.handlerContext
        yield waitUntil(lambda: context.counters.value("no_upstream") == 1)


class Recorder(Protocol):
    """
    Keeps every byte an upstream receives.
    """

    received: list[bytes]

    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        self.received = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)


class UpstreamFeaturesTests(RelayMixin, TestCase):
    """
    Upstream TLS and the PROXY protocol to the upstream.
    """

    def tlsUpstream(self) -> tuple[int, Path]:
        import datetime

        from twisted.internet.ssl import CertificateOptions, PrivateCertificate

        from multiport.tls import makeSelfSigned

        cert, key = makeSelfSigned(datetime.datetime.now(datetime.UTC), "localhost")
        path = Path(self.mktemp())
        path.write_bytes(cert)
        private = PrivateCertificate.loadPEM(cert + key)
        options = CertificateOptions(
            privateKey=private.privateKey.original, certificate=private.original
        )
        port = reactor.listenSSL(
            0, Factory.forProtocol(Echo), options, interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        return port.getHost().port, path

    @inlineCallbacks
    def test_upstreamTLSVerified(self):
        """
        With upstream_tls and the upstream's CA, bytes go over TLS.
        """
        port, ca = self.tlsUpstream()
        service = self.relay(
            {
                "upstream": f"127.0.0.1:{port}",
                "upstream_tls": True,
                "upstream_server_name": "localhost",
                "upstream_ca": str(ca),
            }
        )
        received = yield self.exchange(service, b"secret", 6)
        self.assertEqual(received, b"secret")

    @inlineCallbacks
    def test_upstreamWrongName(self):
        """
        An upstream whose certificate doesn't carry the expected name gets
        no bytes: the client is closed.
        """
        port, ca = self.tlsUpstream()
        service = self.relay(
            {
                "upstream": f"127.0.0.1:{port}",
                "upstream_tls": True,
                "upstream_server_name": "other.test",
                "upstream_ca": str(ca),
            }
        )
        received = yield self.exchange(service, b"secret", 6)
        self.assertEqual(received, b"")

    @inlineCallbacks
    def test_upstreamUnverified(self):
        """
        upstream_tls_verify = false connects anyway, with a warning.
        """
        from twisted.logger import capturedLogs

        port, _ = self.tlsUpstream()
        with capturedLogs() as events:
            service = self.relay(
                {
                    "upstream": f"127.0.0.1:{port}",
                    "upstream_tls": True,
                    "upstream_tls_verify": False,
                }
            )
        self.assertTrue(any("not checked" in e.get("log_format", "") for e in events))
        received = yield self.exchange(service, b"secret", 6)
        self.assertEqual(received, b"secret")

    @inlineCallbacks
    def test_sendProxy(self):
        """
        send_proxy_protocol v1 and v2 put the client's address first.
        """
        from multiport.proxyprotocol import HeaderParser

        for version in ("v1", "v2"):
            factory = Factory.forProtocol(Recorder)
            factory.connections = []
            listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
            self.addCleanup(listening.stopListening)
            service = self.relay(
                {
                    "upstream": f"127.0.0.1:{listening.getHost().port}",
                    "send_proxy_protocol": version,
                }
            )
            client = Collector(b"hello")
            port = service.boundPorts()[0].address.port
            connected = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
                Factory.forProtocol(lambda c=client: c)
            )
            yield waitUntil(
                lambda f=factory: (
                    f.connections and b"hello" in b"".join(f.connections[0].received)
                )
            )
            parser = HeaderParser(version)
            info = parser.feed(b"".join(factory.connections[0].received))
            self.assertEqual(parser.rest, b"hello")
            self.assertEqual(info.source.port, connected.transport.getHost().port)
            self.assertEqual(info.destination.port, port)
            connected.transport.loseConnection()
            yield client.done
            yield service.stopService()


@implementer(IHalfCloseableProtocol)
class AnswerAtEnd(Protocol):
    """
    An upstream that answers only once the client has finished sending:
    everything it got, then "bye", then it closes.
    """

    def connectionMade(self) -> None:
        self.got = b""

    def dataReceived(self, data: bytes) -> None:
        self.got += data

    def readConnectionLost(self) -> None:
        self.transport.write(self.got + b" bye")
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


@implementer(IHalfCloseableProtocol)
class HalfCloser(Protocol):
    """
    A client that sends, shuts its sending side, and reads to the end.
    """

    def __init__(self) -> None:
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"question")
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason=None) -> None:
        self.done.callback(self.received)


class HalfCloseTests(RelayMixin, TestCase):
    """
    End of file passes through the relay; the other side still answers.
    """

    @inlineCallbacks
    def test_clientHalfClose(self):
        """
        The client's shutdown reaches the upstream as end of file, and the
        upstream's answer still reaches the client.
        """
        listening = reactor.listenTCP(
            0, Factory.forProtocol(AnswerAtEnd), interface="127.0.0.1"
        )
        self.addCleanup(listening.stopListening)
        service = self.relay({"upstream": f"127.0.0.1:{listening.getHost().port}"})
        bound = service.boundPorts()[0]
        client = HalfCloser()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", bound.address.port).connect(
            Factory.forProtocol(lambda: client)
        )
        received = yield client.done
        self.assertEqual(received, b"question bye")
        yield waitUntil(lambda: bound.counters.current == 0)
