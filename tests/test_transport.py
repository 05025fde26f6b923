"""
Tests for L{multiport.io.transport} and L{multiport.io.reactor}: a transport that
sends at once still keeps Twisted's transport contract (ordering, flow
control, half-close, closing, aborting, TLS on top), with real connections
on 127.0.0.1.
"""

from __future__ import annotations

import datetime
import json
import os
import select
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from twisted.application.reactors import getReactorTypes
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    TCP4ClientEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import context, log
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from multiport.handlers.simple import Echo
from multiport.io import transport as fast
from multiport.io.reactor import MultiportEPollReactor
from multiport.io.splice import Splice
from multiport.io.transport import (
    HOLD_LIMIT,
    FastPort,
    FastServer,
    WriteBatch,
    coalesceWrites,
)
from multiport.ports.proxyprotocol import ProxiedTransport
from multiport.ports.sockets import listenTCP
from multiport.ports.tls import makeSelfSigned
from tests.support import dataSegmentsIn, waitUntil, waitUntilOnReactor

#: Smallish kernel buffers on both ends, so Twisted's own buffer fills
#: soon; not below loopback's segment size (about 64 KB), where TCP stalls.
SMALL = 131072


def pattern(size: int, seed: int = 0) -> bytes:
    """
    C{size} bytes in which any misplaced or lost chunk shows.
    """
    block = bytes((seed + i * 7) % 251 for i in range(251))
    return (block * (size // len(block) + 1))[:size]


#: The TCP state (linux/tcp_states.h) of a socket that got a reset.
TCP_CLOSE = 7


def tcpState(connection: socket.socket) -> int:
    """
    The kernel's TCP state of C{connection} (the first byte of TCP_INFO).
    """
    return connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def queued(transport: FastServer) -> int:
    """
    The bytes in Twisted's buffer of C{transport}.
    """
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class Server(Protocol):
    """
    The server side: remembers what it got and how it ended.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.made: Deferred[Server] = Deferred()
        self.lost: Deferred[BaseException] = Deferred()

    def connectionMade(self) -> None:
        self.transport.socket.setsockopt(  # type: ignore[attr-defined]
            socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL
        )
        self.made.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        # The exception, not the Failure, which would make it an errback.
        self.lost.callback(reason.value)


@implementer(IHalfCloseableProtocol)
class Client(Protocol):
    """
    The client side: collects everything, may start paused, and tells when
    the server half-closed and when the connection ended.  At end-of-file it
    closes too, unless asked to keep its own direction open.
    """

    def __init__(self, paused: bool = False, keepOpen: bool = False) -> None:
        self.paused = paused
        self.keepOpen = keepOpen
        self.received = bytearray()
        self.made: Deferred[Client] = Deferred()
        self.eof: Deferred[bytes] = Deferred()
        self.lost: Deferred[BaseException] = Deferred()

    def connectionMade(self) -> None:
        skt = self.transport.getHandle()  # type: ignore[attr-defined]
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL)
        if self.paused:
            self.transport.pauseProducing()  # type: ignore[attr-defined]
        self.made.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.eof.callback(bytes(self.received))
        if not self.keepOpen:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        # The exception, not the Failure, which would make it an errback.
        self.lost.callback(reason.value)


class TransportTestsMixin:
    """
    Listening on a L{FastPort}, connecting to it; everything is closed when
    the test ends.
    """

    timeout = 60

    def listen(self: Any, factory: Factory) -> int:
        port = FastPort(0, factory, 50, "127.0.0.1", reactor)
        port.startListening()
        self.addCleanup(port.stopListening)
        return port.getHost().port  # type: ignore[no-any-return]

    @inlineCallbacks
    def connect(
        self: Any, client: Client | None = None
    ) -> Generator[Deferred[Any], Any, tuple[Server, Client]]:
        """
        A connected pair: the server protocol (on a L{FastServer}) and
        C{client}.
        """
        servers: list[Server] = []

        def build(address: object) -> Server:
            server = Server()
            servers.append(server)
            return server

        factory = Factory()
        factory.buildProtocol = build  # type: ignore[method-assign]
        port = self.listen(factory)
        client = client or Client()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        yield client.made
        yield waitUntilOnReactor(lambda: servers)
        server = servers[0]
        yield server.made
        self.addCleanup(self.closeBoth, server, client)
        return server, client

    @inlineCallbacks
    def closeBoth(
        self, server: Server, client: Client
    ) -> Generator[Deferred[Any], Any, None]:
        for protocol in (server, client):
            if not protocol.lost.called:
                protocol.transport.abortConnection()  # type: ignore[attr-defined]
        for protocol in (server, client):
            if not protocol.lost.called:
                yield protocol.lost


class FastServerTests(TransportTestsMixin, TestCase):
    """
    L{FastServer} over real connections.
    """

    @inlineCallbacks
    def test_portMakesFastServers(self) -> Generator[Deferred[Any], Any, None]:
        """
        L{FastPort}'s connections are L{FastServer}s, which any port class
        gets by naming it as its C{transport}.
        """
        server, client = yield self.connect()
        self.assertIsInstance(server.transport, FastServer)
        self.assertIs(FastPort.transport, FastServer)

    @inlineCallbacks
    def test_repr(self) -> Generator[Deferred[Any], Any, None]:
        """
        A L{FastServer}'s repr is C{tcp.Server}'s, made when asked rather
        than kept per connection.
        """
        server, client = yield self.connect()
        transport = server.transport
        port = transport.server._realPortNumber
        self.assertEqual(repr(transport), f"<Server #{transport.sessionno} on {port}>")
        self.assertNotIn("repstr", vars(transport))

    @inlineCallbacks
    def test_noDelay(self) -> Generator[Deferred[Any], Any, None]:
        """
        The server side of an accepted connection has C{TCP_NODELAY} set
        (the client side, left alone, shows the kernel's default is off).
        """
        server, client = yield self.connect()
        serverSocket = server.transport.socket  # type: ignore[attr-defined]
        clientSocket = client.transport.getHandle()  # type: ignore[attr-defined]
        nodelay = (socket.IPPROTO_TCP, socket.TCP_NODELAY)
        self.assertTrue(serverSocket.getsockopt(*nodelay))
        self.assertFalse(clientSocket.getsockopt(*nodelay))
        self.assertTrue(server.transport.getTcpNoDelay())  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_noDelayAskedAgain(self) -> Generator[Deferred[Any], Any, None]:
        """
        Asking for C{TCP_NODELAY} again (twisted.web does on every
        connection) costs no C{setsockopt}; turning it off and on still
        does both.
        """
        server, client = yield self.connect()
        transport = server.transport
        self.assertIsInstance(transport, FastServer)
        calls: list[tuple[object, ...]] = []
        real = transport.socket

        class Recording(CountingSocket):
            def setsockopt(self, *arguments: Any) -> None:
                calls.append(arguments)
                real.setsockopt(*arguments)

        transport.socket = Recording(real)
        nodelay = (socket.IPPROTO_TCP, socket.TCP_NODELAY)
        transport.setTcpNoDelay(True)
        self.assertEqual(calls, [])
        transport.setTcpNoDelay(False)
        self.assertFalse(real.getsockopt(*nodelay))
        transport.setTcpNoDelay(True)
        self.assertTrue(real.getsockopt(*nodelay))
        self.assertEqual(calls, [(*nodelay, False), (*nodelay, True)])
        transport.socket = real

    @inlineCallbacks
    def test_noDelayOnMultiportPorts(self) -> Generator[Deferred[Any], Any, None]:
        """
        Connections accepted by multiport's own ports (L{listenTCP}, which
        every configured port uses) have C{TCP_NODELAY} set too.
        """
        servers: list[Server] = []

        def build(address: object) -> Server:
            servers.append(Server())
            return servers[-1]

        factory = Factory()
        factory.buildProtocol = build  # type: ignore[method-assign]
        port = listenTCP(reactor, 0, factory, 50, "127.0.0.1")
        self.addCleanup(port.stopListening)
        client = Client()
        yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client
        )
        yield waitUntilOnReactor(lambda: servers)
        server = servers[0]
        yield server.made
        self.addCleanup(self.closeBoth, server, client)
        self.assertTrue(
            server.transport.socket.getsockopt(  # type: ignore[attr-defined]
                socket.IPPROTO_TCP, socket.TCP_NODELAY
            )
        )

    @inlineCallbacks
    def test_sendsAtOnce(self) -> Generator[Deferred[Any], Any, None]:
        """
        A write with nothing queued goes to the socket within C{write}:
        nothing is queued and the reactor is not asked to watch for
        writability.
        """
        server, client = yield self.connect()
        server.transport.write(b"hello")
        self.assertEqual(queued(server.transport), 0)
        self.assertNotIn(server.transport, reactor.getWriters())
        server.transport.writeSequence([b", ", b"world"])
        self.assertEqual(queued(server.transport), 0)
        yield waitUntilOnReactor(lambda: len(client.received) == 12)
        self.assertEqual(bytes(client.received), b"hello, world")

    @inlineCallbacks
    def test_orderingUnderSlowReader(self) -> Generator[Deferred[Any], Any, None]:
        """
        Many writes of every size, some sent at once, some partly sent and
        some queued behind earlier ones while the reader is paused, arrive
        complete and in order.
        """
        server, client = yield self.connect(Client(paused=True))
        transport = server.transport
        expected = bytearray()
        paths = {"at once": 0, "partly": 0, "queued": 0}
        sizes = [1, 17, 100, 1000, 3000, 9000, 40000]
        count = 0

        def write(sequence: bool = False) -> None:
            nonlocal count
            data = pattern(sizes[count % len(sizes)], seed=count)
            count += 1
            before = queued(transport)
            if sequence:
                transport.writeSequence([data[:5], data[5:]])
            else:
                transport.write(data)
            after = queued(transport)
            if before:
                paths["queued"] += 1
            elif after == 0:
                paths["at once"] += 1
            else:
                paths["partly"] += 1
            expected.extend(data)

        for cycle in range(3):
            # The reader is paused: write until Twisted queues, then queue
            # a good deal more.
            while queued(transport) < 1_000_000:
                write(sequence=cycle == 1)
            # The reader resumes: while the queue drains, turn after turn,
            # the kernel has room again, yet new writes must queue behind
            # what is already queued.
            client.transport.resumeProducing()
            while queued(transport):
                for _ in range(3):
                    write(sequence=cycle == 2)
                yield deferLater(reactor, 0, lambda: None)
            # Drained: writes go out at once again.
            for _ in range(30):
                write()
            client.transport.pauseProducing()
        client.transport.resumeProducing()
        transport.loseConnection()
        yield client.lost
        self.assertEqual(len(client.received), len(expected))
        self.assertTrue(client.received == expected, "bytes out of order")
        self.assertGreater(paths["at once"], 0)
        self.assertGreater(paths["queued"], 0)

    @inlineCallbacks
    def test_streamingProducer(self) -> Generator[Deferred[Any], Any, None]:
        """
        A streaming producer is paused when the queue goes over
        C{bufferSize} (and only then) and resumed once it drains, again and
        again; everything arrives in order.
        """
        server, client = yield self.connect(Client(paused=True))
        transport = server.transport
        total, chunk = 4_000_000, 16_384
        sent = bytearray()
        events: list[tuple[str, int]] = []

        @implementer(IPushProducer)
        class Producer:
            paused = False

            def produce(self) -> None:
                while not self.paused and len(sent) < total:
                    data = pattern(chunk, seed=len(sent))
                    sent.extend(data)
                    transport.write(data)
                if len(sent) >= total and not self.paused:
                    transport.unregisterProducer()
                    transport.loseConnection()

            def pauseProducing(self) -> None:
                events.append(("pause", queued(transport)))
                self.paused = True

            def resumeProducing(self) -> None:
                events.append(("resume", queued(transport)))
                self.paused = False
                reactor.callLater(0, self.produce)

            def stopProducing(self) -> None:
                events.append(("stop", queued(transport)))

        producer = Producer()
        transport.registerProducer(producer, True)
        producer.produce()
        self.assertEqual(events[0][0], "pause")
        self.assertTrue(transport.producerPaused)
        client.transport.resumeProducing()
        yield client.lost
        self.assertTrue(client.received == sent, "bytes lost or out of order")
        # Paused only with more than bufferSize queued, resumed only once
        # the queue is empty, in turn, more than once; never stopped.
        kinds = [kind for kind, _ in events]
        self.assertEqual(kinds, ["pause", "resume"] * (len(kinds) // 2))
        self.assertGreater(len(kinds), 2)
        for kind, size in events:
            if kind == "pause":
                self.assertGreater(size, transport.bufferSize)
            else:
                self.assertEqual(size, 0)

    @inlineCallbacks
    def test_streamingProducerNotPausedByImmediateWrites(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        """
        Writes the socket takes at once queue nothing and so never pause a
        streaming producer.
        """
        server, client = yield self.connect()
        paused: list[bool] = []

        @implementer(IPushProducer)
        class Producer:
            def pauseProducing(self) -> None:
                paused.append(True)

            def resumeProducing(self) -> None:
                pass

            def stopProducing(self) -> None:
                pass

        server.transport.registerProducer(Producer(), True)
        server.transport.bufferSize = 10
        for _ in range(20):
            server.transport.write(b"x" * 100)
        self.assertEqual((paused, queued(server.transport)), ([], 0))
        yield waitUntilOnReactor(lambda: len(client.received) == 2000)
        server.transport.unregisterProducer()

    @inlineCallbacks
    def test_pullProducer(self) -> Generator[Deferred[Any], Any, None]:
        """
        A pull producer is asked for more each time the queue drains, even
        though its writes could go out at once, until it is done.
        """
        server, client = yield self.connect()
        transport = server.transport
        chunks = [pattern(1000 + i, seed=i) for i in range(50)]
        asked: list[int] = []

        class Producer:
            def resumeProducing(self) -> None:
                asked.append(len(asked))
                if len(asked) <= len(chunks):
                    transport.write(chunks[len(asked) - 1])
                else:
                    transport.unregisterProducer()
                    transport.loseConnection()

            def stopProducing(self) -> None:
                pass

        transport.registerProducer(Producer(), False)
        yield client.lost
        self.assertEqual(bytes(client.received), b"".join(chunks))
        self.assertEqual(len(asked), len(chunks) + 1)

    @inlineCallbacks
    def test_halfClose(self) -> Generator[Deferred[Any], Any, None]:
        """
        C{loseWriteConnection} after writes, some still queued, delivers
        every byte and then end-of-file; the other direction stays open.
        """
        server, client = yield self.connect(Client(paused=True, keepOpen=True))
        expected = bytearray()
        while not queued(server.transport):
            data = pattern(5000, seed=len(expected))
            expected += data
            server.transport.write(data)
        server.transport.loseWriteConnection()
        # Written after the half-close was asked for, before it happened:
        # still delivered first, as by Twisted's own transport.
        server.transport.write(b"last")
        expected += b"last"
        client.transport.resumeProducing()
        received = yield client.eof
        self.assertTrue(received == expected, "bytes lost or out of order")
        client.transport.write(b"still open")
        yield waitUntilOnReactor(lambda: server.received == b"still open")
        # Written after the half-close: dropped, as by Twisted's.
        server.transport.write(b"dropped")
        client.transport.loseConnection()
        reason = yield server.lost
        self.assertIsInstance(reason, ConnectionDone)
        self.assertEqual(bytes(client.received), bytes(expected))

    @inlineCallbacks
    def test_loseConnectionAfterWrites(self) -> Generator[Deferred[Any], Any, None]:
        """
        C{loseConnection} after writes (some sent at once, the rest queued)
        closes only once everything has been delivered.
        """
        server, client = yield self.connect(Client(paused=True))
        expected = pattern(3_000_000)
        for start in range(0, len(expected), 65536):
            server.transport.write(expected[start : start + 65536])
        self.assertGreater(queued(server.transport), 0)
        server.transport.loseConnection()
        client.transport.resumeProducing()
        yield client.lost
        self.assertTrue(client.received == expected, "bytes lost or out of order")
        reason = yield server.lost
        self.assertIsInstance(reason, ConnectionDone)

    @inlineCallbacks
    def test_abortConnection(self) -> Generator[Deferred[Any], Any, None]:
        """
        C{abortConnection} drops what is queued and resets the connection;
        writing afterwards neither raises nor sends.
        """
        server, client = yield self.connect(Client(paused=True))
        total = 0
        while not queued(server.transport):
            server.transport.write(pattern(50_000))
            total += 50_000
        server.transport.abortConnection()
        server.transport.write(b"after the abort")
        reason = yield server.lost
        self.assertIsInstance(reason, ConnectionAborted)
        server.transport.write(b"after the loss")
        client.transport.resumeProducing()
        yield client.lost
        self.assertLess(len(client.received), total)
        self.assertNotIn(b"after", bytes(client.received))

    @inlineCallbacks
    def test_writeAfterPeerReset(self) -> Generator[Deferred[Any], Any, None]:
        """
        Writes to a connection the peer has reset don't raise; the lost
        connection is reported the usual way, on a later reactor turn.
        """
        server, client = yield self.connect()
        # Not reading: the server learns of the reset only by writing.
        server.transport.pauseProducing()
        client.transport.abortConnection()
        yield client.lost
        yield waitUntilOnReactor(
            lambda: tcpState(server.transport.socket) == TCP_CLOSE,
            what="the server's socket to see the reset",
        )
        server.transport.write(b"into a reset connection")
        server.transport.write(b"and again")
        server.transport.writeSequence([b"and ", b"again"])
        reason = yield server.lost
        self.assertNotIsInstance(reason, ConnectionDone)
        server.transport.write(b"after the loss")

    @inlineCallbacks
    def test_notBytes(self) -> Generator[Deferred[Any], Any, None]:
        """
        Like Twisted's own transport, C{write} and C{writeSequence} refuse
        text; an empty write sends nothing.
        """
        server, client = yield self.connect()
        self.assertRaises(TypeError, server.transport.write, "text")
        self.assertRaises(TypeError, server.transport.writeSequence, [b"a", "text"])
        server.transport.write(b"")
        server.transport.writeSequence([])
        server.transport.write(b"ok")
        yield waitUntilOnReactor(lambda: client.received == b"ok")


class StockReactorTests(TransportTestsMixin, TestCase):
    """
    L{FastServer} on Twisted's own reactor (trial's), which has no
    L{WriteBatch}.
    """

    @inlineCallbacks
    def test_noHoldingWithoutBatch(self) -> Generator[Deferred[Any], Any, None]:
        """
        On a reactor without a L{WriteBatch} (Twisted's own) a connection
        can't hold writes: asked to, it says so and keeps sending at once.
        """
        self.assertFalse(hasattr(reactor, "writeBatch"))
        server, client = yield self.connect()
        self.assertFalse(coalesceWrites(server.transport))
        server.transport.write(b"at ")  # type: ignore[union-attr]
        self.assertEqual(queued(server.transport), 0)  # type: ignore[arg-type]
        server.transport.write(b"once")  # type: ignore[union-attr]
        self.assertEqual(queued(server.transport), 0)  # type: ignore[arg-type]
        self.assertIsNone(server.transport._held)  # type: ignore[union-attr]
        yield waitUntilOnReactor(lambda: client.received == b"at once")


class CountingSocket:
    """
    A server connection's socket that records the size of every C{send}
    and what else happened to the connection in between.
    """

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.calls: list[str | int] = []

    def send(self, data: bytes, *flags: int) -> int:
        sent = self.real.send(data, *flags)
        self.calls.append(sent)
        return sent

    @property
    def sends(self) -> list[int]:
        """
        The sizes of the C{send}s so far.
        """
        return [c for c in self.calls if isinstance(c, int)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class Responder(Protocol):
    """
    The server side for L{BatchTests}: its socket counted, its writes held
    (unless C{hold} is false), every read answered by C{respond} (a
    function of the protocol and the bytes read).
    """

    def __init__(self, respond: Callable[[Responder, bytes], None]) -> None:
        self.respond = respond
        self.received = b""
        self.lost: Failure | None = None

    hold = True

    def connectionMade(self) -> None:
        self.sock = CountingSocket(self.transport.socket)  # type: ignore[attr-defined]
        self.transport.socket = self.sock  # type: ignore[attr-defined]
        if self.hold:
            self.holding = coalesceWrites(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.respond(self, data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lost = reason


#: A twisted.web response, written as twisted.web writes one: the headers
#: with writeSequence, then the body.
HEADERS = [b"HTTP/1.1 200 OK\r\n", b"Content-Length: 5\r\n", b"\r\n"]


def respondAsWeb(protocol: Responder, data: bytes) -> None:
    protocol.transport.writeSequence(HEADERS)  # type: ignore[union-attr]
    protocol.transport.write(b"hello")  # type: ignore[union-attr]


class BatchTests(SynchronousTestCase):
    """
    L{FastServer} on multiport's reactor (an instance of its own, turned
    by the test, with real sockets on 127.0.0.1): for a connection that
    holds its writes, what is written while one event is handled or one
    round of timed calls runs leaves in one C{send} when it ends, and
    nothing written later overtakes it.
    """

    def setUp(self) -> None:
        self.reactor = MultiportEPollReactor()
        self.addCleanup(self.closeReactor)
        self.respond: Callable[[Responder, bytes], None] = respondAsWeb
        self.servers: list[Responder] = []

        def build(address: object) -> Responder:
            self.servers.append(Responder(lambda p, d: self.respond(p, d)))
            return self.servers[-1]

        factory = Factory()
        factory.buildProtocol = build  # type: ignore[method-assign]
        self.port = FastPort(0, factory, 50, "127.0.0.1", self.reactor)
        self.port.startListening()

    def closeReactor(self) -> None:
        for call in self.reactor.getDelayedCalls():
            call.cancel()
        for selectable in self.reactor.removeAll():
            selectable.connectionLost(Failure(ConnectionDone("test over")))
        self.reactor.waker.connectionLost(None)
        self.reactor._poller.close()

    def turnUntil(self, predicate: Callable[[], object], timeout: float = 20) -> None:
        """
        Turn the reactor until C{predicate()} is true; fail after
        C{timeout} seconds.
        """

        def turned() -> object:
            # This test's own reactor turns only when asked: each check
            # lets it wait up to 10 ms for an event first.
            self.reactor.iterate(0.01)
            return predicate()

        waitUntil(turned, timeout, interval=0, what=f"{predicate} while turning")

    def connect(self) -> tuple[Responder, socket.socket]:
        """
        A client socket and the server protocol it is connected to.
        """
        client = socket.create_connection(
            ("127.0.0.1", self.port.getHost().port), timeout=20
        )
        self.addCleanup(client.close)
        self.turnUntil(lambda: self.servers)
        return self.servers[-1], client

    def readable(self, client: socket.socket) -> bool:
        return bool(select.select([client], [], [], 0)[0])

    def receive(self, client: socket.socket, size: int) -> bytes:
        """
        Turn the reactor until C{size} bytes have arrived on C{client}.
        """
        received = b""

        def arrived() -> bool:
            nonlocal received
            while len(received) < size and self.readable(client):
                chunk = client.recv(size - len(received))
                if not chunk:
                    raise AssertionError(f"closed after {received!r}")
                received += chunk
            return len(received) == size

        self.turnUntil(arrived)
        return received

    def test_responseInOneSend(self) -> None:
        """
        Headers written with C{writeSequence} and a body written after them
        in the same event leave in one C{send} and one TCP segment.
        """
        server, client = self.connect()
        expected = b"".join(HEADERS) + b"hello"
        for _ in range(3):
            before = dataSegmentsIn(client)
            calls = len(server.sock.sends)
            client.sendall(b"GET / HTTP/1.1\r\n\r\n")
            self.assertEqual(self.receive(client, len(expected)), expected)
            self.assertEqual(server.sock.sends[calls:], [len(expected)])
            self.assertEqual(dataSegmentsIn(client) - before, 1)

    def test_notHeldUnlessAsked(self) -> None:
        """
        A connection whose protocol did not ask for its writes to be held
        sends each at once, as before (an echo's one reply per read costs
        no more).
        """
        self.patch(Responder, "hold", False)
        server, client = self.connect()
        expected = b"".join(HEADERS) + b"hello"
        client.sendall(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(self.receive(client, len(expected)), expected)
        self.assertEqual(server.sock.sends, [len(b"".join(HEADERS)), 5])

    def test_coalesceWritesThroughLayers(self) -> None:
        """
        L{coalesceWrites} finds the connection under the layers a handler's
        protocol sees it through (a protocol wrapper, a PROXY protocol
        transport) and says whether it will hold writes.
        """
        self.patch(Responder, "hold", False)
        server, client = self.connect()
        fastServer = server.transport
        address = IPv4Address("TCP", "127.0.0.1", 1)
        proxied = ProxiedTransport(fastServer, address, address)  # type: ignore[arg-type]
        wrapper = ProtocolWrapper(WrappingFactory(Factory()), Protocol())
        wrapper.transport = proxied  # type: ignore[assignment]
        self.assertIsNone(fastServer._batch)  # type: ignore[union-attr]
        self.assertTrue(coalesceWrites(wrapper))
        self.assertIs(fastServer._batch, self.reactor.writeBatch)  # type: ignore[union-attr]
        self.assertFalse(coalesceWrites(StringTransport()))
        self.assertFalse(coalesceWrites(None))

    def test_replyWithinTheTurn(self) -> None:
        """
        A reply is sent when the event that wrote it ends: one reactor turn
        after the request arrives, the reply is already on the client's side.
        """

        def echo(protocol: Responder, data: bytes) -> None:
            protocol.transport.write(data)  # type: ignore[union-attr]

        self.respond = echo
        server, client = self.connect()
        client.sendall(b"ping")
        self.reactor.doIteration(20)
        self.assertEqual(server.received, b"ping")
        self.assertEqual(server.sock.sends, [4])
        self.assertTrue(select.select([client], [], [], 5)[0], "no reply yet")
        self.assertEqual(client.recv(10), b"ping")

    def test_timedCallsInOneSend(self) -> None:
        """
        Writes made by timed calls (a deferred response) leave in one
        C{send} once the round of timed calls ends.
        """

        def later(protocol: Responder, data: bytes) -> None:
            self.reactor.callLater(0, respondAsWeb, protocol, data)

        self.respond = later
        server, client = self.connect()
        expected = b"".join(HEADERS) + b"hello"
        client.sendall(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(self.receive(client, len(expected)), expected)
        self.assertEqual(server.sock.sends, [len(expected)])

    def test_writesOutsideTheReactor(self) -> None:
        """
        A write made outside any event or timed call (no batch is open)
        goes to the socket within C{write}, as before.
        """
        server, client = self.connect()
        server.transport.write(b"now")  # type: ignore[union-attr]
        self.assertEqual(server.sock.sends, [3])
        self.assertEqual(self.reactor.writeBatch.pending, [])

    def test_largeWritesNotHeld(self) -> None:
        """
        Held writes go out as soon as they reach L{HOLD_LIMIT} bytes, all
        of them in one C{send}; what follows is held afresh.
        """
        small, large = b"s" * 100, b"L" * HOLD_LIMIT

        def respond(protocol: Responder, data: bytes) -> None:
            protocol.transport.write(small)  # type: ignore[union-attr]
            protocol.transport.write(large)  # type: ignore[union-attr]
            protocol.sentInEvent = list(protocol.sock.sends)  # type: ignore[attr-defined]
            protocol.transport.write(small)  # type: ignore[union-attr]

        self.respond = respond
        server, client = self.connect()
        client.sendall(b"go")
        expected = small + large + small
        self.assertEqual(self.receive(client, len(expected)), expected)
        self.assertEqual(server.sentInEvent, [len(small) + len(large)])  # type: ignore[attr-defined]
        self.assertEqual(server.sock.sends, [len(small) + len(large), len(small)])

    def test_orderingUnderSlowReader(self) -> None:
        """
        Writes of every size in one event, some held, some sent, the rest
        queued behind a reader that does not keep up, arrive complete and
        in order, and C{loseConnection} after them closes only once all is
        delivered.
        """
        expected = pattern(2_000_000)
        sizes = [1, 17, 1000, HOLD_LIMIT - 1, 5, HOLD_LIMIT + 1, 300_000, 3]

        def respond(protocol: Responder, data: bytes) -> None:
            start, turn = 0, 0
            while start < len(expected):
                size = sizes[turn % len(sizes)]
                if turn % 3:
                    protocol.transport.write(expected[start : start + size])  # type: ignore[union-attr]
                else:
                    chunk = expected[start : start + size]
                    protocol.transport.writeSequence([chunk[:2], chunk[2:]])  # type: ignore[union-attr]
                start, turn = start + size, turn + 1
            protocol.transport.loseConnection()  # type: ignore[union-attr]

        self.respond = respond
        server, client = self.connect()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL)
        client.sendall(b"go")
        received = self.receive(client, len(expected))
        self.assertTrue(received == expected, "bytes lost or out of order")
        self.turnUntil(lambda: self.readable(client))
        self.assertEqual(client.recv(1), b"")
        self.turnUntil(lambda: server.lost is not None)
        assert server.lost is not None
        self.assertIsInstance(server.lost.value, ConnectionDone)

    def test_spliceSendsHeldFirst(self) -> None:
        """
        A splice set up in the same event as writes to one of its sockets
        sends those writes before anything it moves itself.
        """
        _, otherClient = self.connect()
        other = self.servers[-1]

        def respond(protocol: Responder, data: bytes) -> None:
            protocol.transport.write(b"held, ")  # type: ignore[union-attr]
            splice = Splice(
                self.reactor,
                other.transport,  # type: ignore[arg-type]
                protocol.transport,  # type: ignore[arg-type]
                lambda fromFirst, size: None,
                lambda error: None,
            )
            self.addCleanup(splice.stop)
            splice.start(b"then spliced")

        self.respond = respond
        server, client = self.connect()
        client.sendall(b"go")
        self.assertEqual(self.receive(client, 18), b"held, then spliced")

    def closeAfterWrites(self, method: str) -> tuple[Responder, socket.socket]:
        """
        Two writes, then C{method} of the transport, in one event: the
        server protocol (C{sentInEvent} says what had been sent when
        C{method} returned) and the client.
        """

        def respond(protocol: Responder, data: bytes) -> None:
            protocol.transport.write(b"last ")  # type: ignore[union-attr]
            protocol.transport.write(b"words")  # type: ignore[union-attr]
            getattr(protocol.transport, method)()
            protocol.sentInEvent = list(protocol.sock.sends)  # type: ignore[attr-defined]

        self.respond = respond
        server, client = self.connect()
        client.sendall(b"bye")
        self.turnUntil(lambda: hasattr(server, "sentInEvent"))
        return server, client

    def test_loseConnectionSendsHeldFirst(self) -> None:
        """
        C{loseConnection} after writes in the same event first sends them,
        in one C{send}; the client gets them, then end-of-file.
        """
        server, client = self.closeAfterWrites("loseConnection")
        self.assertEqual(server.sentInEvent, [10])  # type: ignore[attr-defined]
        self.assertEqual(self.receive(client, 10), b"last words")
        self.turnUntil(lambda: self.readable(client))
        self.assertEqual(client.recv(1), b"")

    def test_loseWriteConnectionSendsHeldFirst(self) -> None:
        """
        C{loseWriteConnection} after writes in the same event first sends
        them, in one C{send}; the client gets them, then end-of-file.
        """
        server, client = self.closeAfterWrites("loseWriteConnection")
        self.assertEqual(server.sentInEvent, [10])  # type: ignore[attr-defined]
        self.assertEqual(self.receive(client, 10), b"last words")
        self.turnUntil(lambda: self.readable(client))
        self.assertEqual(client.recv(1), b"")

    def test_abortConnectionSendsHeldFirst(self) -> None:
        """
        C{abortConnection} after writes in the same event hands them to the
        kernel first, as when every write was sent at once.
        """
        server, client = self.closeAfterWrites("abortConnection")
        self.assertEqual(server.sentInEvent, [10])  # type: ignore[attr-defined]

    def test_lostConnectionDropsHeld(self) -> None:
        """
        A connection lost while it holds writes sends nothing and leaves
        nothing held.
        """

        def respond(protocol: Responder, data: bytes) -> None:
            protocol.transport.write(b"never sent")  # type: ignore[union-attr]
            protocol.transport.connectionLost(  # type: ignore[union-attr]
                Failure(ConnectionDone("gone"))
            )

        self.respond = respond
        server, client = self.connect()
        client.sendall(b"x")
        self.turnUntil(lambda: server.lost is not None)
        self.assertEqual(server.sock.sends, [])
        self.assertIsNone(server.transport._held)  # type: ignore[union-attr]

    def test_notBytesWhileHolding(self) -> None:
        """
        Text written while writes are held is refused, as always, and
        what was held still goes out.
        """
        refused: list[str] = []

        def respond(protocol: Responder, data: bytes) -> None:
            protocol.transport.write(b"ok")  # type: ignore[union-attr]
            for write in (
                lambda: protocol.transport.write("text"),  # type: ignore[union-attr]
                lambda: protocol.transport.writeSequence([b"a", "text"]),  # type: ignore[union-attr]
            ):
                try:
                    write()
                except TypeError as e:
                    refused.append(str(e))

        self.respond = respond
        server, client = self.connect()
        client.sendall(b"x")
        self.assertEqual(self.receive(client, 2), b"ok")
        self.assertEqual(len(refused), 2)
        self.assertEqual(server.sock.sends, [2])


class WriteBatchTests(SynchronousTestCase):
    """
    L{WriteBatch} on its own.
    """

    def test_flushLogsAndGoesOn(self) -> None:
        """
        A connection whose sending raises is logged, and the others are
        still sent.
        """

        class Pending:
            def __init__(self, fail: bool) -> None:
                self.fail, self.flushed = fail, False

            def flushWrites(self) -> None:
                self.flushed = True
                if self.fail:
                    raise ValueError("broken producer")

        batch = WriteBatch()
        first, second = Pending(True), Pending(False)
        batch.pending = [first, second]  # type: ignore[list-item]
        with capturedLogs() as events:
            batch.flush()
        self.assertTrue(first.flushed and second.flushed)
        self.assertEqual(batch.pending, [])
        [event] = events
        self.assertIsInstance(event["log_failure"].value, ValueError)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_flushPicksUpNewWrites(self) -> None:
        """
        Writes held while the batch is being flushed are flushed too.
        """
        batch = WriteBatch()
        flushed: list[str] = []

        class Pending:
            def __init__(self, name: str, then: Any = None) -> None:
                self.name, self.then = name, then

            def flushWrites(self) -> None:
                flushed.append(self.name)
                if self.then is not None:
                    batch.pending.append(self.then)

        batch.pending = [Pending("first", Pending("second"))]  # type: ignore[list-item]
        batch.flush()
        self.assertEqual(flushed, ["first", "second"])
        self.assertEqual(batch.pending, [])


def _tlsOptions() -> tuple[Any, Any]:
    """
    Server and client TLS options around one self-signed certificate.
    """
    certPEM, keyPEM = makeSelfSigned(datetime.datetime.now(datetime.UTC), "localhost")
    server = PrivateCertificate.loadPEM(certPEM + keyPEM).options()
    client = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(certPEM))
    return server, client


class Sender(Protocol):
    """
    Sends C{data} once connected and collects the answer until it is as
    long, then closes.
    """

    def __init__(self, data: bytes, startTLS: Any = None) -> None:
        self.data = data
        self.startTLS = startTLS
        self.received = bytearray()
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        if self.startTLS is not None:
            self.transport.startTLS(self.startTLS)  # type: ignore[attr-defined]
        for start in range(0, len(self.data), 100_000):
            self.transport.write(self.data[start : start + 100_000])

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= len(self.data):
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.done.callback(bytes(self.received))


class StartTLSEcho(Echo):
    """
    Echo that starts TLS as soon as it is connected.
    """

    options: Any = None

    def connectionMade(self) -> None:
        self.transport.startTLS(self.options)  # type: ignore[attr-defined]
        super().connectionMade()


class TLSTests(TransportTestsMixin, TestCase):
    """
    TLS on top of L{FastServer}: the ciphertext goes through its C{write}.
    """

    @inlineCallbacks
    def test_tlsEcho(self) -> Generator[Deferred[Any], Any, None]:
        """
        An echo wrapped in C{TLSMemoryBIOFactory} (as multiport's TLS ports
        are) on a L{FastPort} sends several MB back intact.
        """
        serverOptions, clientOptions = _tlsOptions()
        writes: list[int] = []
        original = FastServer.write

        def counting(transport: FastServer, data: bytes) -> None:
            writes.append(len(data))
            original(transport, data)

        self.patch(FastServer, "write", counting)
        factory = TLSMemoryBIOFactory(serverOptions, False, Factory.forProtocol(Echo))
        port = self.listen(factory)
        data = os.urandom(4_000_000)
        sender = Sender(data)
        yield connectProtocol(
            SSL4ClientEndpoint(reactor, "127.0.0.1", port, clientOptions), sender
        )
        received = yield sender.done
        self.assertTrue(received == data, "TLS echo corrupted")
        self.assertGreater(sum(writes), len(data))

    @inlineCallbacks
    def test_startTLS(self) -> Generator[Deferred[Any], Any, None]:
        """
        After C{startTLS} the ciphertext goes out through L{_write} as
        well, and an echo still round-trips intact.
        """
        serverOptions, clientOptions = _tlsOptions()
        bypassed: list[int] = []
        original = fast._FastBypass.write

        def counting(transport: FastServer, data: bytes) -> None:
            bypassed.append(len(data))
            original(transport, data)

        self.patch(fast._FastBypass, "write", counting)
        self.patch(StartTLSEcho, "options", serverOptions)
        port = self.listen(Factory.forProtocol(StartTLSEcho))
        data = os.urandom(1_000_000)
        sender = Sender(data, startTLS=clientOptions)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), sender)
        received = yield sender.done
        self.assertTrue(received == data, "startTLS echo corrupted")
        self.assertGreater(sum(bypassed), len(data))


#: Run in a fresh process: installs the reactor by its plugin name, echoes
#: over a FastPort, and reports what it saw as JSON.
REACTOR_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from twisted.application.reactors import installReactor
    installReactor("multiport-epoll")
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.protocol import Factory, Protocol
    from twisted.python import context, log
    from multiport.io.transport import FastPort

    seen = {"reactor": type(reactor).__module__ + "." + type(reactor).__name__}
    errors = []
    log.addObserver(
        lambda e: errors.append(e.get("system")) if e.get("isError") else None
    )

    class Echo(Protocol):
        def dataReceived(self, data):
            seen["system"] = context.get(log.ILogContext)["system"]
            seen["logstr"] = self.transport.logstr
            if data == b"boom":
                raise ValueError("boom")
            self.transport.write(data)

    class Client(Protocol):
        def __init__(self, message):
            self.message, self.got = message, b""
        def connectionMade(self):
            self.transport.write(self.message)
        def dataReceived(self, data):
            self.got += data
            if len(self.got) == len(self.message):
                self.transport.loseConnection()
        def connectionLost(self, reason):
            seen.setdefault("answers", []).append(self.got.decode())
            if len(seen["answers"]) == 2:
                seen["errorSystems"] = errors
                reactor.stop()

    port = FastPort(0, Factory.forProtocol(Echo), 50, "127.0.0.1", reactor)
    port.startListening()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    connectProtocol(endpoint, Client(b"x" * 100000))
    connectProtocol(endpoint, Client(b"boom"))
    reactor.callLater(20, reactor.stop)
    reactor.run()
    print(json.dumps(seen))
    """
)


#: Run in a fresh process: this module's transport contract tests again,
#: on multiport's reactor (so that writes are held and sent together),
#: counting how often more than one write went out in one send.
CONTRACT_SCRIPT = textwrap.dedent(
    """
    import atexit, json, sys
    from twisted.application.reactors import installReactor
    installReactor("multiport-epoll")
    from multiport.io.transport import FastServer

    # Every connection holds its writes, as the http handler's do.
    init = FastServer.__init__

    def holding(self, *args):
        init(self, *args)
        assert self.holdWrites()

    FastServer.__init__ = holding
    counts = {"held": 0, "joined": 0}
    flushWrites = FastServer.flushWrites

    def counting(self):
        if self._held is not None:
            counts["held"] += 1
            counts["joined"] += isinstance(self._held, list)
        flushWrites(self)

    FastServer.flushWrites = counting
    atexit.register(lambda: print(json.dumps(counts), file=sys.stderr))
    from twisted.scripts.trial import run
    sys.argv = ["trial", "--temp-directory", sys.argv[1],
                "tests.test_transport.FastServerTests",
                "tests.test_transport.TLSTests"]
    run()
    """
)


class Named:
    """
    A selectable's log prefix, as a TCP server transport gives it.
    """

    def logPrefix(self) -> str:
        return "Echo,7,127.0.0.1"


class EventContextTests(SynchronousTestCase):
    """
    The reactor's per-event log context, made when asked.
    """

    def push(self, selectable: object) -> None:
        from multiport.io.reactor import _EventContext

        eventContext = _EventContext({"system": "-", "other": 1}, selectable)
        contexts = context.theContextTracker.currentContext().contexts
        contexts.append(eventContext)
        self.addCleanup(contexts.remove, eventContext)

    def test_legacyLog(self) -> None:
        """
        A legacy C{log.msg} during the event says the selectable's prefix
        as its system, with the outer context's other keys.
        """
        seen: list[dict[str, Any]] = []
        log.addObserver(seen.append)
        self.addCleanup(log.removeObserver, seen.append)
        self.push(Named())
        log.msg("hello")
        [event] = [e for e in seen if e.get("message") == ("hello",)]
        self.assertEqual((event["system"], event["other"]), ("Echo,7,127.0.0.1", 1))
        copied = context.get(log.ILogContext)
        self.assertEqual(copied, {"system": "Echo,7,127.0.0.1", "other": 1})

    def test_buggyPrefix(self) -> None:
        """
        A logPrefix that raises gives Twisted's stand-in system, and asking
        does not log (which would ask again, without end).
        """

        class Buggy:
            def logPrefix(self) -> str:
                raise RuntimeError("no prefix")

        self.push(Buggy())
        self.assertEqual(
            context.get(log.ILogContext)["system"], "(buggy logPrefix method)"
        )
        self.assertEqual(self.flushLoggedErrors(RuntimeError), [])

    def test_keptContextKeepsItsEvent(self) -> None:
        """
        Each event has a context of its own: one kept after its event (as
        a thread pool keeps the context it was called in) still says that
        event's prefix.
        """
        from select import EPOLLIN

        from multiport.io.reactor import MultiportEPollReactor

        kept: list[object] = []

        class Selectable:
            def __init__(self, prefix: str) -> None:
                self.prefix = prefix

            def logPrefix(self) -> str:
                return self.prefix

            def fileno(self) -> int:
                return 7

            def doRead(self) -> None:
                kept.append(context.theContextTracker.currentContext().contexts[-1])

        class Poller:
            def poll(self, timeout: float, most: int) -> list[tuple[int, int]]:
                return [(7, EPOLLIN)]

        polled = MultiportEPollReactor()
        self.addCleanup(polled.waker.connectionLost, None)
        self.addCleanup(polled._poller.close)
        polled._poller = Poller()
        for prefix in ("first", "second"):
            polled._selectables = {7: Selectable(prefix)}
            polled.doPoll(0)
        self.assertEqual(
            [k[log.ILogContext]["system"] for k in kept],  # type: ignore[index]
            ["first", "second"],
        )

    def test_otherKeys(self) -> None:
        """
        Other context keys are not its own: looked up further down.
        """
        self.push(Named())
        self.assertEqual(context.get("not-there", "default"), "default")
        self.assertEqual(context.call({"k": 2}, context.get, "k"), 2)


class ReactorTests(TestCase):
    """
    L{multiport.io.reactor}, installed in a process of its own (trial's reactor
    is already installed here).
    """

    def test_plugin(self) -> None:
        """
        C{twistd --reactor} knows it as C{multiport-epoll}.
        """
        found = {r.shortName: r.moduleName for r in getReactorTypes()}
        self.assertEqual(found.get("multiport-epoll"), "multiport.io.reactor")

    def test_echo(self) -> None:
        """
        Installed by its plugin name, it runs an echo on a L{FastPort}; each
        event runs in the same log context as under Twisted's epoll reactor
        (C{system} is the transport's log prefix), and an exception from a
        protocol is logged with that prefix and drops only its connection.
        """
        result = subprocess.run(
            [sys.executable, "-c", REACTOR_SCRIPT],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertEqual(seen["reactor"], "multiport.io.reactor.MultiportEPollReactor")
        self.assertEqual(seen["system"], seen["logstr"])
        self.assertTrue(seen["system"].startswith("Echo,"), seen["system"])
        self.assertEqual(sorted(seen["answers"]), ["", "x" * 100000])
        self.assertEqual(len(seen["errorSystems"]), 1)
        self.assertTrue(seen["errorSystems"][0].startswith("Echo,"))

    def test_transportContract(self) -> None:
        """
        L{FastServer}'s contract tests (ordering under a slow reader,
        producers, half-close, closing, aborting, TLS, startTLS) pass on
        multiport's reactor too, every connection holding the writes made
        in one event, several of them going out in one send.
        """
        result = subprocess.run(
            [sys.executable, "-c", CONTRACT_SCRIPT, os.path.abspath(self.mktemp())],
            # Where this module is importable as tests.test_transport.
            cwd=Path(__file__).parent.parent,
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("PASSED", result.stdout)
        counts = json.loads(result.stderr.strip().splitlines()[-1])
        self.assertGreater(counts["held"], 0)
        self.assertGreater(counts["joined"], 0)
