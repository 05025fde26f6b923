"""
Tests for the UDP relay's data path in C: the extension C{_multiport_udp}
on its own (its C{Pump} over real sockets on 127.0.0.1 and ::1), and the
relay with it (L{multiport.io.udppump.UDPPump}): expiry on the injected
clock, C{max_datagram_size} in C, the fallback to Python under a policy
that judges each datagram, live changes, counters and sockets.

Skipped when the extension is not built (CI always builds it).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from multiport.config.build import buildConfig
from multiport.config.model import Defaults
from multiport.config.tomlfile import parseConfig
from multiport.handlers.interface import HandlerContext
from multiport.handlers.udprelay import UDPRelay
from multiport.io import udppump
from multiport.io.datagramport import DatagramPort
from multiport.ports.datagram import MAX_READ, DatagramGate
from tests.support import HANDLERS, waitUntilOnReactor
from tests.test_udpports import client
from tests.test_udprelay import closedPort, upstream


def native():
    """
    The extension, or skip the test.
    """
    if udppump.native is None:
        raise SkipTest("the C extension _multiport_udp is not built")
    return udppump.native


def bound(testCase, family: int = socket.AF_INET) -> socket.socket:
    """
    A non-blocking UDP socket on a free port of the loopback address of
    C{family}, closed at cleanup.
    """
    skt = socket.socket(family, socket.SOCK_DGRAM)
    testCase.addCleanup(skt.close)
    skt.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    skt.setblocking(False)
    return skt


def connected(testCase, to: socket.socket) -> socket.socket:
    """
    A non-blocking UDP socket connected to C{to} (a session's upstream
    socket), closed at cleanup.
    """
    skt = socket.socket(to.family, socket.SOCK_DGRAM)
    testCase.addCleanup(skt.close)
    skt.setblocking(False)
    skt.connect(to.getsockname()[:2])
    return skt


def waitReadable(fd: int, timeout: float = 10) -> None:
    """
    Wait (bounded) until C{fd} is readable.
    """
    readable, _, _ = select.select([fd], [], [], timeout)
    assert readable, f"descriptor {fd} not readable in {timeout} s"


def receive(skt: socket.socket, timeout: float = 10) -> tuple[bytes, object]:
    """
    The next datagram on C{skt} and its sender, waiting at most C{timeout}.
    """
    waitReadable(skt.fileno(), timeout)
    data, addr = skt.recvfrom(MAX_READ)
    return data, addr[:2]


class PumpTests(SynchronousTestCase):
    """
    C{_multiport_udp.Pump} over real sockets.
    """

    def setUp(self) -> None:
        self.native = native()

    def pumpOn(self, family: int = socket.AF_INET, maxSize: int = MAX_READ):
        """
        A port socket, a pump on it (closed at cleanup), an upstream
        socket and a session socket connected to it.
        """
        port = bound(self, family)
        pump = self.native.Pump(port.fileno(), family, maxSize)
        self.addCleanup(pump.close)
        up = bound(self, family)
        return port, pump, up, connected(self, up)

    def test_batchForwardedAndReplied(self) -> None:
        """
        A batch of datagrams from a client with a session goes to its
        upstream in one C{readPort}; the upstream's replies go back to the
        client from the port's socket in one C{readReplies}, all counted.
        """
        port, pump, up, session = self.pumpOn()
        clientSocket = bound(self)
        client = clientSocket.getsockname()
        pump.add(client[0], client[1], session.fileno(), 5.0)
        for index in range(10):
            clientSocket.sendto(b"d%d" % index, port.getsockname())
        waitReadable(port.fileno())
        self.assertIsNone(pump.readPort(7.0))
        forwarded = [receive(up) for _ in range(10)]
        self.assertEqual([d for d, _ in forwarded], [b"d%d" % i for i in range(10)])
        self.assertEqual({a for _, a in forwarded}, {session.getsockname()})
        self.assertEqual(pump.lastSeen(client[0], client[1]), 7.0)
        up.sendto(b"reply", session.getsockname())
        waitReadable(pump.fileno())
        self.assertIsNone(pump.readReplies(9.0))
        self.assertEqual(receive(clientSocket), (b"reply", port.getsockname()))
        self.assertEqual(pump.lastSeen(client[0], client[1]), 9.0)
        self.assertEqual(pump.counts(), (10, 20, 1, 5, 0, 0))

    def test_handlerFailureLogged(self) -> None:
        """
        A datagram whose handling raises is logged; the rest of the batch
        is still handed over, and the pump goes on (an exception reaching
        the reactor would drop the port's reads).
        """
        port = bound(self)
        pump = udppump.UDPPump(
            MemoryReactor(), Clock(), port.fileno(), socket.AF_INET, MAX_READ, print
        )
        self.addCleanup(pump.stop)
        handled: list[bytes] = []

        def deliver(datagram: bytes, addr: object) -> None:
            handled.append(datagram)
            if datagram == b"bad":
                raise ValueError("the handler's bug")

        pump.deliver = deliver
        stranger = bound(self)
        for datagram in (b"bad", b"good"):
            stranger.sendto(datagram, port.getsockname())
        deadline = time.monotonic() + 10
        while len(handled) < 2:
            assert time.monotonic() < deadline, "the datagrams were not read"
            waitReadable(port.fileno())
            pump.readPort()
        self.assertEqual(handled, [b"bad", b"good"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_unknownReturned(self) -> None:
        """
        A datagram from a client without a session comes back to Python
        with its sender, uncounted.
        """
        port, pump, _, _ = self.pumpOn()
        stranger = bound(self)
        stranger.sendto(b"who", port.getsockname())
        waitReadable(port.fileno())
        unknown, failures = pump.readPort(1.0)
        self.assertEqual(unknown, [(b"who", stranger.getsockname())])
        self.assertEqual(failures, [])
        self.assertEqual(pump.counts(), (0, 0, 0, 0, 0, 0))
        self.assertIsNone(pump.readPort(1.0))

    def test_tooLarge(self) -> None:
        """
        A session's datagram over the pump's C{maxSize} is dropped and
        counted as too large; one of that size goes on.
        """
        port, pump, up, session = self.pumpOn(maxSize=10)
        clientSocket = bound(self)
        client = clientSocket.getsockname()
        pump.add(client[0], client[1], session.fileno(), 0.0)
        clientSocket.sendto(b"x" * 11, port.getsockname())
        clientSocket.sendto(b"y" * 10, port.getsockname())
        waitReadable(port.fileno())
        deadline = time.monotonic() + 10
        while pump.counts()[4] + pump.counts()[0] < 2:
            assert time.monotonic() < deadline, "the datagrams were not read"
            pump.readPort(0.0)
        self.assertEqual(receive(up)[0], b"y" * 10)
        self.assertEqual(pump.counts(), (1, 10, 0, 0, 1, 0))

    def test_sendErrorCounted(self) -> None:
        """
        A forward the kernel can't take now (C{EAGAIN}: here a datagram
        socket pair whose other end is never read) is dropped and counted
        as C{send_error}; the rest of the batch goes on.
        """
        port = bound(self)
        pump = self.native.Pump(port.fileno(), socket.AF_INET, MAX_READ)
        self.addCleanup(pump.close)
        full, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(full.close)
        self.addCleanup(other.close)
        full.setblocking(False)
        # A Unix datagram queue holds some hundreds of datagrams; the
        # bound only keeps the loop finite should it never fill.
        for _ in range(1_000_000):
            try:
                full.send(b"fill")
            except BlockingIOError:
                break
        else:
            self.fail("the socket pair's queue never filled")
        clientSocket = bound(self)
        client = clientSocket.getsockname()
        pump.add(client[0], client[1], full.fileno(), 0.0)
        for _ in range(3):
            clientSocket.sendto(b"z", port.getsockname())
        deadline = time.monotonic() + 10
        while pump.counts()[0] < 3:
            assert time.monotonic() < deadline, "the datagrams were not read"
            waitReadable(port.fileno())
            pump.readPort(0.0)
        self.assertEqual(pump.counts(), (3, 3, 0, 0, 0, 3))

    def test_refusalReported(self) -> None:
        """
        A session whose upstream refuses (ICMP port unreachable) is
        reported with C{ECONNREFUSED}, as the client's address.
        """
        port = bound(self)
        pump = self.native.Pump(port.fileno(), socket.AF_INET, MAX_READ)
        self.addCleanup(pump.close)
        session = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(session.close)
        session.setblocking(False)
        session.connect(("127.0.0.1", closedPort()))
        clientSocket = bound(self)
        client = clientSocket.getsockname()
        pump.add(client[0], client[1], session.fileno(), 0.0)
        clientSocket.sendto(b"anyone?", port.getsockname())
        waitReadable(port.fileno())
        failures = []
        result = pump.readPort(0.0)
        if result is not None:
            failures.extend(result[1])
        if not failures:
            waitReadable(pump.fileno())
            failures.extend(pump.readReplies(0.0) or [])
        self.assertEqual(failures, [(client, errno.ECONNREFUSED)])

    def test_removedSession(self) -> None:
        """
        A removed session is forgotten: its client's datagrams come back
        to Python, and its socket is no longer watched.
        """
        port, pump, up, session = self.pumpOn()
        clientSocket = bound(self)
        client = clientSocket.getsockname()
        pump.add(client[0], client[1], session.fileno(), 0.0)
        self.assertEqual(len(pump), 1)
        self.assertTrue(pump.remove(client[0], client[1]))
        self.assertFalse(pump.remove(client[0], client[1]))
        self.assertEqual(len(pump), 0)
        self.assertIsNone(pump.lastSeen(client[0], client[1]))
        up.sendto(b"late", session.getsockname())
        readable, _, _ = select.select([pump.fileno()], [], [], 0.2)
        self.assertEqual(readable, [])
        clientSocket.sendto(b"again", port.getsockname())
        waitReadable(port.fileno())
        self.assertEqual(pump.readPort(0.0), ([(b"again", client)], []))

    def test_hashBothFamilies(self) -> None:
        """
        Many clients (more than the table's first size, so that it grows),
        added and half removed, are each found by their own address, on
        IPv4 and IPv6 alike.
        """
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            port = bound(self, family)
            pump = self.native.Pump(port.fileno(), family, MAX_READ)
            self.addCleanup(pump.close)
            sockets = [bound(self, family) for _ in range(40)]
            for number, skt in enumerate(sockets):
                pump.add(host, 20000 + number, skt.fileno(), float(number))
            for number in range(0, 40, 2):
                self.assertTrue(pump.remove(host, 20000 + number))
            self.assertEqual(len(pump), 20)
            for number in range(40):
                expected = None if number % 2 == 0 else float(number)
                self.assertEqual(pump.lastSeen(host, 20000 + number), expected)

    def test_badInput(self) -> None:
        """
        An address of the wrong family, a second session for one client, or
        a closed pump are refused with the value named.
        """
        port, pump, _, session = self.pumpOn()
        error = self.assertRaises(ValueError, pump.add, "::1", 5, session.fileno(), 0)
        self.assertIn("::1", str(error))
        pump.add("127.0.0.1", 5, session.fileno(), 0.0)
        error = self.assertRaises(
            ValueError, pump.add, "127.0.0.1", 5, session.fileno(), 0.0
        )
        self.assertIn("already has a session", str(error))
        self.assertRaises(ValueError, self.native.Pump, port.fileno(), 99, MAX_READ)
        pump.close()
        self.assertRaises(ValueError, pump.fileno)
        self.assertRaises(ValueError, pump.readPort, 0.0)


def relayContext(testCase, clock, table=None, **options) -> HandlerContext:
    """
    The handler context of a relay port on 127.0.0.1 with C{clock},
    C{table}'s policy keys and the relay's C{options}.
    """
    parsed = parseConfig(
        {
            "port": [
                {
                    "port": 0,
                    "interface": "127.0.0.1",
                    "protocol": "udp",
                    "handler": "relay",
                    "options": options,
                    **(table or {}),
                }
            ]
        },
        Path("."),
        "f.toml",
    )
    (config,) = buildConfig(
        parsed.ports, Defaults(), HANDLERS, Path(testCase.mktemp())
    ).ports
    return HandlerContext(reactor=reactor, clock=clock, port=config)


def relayOn(testCase, clock, table=None, **options) -> DatagramGate:
    """
    A relay port on 127.0.0.1 (a L{DatagramPort} with its gate, closed at
    cleanup) made of L{relayContext}'s arguments; its gate.
    """
    context = relayContext(testCase, clock, table, **options)
    gate = DatagramGate(UDPRelay(context), context)
    port = DatagramPort(0, gate, "127.0.0.1", MAX_READ, reactor)
    port.startListening()
    testCase.addCleanup(port.stopListening)
    return gate


def openDescriptors() -> int:
    """
    How many descriptors this process has open.
    """
    return len(os.listdir("/proc/self/fd"))


class RelayWithPumpTests(TestCase):
    """
    The relay through the C pump.
    """

    def setUp(self) -> None:
        native()

    @inlineCallbacks
    def test_expiry(self):
        """
        A session the pump relays expires after C{session_timeout} seconds
        of the injected clock without a datagram; the pump's datagrams
        count as activity.
        """
        _, number = upstream(self, b"u")
        clock = Clock()
        gate = relayOn(self, clock, upstream=f"127.0.0.1:{number}", session_timeout=30)
        relay = gate.inner
        address = ("127.0.0.1", gate.port.getHost().port)
        first, second = client(self), client(self)
        yield first.ask(b"a", address)
        yield second.ask(b"b", address)
        self.assertEqual(len(relay.sessions), 2)
        clock.advance(20)
        # Through the pump in C, at clock time 20.
        self.assertEqual((yield second.ask(b"c", address)), b"u:c")
        clock.advance(10)
        host = second.transport.getHost()
        self.assertEqual(list(relay.sessions), [(host.host, host.port)])
        clock.advance(20)
        self.assertEqual(relay.sessions, {})
        self.assertEqual(len(relay.pump.pump), 0)

    @inlineCallbacks
    def test_maxDatagramSizeInC(self):
        """
        C{max_datagram_size} holds for a session's datagrams, which the
        pump relays: a larger one is dropped as C{too_large}.
        """
        _, number = upstream(self, b"u")
        gate = relayOn(
            self, reactor, {"max_datagram_size": 100}, upstream=f"127.0.0.1:{number}"
        )
        address = ("127.0.0.1", gate.port.getHost().port)
        asker = client(self)
        yield asker.ask(b"open", address)
        pumped = gate.inner.pump.counts()[0]
        asker.transport.write(b"x" * 101, address)
        self.assertEqual((yield asker.ask(b"y" * 100, address)), b"u:" + b"y" * 100)
        yield waitUntilOnReactor(lambda: gate.counters.dropped.get("too_large") == 1)
        self.assertEqual(gate.inner.pump.counts()[0], pumped + 1)

    @inlineCallbacks
    def test_rateJudgedInPython(self):
        """
        With C{rate_per_ip}, the port's reads stay in Python (the gate
        judges every datagram), while replies still come through the pump.
        """
        _, number = upstream(self, b"u")
        gate = relayOn(
            self,
            reactor,
            {"rate_per_ip": {"per_second": 1000, "burst": 1000}},
            upstream=f"127.0.0.1:{number}",
        )
        self.assertIsNone(gate.port.divert)
        address = ("127.0.0.1", gate.port.getHost().port)
        asker = client(self)
        for index in range(3):
            self.assertEqual((yield asker.ask(b"%d" % index, address)), b"u:%d" % index)
        self.assertEqual(gate.inner.pump.counts()[:4], (0, 0, 3, 9))
        self.assertEqual(gate.counters.datagramsReceived, 3)
        self.assertEqual(gate.counters.datagramsSent, 3)

    @inlineCallbacks
    def test_liveChange(self):
        """
        A live change stops the old relay's pump (its sessions forgotten,
        its counts kept by the port) and starts the new one's, which reads
        the port only when no policy judges each datagram.
        """
        _, number = upstream(self, b"u")
        gate = relayOn(self, reactor, upstream=f"127.0.0.1:{number}")
        address = ("127.0.0.1", gate.port.getHost().port)
        asker = client(self)
        for index in range(3):
            yield asker.ask(b"%d" % index, address)
        old = gate.inner
        oldPump = old.pump
        self.assertEqual(gate.port.divert, oldPump.readPort)
        fds = openDescriptors()
        limited = relayContext(
            self,
            reactor,
            {"rate": {"per_second": 1000, "burst": 1000}},
            upstream=f"127.0.0.1:{number}",
        )
        gate.reconfigure(UDPRelay(limited), limited)
        self.assertIsNone(old.pump)
        self.assertRaises(ValueError, oldPump.pump.fileno)
        self.assertIsNone(gate.port.divert)
        # The old session's socket and the pump's epoll descriptor closed;
        # the new pump has one.
        self.assertEqual(openDescriptors(), fds - 1)
        self.assertEqual(gate.counters.datagramsReceived, 3)
        self.assertEqual(gate.counters.datagramsSent, 3)
        self.assertEqual((yield asker.ask(b"3", address)), b"u:3")
        self.assertIsNone(gate.port.divert)
        plain = relayContext(self, reactor, upstream=f"127.0.0.1:{number}")
        gate.reconfigure(UDPRelay(plain), plain)
        self.assertEqual(gate.port.divert, gate.inner.pump.readPort)
        for index in range(4, 7):
            self.assertEqual((yield asker.ask(b"%d" % index, address)), b"u:%d" % index)
        self.assertEqual(gate.counters.datagramsReceived, 7)
        self.assertEqual(gate.counters.datagramsSent, 7)
        self.assertEqual(gate.counters.bytesSent, 7 * 3)

    @inlineCallbacks
    def test_stopClosesEverything(self):
        """
        When the port stops, every session's socket, the port's and the
        pump's epoll descriptor close, and the reactor no longer watches
        the pump.
        """
        _, number = upstream(self, b"u")
        gate = relayOn(self, reactor, upstream=f"127.0.0.1:{number}")
        pump = gate.inner.pump
        address = ("127.0.0.1", gate.port.getHost().port)
        for asker in [client(self) for _ in range(3)]:
            yield asker.ask(b"q", address)
        self.assertEqual(len(pump.pump), 3)
        self.assertIn(pump, reactor.getReaders())
        running = openDescriptors()
        yield gate.port.stopListening()
        # The port, the pump and three sessions.
        self.assertEqual(openDescriptors(), running - 5)
        self.assertNotIn(pump, reactor.getReaders())
        self.assertEqual(gate.counters.datagramsSent, 3)

    @inlineCallbacks
    def test_upstreamRefusesMidSession(self):
        """
        An upstream that goes away while the pump relays a session: the
        refusal comes back to Python, the session closes and is counted as
        C{icmp_refused}.
        """
        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(up.close)
        up.bind(("127.0.0.1", 0))
        number = up.getsockname()[1]
        gate = relayOn(self, reactor, upstream=f"127.0.0.1:{number}")
        relay = gate.inner
        address = ("127.0.0.1", gate.port.getHost().port)
        asker = client(self)
        up.setblocking(False)
        asker.transport.write(b"first", address)
        yield waitUntilOnReactor(
            lambda: select.select([up], [], [], 0)[0], what="the upstream reads"
        )
        self.assertEqual(up.recv(100), b"first")
        up.close()
        asker.transport.write(b"second", address)
        counters = gate.handlerContext.counters
        yield waitUntilOnReactor(
            lambda: counters.value("icmp_refused", upstream=f"127.0.0.1:{number}")
        )
        yield waitUntilOnReactor(lambda: relay.sessions == {})
        self.assertEqual(len(relay.pump.pump), 0)

    @inlineCallbacks
    def test_noPumpRunsInPython(self):
        """
        When the pump can't be made (no descriptor left for its epoll),
        the relay runs all in Python, and serves.
        """
        _, number = upstream(self, b"u")

        class Refusing:
            @staticmethod
            def Pump(*args: object) -> object:
                raise OSError(errno.EMFILE, "Too many open files")

        self.patch(udppump, "native", Refusing)
        gate = relayOn(self, reactor, upstream=f"127.0.0.1:{number}")
        self.assertIsNone(gate.inner.pump)
        self.assertIsNone(gate.port.divert)
        address = ("127.0.0.1", gate.port.getHost().port)
        self.assertEqual((yield client(self).ask(b"x", address)), b"u:x")

    @inlineCallbacks
    def test_clientThePumpRefuses(self):
        """
        A client the pump can't take (C can't parse its address, or epoll
        refuses one more descriptor) gets a session in Python, beside the
        pumped ones; its refused socket is closed.
        """
        _, number = upstream(self, b"u")
        gate = relayOn(self, reactor, upstream=f"127.0.0.1:{number}")
        relay = gate.inner
        address = ("127.0.0.1", gate.port.getHost().port)
        pumped, refused = client(self), client(self)
        self.assertEqual((yield pumped.ask(b"a", address)), b"u:a")
        pump = relay.pump
        refusedAt = ("127.0.0.1", refused.transport.getHost().port)
        add = pump.add

        def picky(who, fd):
            if who == refusedAt:
                raise ValueError(f"{who[0]} is not an IPv4 address")
            add(who, fd)

        self.patch(pump, "add", picky)
        before = openDescriptors()
        for index in range(3):
            self.assertEqual(
                (yield refused.ask(b"%d" % index, address)), b"u:%d" % index
            )
        self.assertEqual((yield pumped.ask(b"b", address)), b"u:b")
        pumpedAt = ("127.0.0.1", pumped.transport.getHost().port)
        self.assertEqual(set(relay.sessions), {pumpedAt, refusedAt})
        self.assertEqual(len(pump.pump), 1)
        # The Python session's own socket, and no other.
        self.assertEqual(openDescriptors(), before + 1)
