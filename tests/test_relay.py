"""
Tests for the relay handler: options, upstream choice, and bytes relayed
intact to real upstreams on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path

from attrs import evolve
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from multiport.config.build import buildConfig
from multiport.config.model import Defaults, TLSConfig
from multiport.config.portspec import parsePortItem
from multiport.daemon.service import PortsService
from multiport.handlers.interface import OptionError
from multiport.handlers.relayoptions import RelayOptions, Upstream, parseRelayOptions
from multiport.handlers.relayupstream import UpstreamPool
from multiport.handlers.simple import Echo
from multiport.io.splice import KEEP_AT_LEAST, PipePool, poolSize
from multiport.ports.admission import DaemonLimit
from multiport.ports.tls import ensureSelfSigned
from tests.support import HANDLERS, Daemon, waitUntilOnReactor
from tests.test_endtoend import Collector


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

    #: The relay's splice option, when a test class sets it.
    spliceOption: bool | None = None

    def relay(
        self,
        options: dict,
        spec: str = "127.0.0.1:0=relay",
        pipes: PipePool | None = None,
    ) -> PortsService:
        if self.spliceOption is not None:
            options = {**options, "splice": self.spliceOption}
        request = evolve(parsePortItem(spec, "test"), options=options)
        config = buildConfig([request], Defaults(), HANDLERS, Path(self.mktemp()))
        certificates = {}
        if request.tls is not None:
            certificates[TLSConfig()] = ensureSelfSigned(config.stateDir)
            self.certificate = config.stateDir / "selfsigned-cert.pem"
        service = PortsService(config, HANDLERS, certificates, reactor, pipes=pipes)
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
        yield waitUntilOnReactor(lambda: bound.counters.current == 0)
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
    def test_upstreamByName(self):
        """
        An upstream named by its host name (resolved when connecting, both
        address families tried) relays too.
        """
        service = self.relay({"upstream": f"localhost:{self.upstream()}"})
        payload = os.urandom(256 * 1024)
        received = yield self.exchange(service, payload, len(payload))
        self.assertEqual(digest(received), digest(payload))

    @inlineCallbacks
    def test_closedWhileConnecting(self):
        """
        A client connection closed by the daemon (a timeout, a drain) while
        the upstream connection is still being made: the attempt is
        stopped, nobody is blamed, nothing stays open.
        """
        # A listening socket whose accept queue is full drops new SYNs: a
        # connect to it stays in progress.
        full = socket.socket()
        self.addCleanup(full.close)
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        filler = socket.socket()
        self.addCleanup(filler.close)
        filler.connect(full.getsockname())
        service = self.relay(
            {"upstream": f"127.0.0.1:{full.getsockname()[1]}", "connect_timeout": 30}
        )
        bound = service.boundPorts()[0]
        client = Collector(b"")
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", bound.address.port).connect(
            Factory.forProtocol(lambda: client)
        )
        factory = list(service)[0].factory
        yield waitUntilOnReactor(lambda: len(factory.protocols) == 1)
        [wrapper] = factory.protocols
        connector = wrapper.wrappedProtocol._connecting
        self.assertEqual(connector.state, "connecting")
        wrapper.transport.abortConnection()
        yield client.done
        yield waitUntilOnReactor(lambda: bound.counters.current == 0)
        self.assertEqual(connector.state, "disconnected")
        counters = factory.handlerContext.counters.snapshot()
        self.assertEqual({key for key, value in counters.items() if value}, set())

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
        yield waitUntilOnReactor(lambda: context.counters.value("no_upstream") == 1)


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

        from multiport.ports.tls import makeSelfSigned

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
        from multiport.ports.proxyheader import HeaderParser

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
            yield waitUntilOnReactor(
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
        yield waitUntilOnReactor(lambda: bound.counters.current == 0)

    @inlineCallbacks
    def test_upstreamHalfClose(self):
        """
        The upstream's shutdown reaches the client as end of file, and the
        client's answer, sent after it, still reaches the upstream.
        """
        upstreams: list[HalfCloser] = []

        def upstreamSide() -> HalfCloser:
            upstreams.append(HalfCloser())
            return upstreams[-1]

        listening = reactor.listenTCP(
            0, Factory.forProtocol(upstreamSide), interface="127.0.0.1"
        )
        self.addCleanup(listening.stopListening)
        service = self.relay({"upstream": f"127.0.0.1:{listening.getHost().port}"})
        bound = service.boundPorts()[0]
        client = AnswerAtEnd()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", bound.address.port).connect(
            Factory.forProtocol(lambda: client)
        )
        yield waitUntilOnReactor(lambda: len(upstreams) == 1)
        received = yield upstreams[0].done
        self.assertEqual(received, b"question bye")
        yield waitUntilOnReactor(lambda: bound.counters.current == 0)


class Talker(Protocol):
    """
    One end of a two-way exchange: sends C{payload} as soon as it is
    connected, keeps what arrives, and closes (after its own bytes have
    gone out) once C{expected} bytes came.  C{done} fires with what it got
    when the connection is gone.
    """

    def __init__(self, payload: bytes, expected: int) -> None:
        self.payload = payload
        self.expected = expected
        self.chunks: list[bytes] = []
        self.count = 0
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        self.count += len(data)
        if self.count >= self.expected:
            self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        self.done.callback(b"".join(self.chunks))


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class IntegrityTests(RelayMixin, TestCase):
    """
    Several MB each way at the same time arrive byte for byte, over a
    plain and a TLS port.
    """

    @inlineCallbacks
    def bothWays(self, spec: str, tls: bool):
        toUpstream = os.urandom(3 * 1024 * 1024 + 17)
        toClient = os.urandom(5 * 1024 * 1024 + 3)
        upstreams: list[Talker] = []

        def upstreamSide() -> Talker:
            talker = Talker(toClient, len(toUpstream))
            upstreams.append(talker)
            return talker

        listening = reactor.listenTCP(
            0, Factory.forProtocol(upstreamSide), interface="127.0.0.1"
        )
        self.addCleanup(listening.stopListening)
        service = self.relay(
            {"upstream": f"127.0.0.1:{listening.getHost().port}"}, spec
        )
        bound = service.boundPorts()[0]
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", bound.address.port)
        if tls:
            trust = Certificate.loadPEM(self.certificate.read_bytes())
            endpoint = wrapClientTLS(optionsForClientTLS("localhost", trust), endpoint)
        client = Talker(toUpstream, len(toClient))
        yield endpoint.connect(Factory.forProtocol(lambda: client))
        atClient = yield client.done
        yield waitUntilOnReactor(lambda: len(upstreams) == 1)
        atUpstream = yield upstreams[0].done
        self.assertEqual(digest(atClient), digest(toClient))
        self.assertEqual(digest(atUpstream), digest(toUpstream))
        yield waitUntilOnReactor(lambda: bound.counters.current == 0)
        self.assertEqual(bound.counters.bytesReceived, len(toUpstream))
        self.assertEqual(bound.counters.bytesSent, len(toClient))
        context = list(service)[0].factory.handlerContext
        upstream = f"127.0.0.1:{listening.getHost().port}"
        self.assertEqual(
            context.counters.value("bytes_to_upstream", upstream=upstream),
            len(toUpstream),
        )
        self.assertEqual(
            context.counters.value("bytes_from_upstream", upstream=upstream),
            len(toClient),
        )

    def test_plain(self):
        """
        Over a plain port.
        """
        return self.bothWays("127.0.0.1:0=relay", tls=False)

    def test_tls(self):
        """
        Over a TLS port (the relay sees the decrypted bytes).
        """
        return self.bothWays("127.0.0.1:0=relay+tls", tls=True)


class IntegrityWithoutSpliceTests(IntegrityTests):
    """
    The same with splice = false: Python reads and writes.
    """

    spliceOption = False


class Silent(Protocol):
    """
    An upstream that accepts and never answers; it records when it is
    closed, and can be told to close or reset mid-stream.
    """

    def __init__(self, closeAfter: int | None = None) -> None:
        self.closeAfter = closeAfter
        self.got = 0
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.factory.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.got += len(data)
        if self.closeAfter is not None and self.got >= self.closeAfter:
            self.transport.abortConnection()

    def connectionLost(self, reason=None) -> None:
        self.lost.callback(None)


class FaultTests(RelayMixin, TestCase):
    """
    Upstreams and clients that go away at the wrong moment: the other side
    is closed, and nothing stays open.
    """

    def silentUpstream(self, closeAfter: int | None = None):
        factory = Factory.forProtocol(lambda: Silent(closeAfter))
        factory.connections = []
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        service = self.relay({"upstream": f"127.0.0.1:{listening.getHost().port}"})
        return factory, service

    @inlineCallbacks
    def assertNothingLeft(self, service: PortsService):
        bound = service.boundPorts()[0]
        yield waitUntilOnReactor(lambda: bound.counters.current == 0)
        pool = list(service)[0].factory.handlerContext
        factory = list(service)[0].factory
        self.assertEqual(bound.counters.accepted, bound.counters.closed)
        self.assertEqual(set(factory.wrappedFactory.pool.active.values()), {0})
        self.assertEqual(pool.counters.value("no_upstream"), 0)

    @inlineCallbacks
    def test_upstreamNeverAnswers(self):
        """
        A client of an upstream that never answers can still leave; the
        upstream connection is closed with it.
        """
        factory, service = self.silentUpstream()
        client = Collector(b"anyone there?")
        port = service.boundPorts()[0].address.port
        connected = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: client)
        )
        yield waitUntilOnReactor(
            lambda: factory.connections and factory.connections[0].got == 13
        )
        connected.transport.loseConnection()
        yield client.done
        yield factory.connections[0].lost
        yield self.assertNothingLeft(service)

    @inlineCallbacks
    def test_upstreamClosesMidStream(self):
        """
        An upstream that resets half-way through a transfer: the client is
        closed, and the relay keeps nothing.
        """
        factory, service = self.silentUpstream(closeAfter=256 * 1024)
        client = Collector(os.urandom(4 * 1024 * 1024))
        port = service.boundPorts()[0].address.port
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: client)
        )
        received = yield client.done
        self.assertEqual(received, b"")
        yield factory.connections[0].lost
        yield self.assertNothingLeft(service)

    @inlineCallbacks
    def test_clientResetsMidStream(self):
        """
        A client that resets half-way through: the upstream connection is
        closed too.
        """
        factory, service = self.silentUpstream()
        client = Collector(os.urandom(1024 * 1024))
        port = service.boundPorts()[0].address.port
        connected = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: client)
        )
        yield waitUntilOnReactor(
            lambda: factory.connections and factory.connections[0].got > 0
        )
        connected.transport.abortConnection()
        yield client.done
        yield factory.connections[0].lost
        yield self.assertNothingLeft(service)


def residentBytes(pid: int) -> int:
    """
    The resident memory of process C{pid}, from /proc.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


MB = 1024 * 1024


class FlowControlTests(SynchronousTestCase):
    """
    A real daemon relays 200 MB each way to a side that reads slower than
    the other sends, and its memory stays within a few MB of where it
    started: a side that stops reading pauses the other.

    Blocking sockets are fine here: the daemon is another process.
    """

    total = 200 * MB
    splice = True
    chunk = b"\xa5" * MB

    def setUp(self) -> None:
        self.upstream = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(self.upstream.close)
        folder = Path(self.mktemp()).absolute()
        folder.mkdir(parents=True)
        (folder / "multiport.toml").write_text(
            "[[port]]\ninterface = '127.0.0.1'\nport = 0\nhandler = 'relay'\n"
            f"options = {{ upstream = '127.0.0.1:{self.upstream.getsockname()[1]}',"
            f" splice = {str(self.splice).lower()} }}\n"
        )
        self.daemon = Daemon(
            ["--no-status", "--config", str(folder / "multiport.toml")], str(folder)
        )
        self.addCleanup(self.daemon.stop)
        self.port = self.daemon.listening(1)["relay"][1]
        self.samples: list[int] = []

    def sample(self) -> None:
        self.samples.append(residentBytes(self.daemon.process.pid))

    def connect(self) -> tuple[socket.socket, socket.socket]:
        client = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.addCleanup(client.close)
        server, _ = self.upstream.accept()
        server.settimeout(30)
        self.addCleanup(server.close)
        return client, server

    def push(self, sender: socket.socket) -> None:
        """
        Send C{total} bytes as fast as the relay takes them, sampling the
        daemon's memory every 8 MB, then half-close.
        """
        for index in range(self.total // len(self.chunk)):
            sender.sendall(self.chunk)
            if index % 8 == 0:
                self.sample()
        sender.shutdown(socket.SHUT_WR)

    def drainSlowly(self, reader: socket.socket) -> int:
        """
        Read to end of file at no more than 100 MB/s (pausing whenever it
        is ahead of that pace).
        """
        got = 0
        start = time.monotonic()
        while data := reader.recv(256 * 1024):
            got += len(data)
            ahead = got / (100 * MB) - (time.monotonic() - start)
            if ahead > 0:
                # Pacing a slow reader, not waiting for an event: the
                # relay must cope with a peer that reads this slowly.
                time.sleep(ahead)
        return got

    def relayOneWay(self, sender: socket.socket, reader: socket.socket) -> None:
        results: list[int] = []
        thread = threading.Thread(
            target=lambda: results.append(self.drainSlowly(reader))
        )
        thread.start()
        try:
            self.push(sender)
        finally:
            thread.join(120)
        self.assertEqual(results, [self.total])

    def test_slowUpstream(self) -> None:
        """
        The client sends 200 MB; the upstream reads slowly.  Then the other
        way round: the upstream sends, the client reads slowly.
        """
        client, server = self.connect()
        client.sendall(b"warm up")
        self.assertEqual(server.recv(100), b"warm up")
        server.sendall(b"warm up")
        self.assertEqual(client.recv(100), b"warm up")
        start = residentBytes(self.daemon.process.pid)
        self.relayOneWay(client, server)
        self.relayOneWay(server, client)
        growth = max(self.samples) - start
        self.assertLess(
            growth, 6 * MB, f"grew {growth / MB:.1f} MB from {start / MB:.1f}"
        )


class FaultWithoutSpliceTests(FaultTests):
    """
    The same with splice = false.
    """

    spliceOption = False


class HalfCloseWithoutSpliceTests(HalfCloseTests):
    """
    The same with splice = false.
    """

    spliceOption = False


class SpliceTests(RelayMixin, TestCase):
    """
    Plain TCP on both sides is relayed with splice(2); TLS on either side,
    splice = false, or no descriptors for its pipes fall back to reading
    and writing.
    """

    @inlineCallbacks
    def spliced(
        self,
        options: dict,
        spec: str = "127.0.0.1:0=relay",
        pipes: PipePool | None = None,
        message: bytes = b"ping",
    ):
        """
        Whether a connection through a relay with C{options} is spliced
        (while it is open); C{message} must come back intact either way.
        """
        service = self.relay(
            {"upstream": f"127.0.0.1:{self.upstream()}", **options}, spec, pipes
        )
        bound = service.boundPorts()[0]
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", bound.address.port)
        if spec.endswith("+tls"):
            trust = Certificate.loadPEM(self.certificate.read_bytes())
            endpoint = wrapClientTLS(optionsForClientTLS("localhost", trust), endpoint)
        client = Talker(message, len(message))
        client.connectionMade = lambda: None
        connected = yield endpoint.connect(Factory.forProtocol(lambda: client))
        factory = list(service)[0].factory
        yield waitUntilOnReactor(
            lambda: any(p.wrappedProtocol.upstream for p in factory.protocols)
        )
        [wrapper] = factory.protocols
        spliced = wrapper.wrappedProtocol.splice is not None
        connected.transport.write(message)
        received = yield client.done
        self.assertEqual(received, message)
        yield waitUntilOnReactor(lambda: bound.counters.current == 0)
        return spliced

    @inlineCallbacks
    def test_plainIsSpliced(self):
        """
        Plain TCP both sides: spliced.
        """
        self.assertTrue((yield self.spliced({})))

    @inlineCallbacks
    def test_optionOff(self):
        """
        splice = false: not spliced.
        """
        self.assertFalse((yield self.spliced({"splice": False})))

    @inlineCallbacks
    def test_tlsPortNotSpliced(self):
        """
        A TLS port: not spliced (the bytes must be decrypted).
        """
        self.assertFalse((yield self.spliced({}, "127.0.0.1:0=relay+tls")))

    @inlineCallbacks
    def test_noPipes(self):
        """
        When no pipe can be made (no descriptors left), the connection is
        still spliced: each direction copies its bytes instead, bulk ones
        (which would splice) included.
        """
        import errno

        def noPipe():
            raise OSError(errno.EMFILE, "Too many open files")

        pool = PipePool(4, makePipe=noPipe)
        bulk = os.urandom(4 * MB)
        self.assertTrue((yield self.spliced({}, pipes=pool, message=bulk)))
        self.assertEqual((pool.taken, pool.inUse), (0, 0))
        self.assertGreater(pool.refused, 0)

    def test_option(self):
        """
        splice is true or false, true by default.
        """
        self.assertTrue(parseRelayOptions({"upstream": "a:1"}, Path(".")).splice)
        self.assertFalse(
            parseRelayOptions({"upstream": "a:1", "splice": False}, Path(".")).splice
        )
        error = self.assertRaises(
            OptionError, parseRelayOptions, {"upstream": "a:1", "splice": 1}, Path(".")
        )
        self.assertEqual(error.key, "splice")


class FlowControlWithoutSpliceTests(FlowControlTests):
    """
    The same through Python's reads and writes (as on TLS ports).
    """

    splice = False


class LocalShortageTests(SynchronousTestCase):
    """
    A connect that fails for lack of descriptors here is not the upstream's
    fault.
    """

    def test_kinds(self):
        import errno

        from twisted.internet.error import ConnectBindError, ConnectionRefusedError
        from twisted.python.failure import Failure

        from multiport.handlers.relayupstream import localShortage

        self.assertTrue(
            localShortage(
                Failure(ConnectBindError(errno.EMFILE, "Too many open files"))
            )
        )
        self.assertTrue(localShortage(Failure(OSError(errno.ENFILE, "table full"))))
        self.assertFalse(localShortage(Failure(ConnectionRefusedError())))
        self.assertFalse(
            localShortage(Failure(ConnectBindError(errno.EADDRNOTAVAIL, "no")))
        )


def broken(descriptor: int) -> bool:
    """
    Whether C{descriptor} is closed.
    """
    try:
        os.fstat(descriptor)
    except OSError:
        return True
    return False


class PipePoolTests(SynchronousTestCase):
    """
    The pipe pool makes pipes on demand, up to its maximum and what the
    daemon limit lends, keeps given-back ones for reuse, and gives their
    descriptors back when a connection needs them.
    """

    def pool(
        self, maximum: int, limit: DaemonLimit | None = None, **kwargs
    ) -> PipePool:
        pool = PipePool(maximum, limit, **kwargs)
        self.addCleanup(pool.close)
        return pool

    def test_madeOnDemandAndKept(self):
        """
        No pipe exists until one is taken; a given-back pipe is kept (its
        descriptors still lent) and handed out again.
        """
        limit = DaemonLimit(maximum=100)
        pool = self.pool(4, limit)
        self.assertEqual((pool.descriptors, limit.current), (0, 0))
        pipe = pool.take()
        self.assertIsNotNone(pipe)
        self.assertEqual((pool.inUse, pool.descriptors, limit.current), (1, 2, 2))
        os.write(pipe[1], b"x")
        self.assertEqual(os.read(pipe[0], 1), b"x")
        pool.give(pipe)
        self.assertEqual((pool.inUse, pool.kept, limit.current), (0, [pipe], 2))
        self.assertEqual(pool.take(), pipe)
        self.assertEqual(pool.taken, 2)
        pool.give(pipe)

    def test_maximum(self):
        """
        Past its maximum the pool hands out nothing, and counts it.
        """
        pool = self.pool(1)
        pipe = pool.take()
        self.assertIsNone(pool.take())
        self.assertEqual(pool.refused, 1)
        pool.give(pipe)

    def test_lendsOnlyWhatPortsMayBorrow(self):
        """
        A pipe's descriptors come only from what ports may borrow beyond
        their share, never from the quarter kept for ports below it.
        """
        limit = DaemonLimit(maximum=16, current=10)
        pool = self.pool(8, limit)
        pipe = pool.take()
        self.assertEqual(limit.current, 12)
        self.assertIsNone(pool.take())
        self.assertEqual((pool.refused, limit.current), (1, 12))
        pool.discard(pipe)
        self.assertEqual(limit.current, 10)

    def test_systemRefuses(self):
        """
        When the system makes no pipe, the pool hands out nothing and the
        descriptors it asked the limit for go back.
        """
        import errno

        def noPipe():
            raise OSError(errno.EMFILE, "Too many open files")

        limit = DaemonLimit(maximum=100)
        pool = self.pool(4, limit, makePipe=noPipe)
        self.assertIsNone(pool.take())
        self.assertEqual((pool.refused, pool.inUse, limit.current), (1, 0, 0))

    def test_keepsAsManyAsInUse(self):
        """
        Given-back pipes are kept up to L{KEEP_AT_LEAST} or as many as are
        in use; the rest are closed and their descriptors go back.
        """
        limit = DaemonLimit(maximum=1000)
        pool = self.pool(100, limit)
        pipes = [pool.take() for _ in range(KEEP_AT_LEAST + 3)]
        for pipe in pipes:
            pool.give(pipe)
        self.assertEqual(len(pool.kept), KEEP_AT_LEAST)
        self.assertEqual(limit.current, 2 * KEEP_AT_LEAST)
        self.assertEqual(sum(broken(p[0]) and broken(p[1]) for p in pipes), 3)

    def test_keptFallsWithTheLoad(self):
        """
        After a burst, giving pipes back as the load falls closes what is
        kept beyond L{KEEP_AT_LEAST}.
        """
        limit = DaemonLimit(maximum=1000)
        pool = self.pool(100, limit)
        pipes = [pool.take() for _ in range(2 * KEEP_AT_LEAST + 8)]
        # Half go back while the other half are still in use: all are kept.
        for pipe in pipes[: KEEP_AT_LEAST + 4]:
            pool.give(pipe)
        self.assertEqual(len(pool.kept), KEEP_AT_LEAST + 4)
        for pipe in pipes[KEEP_AT_LEAST + 4 :]:
            pool.give(pipe)
        self.assertEqual((pool.inUse, len(pool.kept)), (0, KEEP_AT_LEAST))
        self.assertEqual(limit.current, 2 * KEEP_AT_LEAST)

    def test_discarded(self):
        """
        A pipe that still holds bytes is closed, never handed out again.
        """
        limit = DaemonLimit(maximum=100)
        pool = self.pool(4, limit)
        pipe = pool.take()
        os.write(pipe[1], b"left over")
        pool.discard(pipe)
        self.assertTrue(broken(pipe[0]) and broken(pipe[1]))
        self.assertEqual((pool.inUse, pool.kept, limit.current), (0, [], 0))

    def test_reclaimedForAConnection(self):
        """
        When the daemon limit is full, kept pipes are closed to let a
        connection in.
        """
        from twisted.internet.address import IPv4Address

        from multiport.ports.admission import Admission
        from multiport.ports.policies import Policy

        limit = DaemonLimit(maximum=16)
        pool = self.pool(8, limit)
        pipes = [pool.take(), pool.take()]
        for pipe in pipes:
            pool.give(pipe)
        admission = Admission(Policy(), Clock(), limit)
        client = IPv4Address("TCP", "192.0.2.1", 1234)
        for _ in range(6):
            self.assertIsNone(admission.admit(client, 0, cost=2))
        self.assertEqual((limit.current, len(pool.kept)), (16, 2))
        self.assertIsNone(admission.admit(client, 6, cost=2))
        self.assertEqual((limit.current, len(pool.kept)), (16, 1))
        self.assertTrue(broken(pipes[1][0]))
        self.assertIsNone(admission.admit(client, 7, cost=2))
        self.assertEqual((limit.current, pool.kept), (16, []))
        self.assertEqual(admission.admit(client, 8, cost=2), "max_connections")

    def test_close(self):
        """
        Closing the pool closes its kept pipes.
        """
        limit = DaemonLimit(maximum=100)
        pool = self.pool(4, limit)
        pipe = pool.take()
        pool.give(pipe)
        pool.close()
        self.assertTrue(broken(pipe[0]) and broken(pipe[1]))
        self.assertEqual((pool.kept, limit.current), ([], 0))

    def test_size(self):
        """
        The pool is sized as HAProxy's maxpipes: a pipe for a quarter of the
        relayed connections (two descriptors each) the limit holds.
        """
        self.assertEqual(poolSize(20_000 - 1 - 64), 2491)
        self.assertEqual(poolSize(3), 1)


class Held(Protocol):
    """
    An upstream that reads nothing until L{resume}d, then keeps what
    arrives; C{done} fires with it once C{expected} bytes came.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.chunks: list[bytes] = []
        self.count = 0
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        self.factory.connections.append(self)

    def resume(self) -> None:
        self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        self.count += len(data)
        if self.count >= self.expected and not self.done.called:
            self.done.callback(b"".join(self.chunks))


class PipesInFlightTests(RelayMixin, TestCase):
    """
    A spliced connection holds a pipe only while it has bytes in flight;
    when the pool has none to give, it copies, and its bytes still arrive
    intact.
    """

    payload = 16 * MB

    def heldUpstream(self, expected: int) -> tuple[Factory, int]:
        factory = Factory.forProtocol(lambda: Held(expected))
        factory.connections = []
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        return factory, listening.getHost().port

    @inlineCallbacks
    def openSpliced(self, service: PortsService, upstreams: Factory):
        """
        A client connected through C{service}'s relay, once spliced: the
        client and its splice.
        """
        port = service.boundPorts()[0].address.port
        client = Talker(b"", 0)
        client.connectionMade = lambda: None
        factory = list(service)[0].factory
        known = {id(p) for p in factory.protocols}
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: client)
        )

        def newSplice():
            for protocol in factory.protocols:
                if id(protocol) not in known:
                    return protocol.wrappedProtocol.splice
            return None

        yield waitUntilOnReactor(lambda: newSplice() is not None)
        return client, newSplice()

    @inlineCallbacks
    def test_pipeOnlyWhileBytesInFlight(self):
        """
        An idle spliced connection holds no pipe; while the upstream does
        not read, the client's bytes hold one; once they are delivered the
        pipe goes back to the pool (kept for reuse), and they arrive intact.
        """
        pool = PipePool(4)
        self.addCleanup(pool.close)
        upstreams, upstreamPort = self.heldUpstream(self.payload)
        service = self.relay({"upstream": f"127.0.0.1:{upstreamPort}"}, pipes=pool)
        client, splice = yield self.openSpliced(service, upstreams)
        self.assertEqual((pool.taken, pool.inUse, pool.kept), (0, 0, []))
        self.assertEqual((splice.first.pipe, splice.second.pipe), (None, None))

        payload = os.urandom(self.payload)
        client.transport.write(payload)
        yield waitUntilOnReactor(lambda: splice.first.queued > 0)
        self.assertEqual(pool.inUse, 1)
        self.assertIsNotNone(splice.first.pipe)
        self.assertIsNone(splice.second.pipe)

        [upstream] = upstreams.connections
        upstream.resume()
        received = yield upstream.done
        self.assertEqual(digest(received), digest(payload))
        yield waitUntilOnReactor(lambda: pool.inUse == 0)
        self.assertIsNone(splice.first.pipe)
        self.assertEqual(len(pool.kept), 1)
        client.transport.loseConnection()
        yield client.done

    @inlineCallbacks
    def test_smallMessagesCopy(self):
        """
        Small messages are copied, with no pipe taken: a splice would cost
        twice the system calls.  A bulk transfer (a read that fills the copy
        buffer) switches its direction to splicing, and a small splice
        switches it back.
        """
        pool = PipePool(4)
        self.addCleanup(pool.close)
        bulk = 4 * MB
        upstreams, upstreamPort = self.heldUpstream(20 * 64 + bulk + 64)
        service = self.relay({"upstream": f"127.0.0.1:{upstreamPort}"}, pipes=pool)
        client, splice = yield self.openSpliced(service, upstreams)
        [upstream] = upstreams.connections
        upstream.resume()
        for sent in range(1, 21):
            client.transport.write(b"m" * 64)
            yield waitUntilOnReactor(lambda sent=sent: upstream.count == sent * 64)
        self.assertEqual((pool.taken, splice.first.bulk), (0, False))

        payload = os.urandom(bulk)
        client.transport.write(payload)
        yield waitUntilOnReactor(lambda: upstream.count == 20 * 64 + bulk)
        self.assertGreater(pool.taken, 0)
        client.transport.write(b"e" * 64)
        received = yield upstream.done
        self.assertEqual(received[20 * 64 : 20 * 64 + bulk], payload)
        self.assertEqual(received[-64:], b"e" * 64)
        yield waitUntilOnReactor(lambda: not splice.first.bulk)
        client.transport.loseConnection()
        yield client.done

    @inlineCallbacks
    def test_exhaustedPoolCopies(self):
        """
        With the pool's only pipe held by one connection, a second one
        copies both ways, byte for byte; the first then completes intact.
        """
        pool = PipePool(1)
        self.addCleanup(pool.close)
        toUpstream = os.urandom(3 * MB + 17)
        toClient = os.urandom(5 * MB + 3)
        upstreams, upstreamPort = self.heldUpstream(len(toUpstream))
        service = self.relay({"upstream": f"127.0.0.1:{upstreamPort}"}, pipes=pool)

        holder, holding = yield self.openSpliced(service, upstreams)
        held = os.urandom(self.payload)
        holder.transport.write(held)
        yield waitUntilOnReactor(lambda: holding.first.queued > 0)
        self.assertEqual(pool.inUse, 1)
        taken, refused = pool.taken, pool.refused

        client, splice = yield self.openSpliced(service, upstreams)
        upstream = upstreams.connections[-1]
        upstream.resume()
        upstream.transport.write(toClient)
        client.expected = len(toClient)
        client.transport.write(toUpstream)
        atUpstream = yield upstream.done
        self.assertEqual(digest(atUpstream), digest(toUpstream))
        yield waitUntilOnReactor(lambda: client.count >= len(toClient))
        self.assertEqual(digest(b"".join(client.chunks)), digest(toClient))
        yield client.done
        self.assertEqual(pool.taken, taken)
        self.assertGreater(pool.refused, refused)
        self.assertIsNotNone(holding.first.pipe)

        first = upstreams.connections[0]
        first.expected = len(held)
        first.resume()
        atFirst = yield first.done
        self.assertEqual(digest(atFirst), digest(held))
        holder.transport.loseConnection()
        yield holder.done
        bound = service.boundPorts()[0]
        yield waitUntilOnReactor(lambda: bound.counters.current == 0)
        self.assertEqual(pool.inUse, 0)
        self.assertEqual(bound.counters.bytesReceived, len(held) + len(toUpstream))
        self.assertEqual(bound.counters.bytesSent, len(toClient))
