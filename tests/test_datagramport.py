"""
Tests for L{multiport.io.datagramport}: the UDP port every UDP port and
relay session reads with, over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import MemoryReactor
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from multiport.daemon.logformat import isTwistedPortLine
from multiport.io.datagramport import (
    GROW_AFTER,
    MAX_BURST,
    DatagramPort,
    adoptDatagramPort,
    listenConnected,
)


class Collect(DatagramProtocol):
    """
    Keeps what it receives, and whether the upstream refused.
    """

    def __init__(self) -> None:
        self.received: list[tuple[bytes, object]] = []
        self.refused = 0

    def datagramReceived(self, datagram: bytes, addr: object) -> None:
        self.received.append((datagram, addr))

    def connectionRefused(self) -> None:
        self.refused += 1


class BurstTests(SynchronousTestCase):
    """
    An event reads as many datagrams as the last ones found, not until the
    socket is empty (which costs a failed read, an exception in Python).
    """

    def setUp(self) -> None:
        self.protocol = Collect()
        self.port = DatagramPort(0, self.protocol, "127.0.0.1", 65535, reactor)
        self.port.startListening()
        self.addCleanup(self.port.connectionLost)
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.sender.close)
        self.address = ("127.0.0.1", self.port.getHost().port)
        self.socketReads = 0
        real = self.port.socket

        class Counting:
            """
            The port's socket, counting the reads tried.
            """

            def recvfrom(inner, size: int) -> tuple[bytes, object]:
                self.socketReads += 1
                return real.recvfrom(size)

            def __getattr__(inner, name: str) -> object:
                return getattr(real, name)

        self.port.socket = Counting()

    def send(self, count: int) -> None:
        """
        Queue C{count} datagrams in the port's socket.
        """
        for index in range(count):
            self.sender.sendto(b"%d" % index, self.address)

    def test_onePerEvent(self) -> None:
        """
        With one datagram an event, an event reads it and tries no more.
        """
        for _round in range(GROW_AFTER - 1):
            self.send(1)
            self.port.doRead()
        self.assertEqual(
            (len(self.protocol.received), self.socketReads, self.port.burst),
            (GROW_AFTER - 1, GROW_AFTER - 1, 1),
        )

    def test_leftForNextEvent(self) -> None:
        """
        What an event does not read stays in the socket for the next event
        (the reactor polls level-triggered).
        """
        self.send(3)
        self.port.doRead()
        self.assertEqual([d for d, _ in self.protocol.received], [b"0"])
        self.port.doRead()
        self.port.doRead()
        self.assertEqual([d for d, _ in self.protocol.received], [b"0", b"1", b"2"])
        self.assertEqual(
            self.protocol.received[0][1], ("127.0.0.1", self.sender.getsockname()[1])
        )

    def test_grows(self) -> None:
        """
        After GROW_AFTER events that each read all they asked for, an event
        asks for twice as many, up to MAX_BURST.
        """
        seen = []
        for _event in range(6 * GROW_AFTER):
            # As many as the event will ask for: every event reads all.
            self.send(self.port.burst)
            self.port.doRead()
            seen.append(self.port.burst)
        self.assertEqual(
            seen,
            [1] * (GROW_AFTER - 1)
            + [2] * GROW_AFTER
            + [4] * GROW_AFTER
            + [8] * GROW_AFTER
            + [16] * GROW_AFTER
            + [MAX_BURST] * (GROW_AFTER + 1),
        )

    def test_shrinks(self) -> None:
        """
        An event that finds fewer datagrams than it asked for asks for
        that many next time.
        """
        self.port.burst = 8
        self.send(3)
        self.port.doRead()
        self.assertEqual((len(self.protocol.received), self.port.burst), (3, 3))
        self.port.doRead()
        self.assertEqual(self.port.burst, 1)


class ConnectedTests(SynchronousTestCase):
    """
    A connected port (a relay session's upstream socket).
    """

    def test_connectedPeer(self) -> None:
        """
        A connected port's datagrams come with the address it is connected
        to, read without a new address per datagram.
        """
        upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(upstream.close)
        upstream.bind(("127.0.0.1", 0))
        protocol = Collect()
        port = listenConnected(
            reactor,
            protocol,
            "127.0.0.1",
            "127.0.0.1",
            upstream.getsockname()[1],
            65535,
        )
        self.addCleanup(port.connectionLost)
        self.assertIsInstance(port, DatagramPort)
        port.write(b"up")
        data, there = upstream.recvfrom(100)
        upstream.sendto(b"down", there)
        port.doRead()
        self.assertEqual(
            protocol.received, [(b"down", ("127.0.0.1", upstream.getsockname()[1]))]
        )

    def test_refused(self) -> None:
        """
        An upstream's ICMP port unreachable is told to the protocol.
        """
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed.bind(("127.0.0.1", 0))
        number = closed.getsockname()[1]
        closed.close()
        protocol = Collect()
        port = listenConnected(reactor, protocol, "127.0.0.1", "127.0.0.1", number, 100)
        self.addCleanup(port.connectionLost)
        port.write(b"anyone?")
        port.doRead()
        self.assertEqual((protocol.refused, protocol.received), (1, []))

    def test_connectFailsCloses(self) -> None:
        """
        When the socket can't be connected, it is closed, not left open.
        """
        before = len(os.listdir("/proc/self/fd"))
        self.assertRaises(
            OSError,
            listenConnected,
            reactor,
            Collect(),
            "0.0.0.0",
            "::1",
            53,
            100,
        )
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)

    def test_testDouble(self) -> None:
        """
        On a reactor that is not Twisted's own, the reactor's listenUDP is
        asked, and adoptDatagramPort its own too.
        """
        asked: list[tuple[int, str, int]] = []

        class Listening(MemoryReactor):
            def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
                asked.append((port, interface, maxPacketSize))
                real = reactor.listenUDP(port, protocol, interface, maxPacketSize)
                self.real = real
                return real

        double = Listening()
        port = listenConnected(double, Collect(), "127.0.0.1", "127.0.0.1", 9, 100)
        self.addCleanup(port.connectionLost)
        held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(held.close)
        adoptDatagramPort(double, held.fileno(), socket.AF_INET, Collect(), 100)
        self.assertEqual(
            (asked, [(f, p) for f, _, _, p in double.adoptedPorts]),
            ([(0, "127.0.0.1", 100)], [(held.fileno(), 100)]),
        )


class QuietTests(SynchronousTestCase):
    """
    A port's opening and closing log nothing the daemon shows: a relay
    opens a socket for every new client.
    """

    def test_noLinePerSocket(self) -> None:
        """
        Twisted's C{starting on N} and C{(UDP Port N Closed)} lines are
        ones the daemon's observers leave out, and nothing else is logged.
        """
        protocol = Collect()
        protocol.noisy = False
        with capturedLogs() as events:
            port = DatagramPort(0, protocol, "127.0.0.1", 100, reactor)
            port.startListening()
            port.connectionLost()
        self.assertEqual(len(events), 2)
        self.assertEqual([e for e in events if not isTwistedPortLine(e)], [])
