"""
Tests for what multiport's per-port layer (L{multiport.ports.connection})
costs a connection: the memory it keeps for an idle one, and the Python
frames it adds on multiport's own transport (none).
"""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import reactor, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from multiport.config.build import buildConfig
from multiport.config.model import Defaults
from multiport.config.portspec import parsePorts
from multiport.handlers.interface import HandlerContext
from multiport.handlers.simple import Echo
from multiport.io.transport import FastPort
from multiport.ports.counters import PortCounters
from multiport.ports.factory import PortFactory
from tests.support import HANDLERS, waitUntilOnReactor

#: Connections held per measurement: enough that one connection's share of
#: anything allocated once (a table, a cache) is below a byte.
CONNECTIONS = 2000

#: The most the layer may add to an idle connection, in bytes: its wrapper
#: of nine slots (a 16-byte GC header, a 16-byte object header, 8 bytes a
#: slot: 104 bytes, the open connections' list threaded through two of
#: them) and the start time's float (24 bytes) the connection log needs;
#: 16 bytes more for the allocator's rounding.  Before the wrapper had
#: slots it was 317 bytes, log or not: a C{__dict__}, the client's
#: address object kept for the log, and a dict entry for the port's table.
LAYER_BOUND = 144


class _IdleTransport:
    """
    The least a transport must do for an idle echo connection, with slots,
    so that what is measured is the protocol side.
    """

    __slots__ = ("peer", "host", "producer")

    def __init__(self, peer: IPv4Address, host: IPv4Address) -> None:
        self.peer = peer
        self.host = host
        self.producer: object = None

    def getPeer(self) -> IPv4Address:
        return self.peer

    def getHost(self) -> IPv4Address:
        return self.host

    def registerProducer(self, producer: object, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None


class _FreshClock(MemoryReactorClock):
    """
    A clock whose C{seconds} is a new float each time, as the reactor's
    is (L{MemoryReactorClock} hands out the same one, which would hide the
    start time's cost).
    """

    def seconds(self) -> float:
        return time.monotonic()


def _portFactory(handler: Factory[Protocol], defaults: Defaults) -> PortFactory:
    config = buildConfig(
        parsePorts("127.0.0.1:7000=echo"), defaults, HANDLERS, Path(".")
    ).ports[0]
    clock = _FreshClock()
    context = HandlerContext(reactor=clock, clock=clock, port=config)
    return PortFactory(handler, PortCounters(), context)


def _perConnection(build: Callable[[IPv4Address], Any]) -> float:
    """
    The bytes still allocated per connection once L{CONNECTIONS} idle ones
    are made by C{build} (given each its own client address, as a
    listening port does) and connected.
    """
    host = IPv4Address("TCP", "127.0.0.1", 7000)
    held = []
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(CONNECTIONS):
            port = 1024 + index
            protocol = build(IPv4Address("TCP", "127.0.0.1", port))
            transport = _IdleTransport(IPv4Address("TCP", "127.0.0.1", port), host)
            protocol.makeConnection(transport)
            held.append((protocol, transport))
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / CONNECTIONS


class IdleMemoryTests(SynchronousTestCase):
    """
    An idle connection through the per-port layer costs little more than
    its handler alone.
    """

    def _layerCost(self, defaults: Defaults) -> float:
        handler = Factory.forProtocol(Echo)
        alone = _perConnection(handler.buildProtocol)
        layered = _perConnection(_portFactory(handler, defaults).buildProtocol)
        return layered - alone

    def test_layerCostWithLog(self) -> None:
        """
        With the connection log on (the default), the layer keeps at most
        L{LAYER_BOUND} bytes per idle connection.
        """
        cost = self._layerCost(Defaults(logConnections=True))
        self.assertLessEqual(cost, LAYER_BOUND, f"{cost:.0f} B per connection")

    def test_layerCostWithoutLog(self) -> None:
        """
        Without the connection log, the start time is not kept: 24 bytes
        (a float) less.
        """
        cost = self._layerCost(Defaults(logConnections=False))
        self.assertLessEqual(cost, LAYER_BOUND - 24, f"{cost:.0f} B per connection")


class _ListeningPort:
    """
    What a connection asks of its listening port when it is made.
    """

    _realPortNumber = 7000


def _transportCost(kind: type[tcp.Server]) -> float:
    """
    The bytes still allocated per connection once 500 idle connections of
    C{kind} are made over socket pairs (their handler protocols included).
    """
    count = 500
    pairs = [socket.socketpair() for _ in range(count)]
    try:
        memoryReactor = MemoryReactor()
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            held = [
                kind(
                    ours,
                    Protocol(),
                    ("127.0.0.1", 1024 + index),
                    _ListeningPort(),
                    index,
                    memoryReactor,
                )
                for index, (ours, _) in enumerate(pairs)
            ]
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        prefix = held[0].logPrefix()
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
    assert prefix == "Protocol,0,127.0.0.1", prefix
    return (after - before) / count


class TransportMemoryTests(SynchronousTestCase):
    """
    multiport's transport keeps less per idle connection than Twisted's.
    """

    def test_noStringsKept(self) -> None:
        """
        A L{FastServer} keeps at least 100 bytes less than a L{tcp.Server}:
        its C{repr} and its log prefix (strings of about 80 bytes each,
        which C{tcp.Server} makes for every connection) are made when
        asked, and its own attributes cost 16 bytes.
        """
        # In a fresh interpreter: an attribute any earlier connection of
        # the class was given (a test's) widens every later instance's
        # attribute values by 8 bytes, which would measure the suite.
        script = (
            "from twisted.internet import tcp\n"
            "from multiport.io.transport import FastServer\n"
            "from tests.test_layermemory import _transportCost\n"
            "print(_transportCost(tcp.Server) - _transportCost(FastServer))\n"
        )
        root = str(Path(__file__).parent.parent)
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=root,
            env={**os.environ, "PYTHONPATH": root},
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        saved = float(result.stdout)
        self.assertGreaterEqual(saved, 100, f"{saved:.0f} B saved per connection")


class _Caller(Protocol):
    """
    Echoes, noting which function handed it each read and what its
    transport is.
    """

    def connectionMade(self) -> None:
        self.factory.transports.append(type(self.transport).__name__)

    def dataReceived(self, data: bytes) -> None:
        self.factory.callers.append(sys._getframe(1).f_code.co_qualname)
        self.transport.write(data)


class DirectDeliveryTests(TestCase):
    """
    On multiport's own transport the layer is out of the data path: the
    transport hands reads to the handler's protocol and counts the bytes.
    """

    @inlineCallbacks
    def test_readsReachTheHandlerFromTheTransport(self) -> Any:
        """
        The handler's protocol is called by the transport itself, has the
        transport as its own, and the port counts every byte both ways.
        """
        handler = Factory.forProtocol(_Caller)
        handler.callers = []  # type: ignore[attr-defined]
        handler.transports = []  # type: ignore[attr-defined]
        factory = _portFactory(handler, Defaults(logConnections=False))
        port = FastPort(0, factory, 50, "127.0.0.1", reactor)
        port.startListening()
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)
        client.sendall(b"ping")
        yield waitUntilOnReactor(lambda: factory.counters.bytesSent == 4)
        self.assertEqual(client.recv(4), b"ping")
        self.assertEqual(
            (
                handler.callers,  # type: ignore[attr-defined]
                handler.transports,  # type: ignore[attr-defined]
                factory.counters.bytesReceived,
                [(p.received, p.sent) for p in factory.protocols],
            ),
            (["DirectDelivery._dataReceived"], ["FastServer"], 4, [(4, 4)]),
        )
        client.close()
        yield waitUntilOnReactor(lambda: factory.counters.current == 0)
