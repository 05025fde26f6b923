"""
Tests for the relay on UDP ports (L{multiport.handlers.udprelay}) over
real sockets on 127.0.0.1 and ::1.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from multiport.config.build import buildConfig
from multiport.config.model import Defaults
from multiport.config.tomlfile import parseConfig
from multiport.daemon.logformat import isTwistedPortLine
from multiport.errors import ConfigError
from multiport.handlers.interface import HandlerContext
from multiport.handlers.udprelay import Session, UDPRelay
from multiport.io import udppump
from tests.support import HANDLERS, waitUntilOnReactor
from tests.test_udpports import addressOf, client, startService


class Upstream(DatagramProtocol):
    """
    A UDP upstream answering each datagram with its name and the datagram.
    """

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.peers: set[tuple[str, int]] = set()

    def datagramReceived(self, datagram, addr):
        self.peers.add(addr)
        self.transport.write(self.name + b":" + datagram, addr)


def upstream(testCase, name: bytes, host: str = "127.0.0.1") -> tuple[Upstream, int]:
    """
    A listening upstream and its port number, closed at cleanup.
    """
    protocol = Upstream(name)
    port = reactor.listenUDP(0, protocol, interface=host)
    testCase.addCleanup(port.stopListening)
    return protocol, port.getHost().port


def closedPort() -> int:
    """
    A UDP port number on 127.0.0.1 nothing listens on.
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    number = probe.getsockname()[1]
    probe.close()
    return number


def relayConfig(testCase, interface: str = "127.0.0.1", **options: object):
    """
    The configuration of one UDP relay port with C{options}.
    """
    parsed = parseConfig(
        {
            "port": [
                {
                    "port": 0,
                    "interface": interface,
                    "protocol": "udp",
                    "handler": "relay",
                    "options": options,
                }
            ]
        },
        Path("."),
        "f.toml",
    )
    return buildConfig(parsed.ports, Defaults(), HANDLERS, Path(testCase.mktemp()))


def relayService(testCase, interface: str = "127.0.0.1", **options: object):
    """
    A started service with one UDP relay port.
    """
    return startService(testCase, "", relayConfig(testCase, interface, **options))


class PythonPath:
    """
    A mixin: the relay runs all in Python (as without the C extension).
    """

    pumped = False

    def setUp(self):
        self.patch(udppump, "native", None)


class CPath:
    """
    A mixin: the relay's sessions go through the C pump (skipped only when
    the extension is not built; CI always builds it).
    """

    pumped = True

    def setUp(self):
        if udppump.native is None:
            raise SkipTest("the C extension _multiport_udp is not built")


def assertPath(testCase, service) -> None:
    """
    The relay of C{service}'s first port runs on the path the test is for.
    """
    relay = service.ports()[0].factory.inner
    testCase.assertEqual(relay.pump is not None, testCase.pumped)
    for session in relay.sessions.values():
        testCase.assertEqual(session.socket is not None, testCase.pumped)
        testCase.assertEqual(session.port is None, testCase.pumped)


class RelayTestsMixin:
    """
    The relay over real sockets.
    """

    @inlineCallbacks
    def test_twoClientsNeverCross(self):
        """
        Two clients each get only the replies to their own datagrams, from
        the port's own address, and each has its own upstream socket.
        """
        server, number = upstream(self, b"u")
        service = relayService(self, upstream=f"127.0.0.1:{number}")
        address = addressOf(service, 0)
        first, second = client(self), client(self)
        for index in range(20):
            a = yield first.ask(b"a%d" % index, address)
            b = yield second.ask(b"b%d" % index, address)
            self.assertEqual((a, b), (b"u:a%d" % index, b"u:b%d" % index))
        self.assertEqual({addr for _, addr in first.received}, {address})
        self.assertEqual(len(server.peers), 2)
        assertPath(self, service)
        gate = service.ports()[0].factory
        self.assertEqual(gate.counters.sessions, 2)
        self.assertEqual(gate.counters.datagramsSent, 40)

    @inlineCallbacks
    def test_ipv6(self):
        """
        The relay works on ::1 to an IPv6 upstream.
        """
        _, number = upstream(self, b"six", "::1")
        service = relayService(self, "::1", upstream=f"[::1]:{number}")
        answer = yield client(self, "::1").ask(b"x", addressOf(service, 0))
        self.assertEqual(answer, b"six:x")

    @inlineCallbacks
    def test_roundRobin(self):
        """
        With two upstreams and round_robin, two clients' sessions go one to
        each.
        """
        _, one = upstream(self, b"one")
        _, two = upstream(self, b"two")
        service = relayService(self, upstreams=[f"127.0.0.1:{one}", f"127.0.0.1:{two}"])
        address = addressOf(service, 0)
        a = yield client(self).ask(b"x", address)
        b = yield client(self).ask(b"x", address)
        self.assertEqual(sorted([a, b]), [b"one:x", b"two:x"])

    @inlineCallbacks
    def test_maxSessions(self):
        """
        Past C{max_sessions}, a new client's datagram is dropped as
        C{sessions_full}; the open session goes on.
        """
        _, number = upstream(self, b"u")
        service = relayService(self, upstream=f"127.0.0.1:{number}", max_sessions=1)
        address = addressOf(service, 0)
        first = client(self)
        yield first.ask(b"1", address)
        client(self).transport.write(b"2", address)
        gate = service.ports()[0].factory
        yield waitUntilOnReactor(
            lambda: gate.counters.dropped.get("sessions_full") == 1
        )
        self.assertEqual((yield first.ask(b"3", address)), b"u:3")

    @inlineCallbacks
    def test_upstreamDown(self):
        """
        An upstream that refuses (ICMP port unreachable) is counted as
        C{icmp_refused} and its session closed.
        """
        number = closedPort()
        service = relayService(self, upstream=f"127.0.0.1:{number}")
        address = addressOf(service, 0)
        asker = client(self)
        port = service.ports()[0]
        gate = port.factory
        counters = gate.handlerContext.counters
        refused = lambda: counters.value(  # noqa: E731
            "icmp_refused", upstream=f"127.0.0.1:{number}"
        )
        asker.transport.write(b"x", address)
        yield waitUntilOnReactor(lambda: refused() == 1)
        yield waitUntilOnReactor(lambda: gate.counters.sessions == 0)
        # The upstream is now skipped for fail_timeout: nothing to relay to.
        asker.transport.write(b"y", address)
        yield waitUntilOnReactor(lambda: gate.counters.dropped.get("no_upstream") == 1)


class RelayTestsPython(PythonPath, RelayTestsMixin, TestCase):
    """
    The relay over real sockets, in Python.
    """


class RelayTestsC(CPath, RelayTestsMixin, TestCase):
    """
    The relay over real sockets, through the C pump.
    """


class Collect:
    """
    The port's transport as a relay sees it, collecting replies.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.dropped: list[str] = []
        self.sessions = 0

    def write(self, datagram, addr):
        self.sent.append((datagram, addr))

    def drop(self, reason):
        self.dropped.append(reason)

    def setSessions(self, count):
        self.sessions = count


class ExpiryTests(TestCase):
    """
    Sessions expire after C{session_timeout} idle seconds on the injected
    clock.
    """

    @inlineCallbacks
    def test_expiry(self):
        """
        A session idle for C{session_timeout} closes; one with traffic
        stays.
        """
        _, number = upstream(self, b"u")
        (config,) = relayConfig(
            self, upstream=f"127.0.0.1:{number}", session_timeout=30
        ).ports
        clock = Clock()
        relay = UDPRelay(HandlerContext(reactor=reactor, clock=clock, port=config))
        transport = relay.transport = Collect()
        self.addCleanup(relay.stopProtocol)
        relay.datagramReceived(b"a", ("127.0.0.1", 40001))
        relay.datagramReceived(b"b", ("127.0.0.1", 40002))
        yield waitUntilOnReactor(lambda: len(transport.sent) == 2)
        self.assertEqual(transport.sessions, 2)
        clock.advance(20)
        relay.datagramReceived(b"b", ("127.0.0.1", 40002))
        clock.advance(10)
        self.assertEqual(list(relay.sessions), [("127.0.0.1", 40002)])
        self.assertEqual(transport.sessions, 1)
        clock.advance(20)
        self.assertEqual(relay.sessions, {})
        self.assertEqual(transport.sessions, 0)


class OptionTests(SynchronousTestCase):
    """
    The relay's UDP options.
    """

    def test_defaults(self):
        """
        session_timeout is 30 s unless set.
        """
        (config,) = relayConfig(self, upstream="127.0.0.1:53").ports
        self.assertEqual(config.options.sessionTimeout, 30.0)

    def test_tcpOnlyOption(self):
        """
        A TCP relay option is unknown on a UDP port, and the reverse.
        """
        error = self.assertRaises(
            ConfigError, relayConfig, self, upstream="127.0.0.1:53", splice=True
        )
        self.assertEqual(error.where, "f.toml: port[1].options.splice")

    def test_nameUpstream(self):
        """
        A UDP upstream must be an address.
        """
        error = self.assertRaises(
            ConfigError, relayConfig, self, upstream="example.com:53"
        )
        self.assertIn("must be an IP address", str(error))


class SessionSendTests(SynchronousTestCase):
    """
    What a session does when the kernel refuses to forward a datagram.
    """

    def session(self, error: int):
        """
        A relay with one session whose upstream socket fails with C{error}.
        """
        (config,) = relayConfig(self, upstream="127.0.0.1:9").ports
        relay = UDPRelay(HandlerContext(reactor=reactor, clock=Clock(), port=config))
        transport = relay.transport = Collect()
        session = Session(relay, ("127.0.0.1", 40001), config.options.upstreams[0])

        def refuse(datagram: bytes) -> None:
            raise OSError(error, "refused")

        session._sendUp = refuse
        relay.sessions[session.client] = session
        relay.pool.active[session.upstream] = 1
        return relay, session, transport

    def test_tooLarge(self) -> None:
        """
        A datagram too large for the upstream's path is dropped as
        C{too_large}; the session stays.
        """
        relay, session, transport = self.session(errno.EMSGSIZE)
        session.send(b"x")
        self.assertEqual(transport.dropped, ["too_large"])
        self.assertIn(session.client, relay.sessions)

    def test_busy(self) -> None:
        """
        A send the kernel can't take now is dropped as C{send_error}.
        """
        relay, session, transport = self.session(errno.ENOBUFS)
        session.send(b"x")
        self.assertEqual(transport.dropped, ["send_error"])

    def test_refused(self) -> None:
        """
        An upstream's earlier ICMP refusal, reported by a send, ends the
        session and is counted as C{icmp_refused}.
        """
        relay, session, transport = self.session(errno.ECONNREFUSED)
        session.send(b"x")
        self.assertEqual(relay.sessions, {})
        self.assertEqual(
            relay.context.counters.value("icmp_refused", upstream="127.0.0.1:9"), 1
        )


class ReplyTestsMixin:
    """
    A session's replies leave from the port's socket, counted, with the
    client's address checked once.
    """

    @inlineCallbacks
    def test_repliesCounted(self):
        """
        Every reply relayed back is counted in datagrams and bytes sent.
        """
        _, number = upstream(self, b"u")
        service = relayService(self, upstream=f"127.0.0.1:{number}")
        address = addressOf(service, 0)
        asker = client(self)
        for index in range(3):
            self.assertEqual((yield asker.ask(b"%d" % index, address)), b"u:%d" % index)
        assertPath(self, service)
        counters = service.ports()[0].factory.counters
        self.assertEqual(
            (counters.datagramsSent, counters.bytesSent, counters.datagramsReceived),
            (3, 9, 3),
        )

    def test_reflectingAddress(self):
        """
        A reply function for the port's own address or a source port 0
        drops every datagram as C{reflection}; another sends.
        """
        service = relayService(self, upstream="127.0.0.1:9")
        gate = service.ports()[0].factory
        own = gate.port.getHost()
        for bad in (("127.0.0.1", own.port), ("127.0.0.1", 0)):
            gate.replies.replyTo(bad)(b"loop")
        self.assertEqual(gate.counters.dropped, {"reflection": 2})
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(10)
        gate.replies.replyTo(receiver.getsockname())(b"fine")
        self.assertEqual(receiver.recv(10), b"fine")
        self.assertEqual(gate.counters.datagramsSent, 1)

    @inlineCallbacks
    def test_sessionsQuiet(self):
        """
        A session opening and closing logs nothing the daemon shows: a
        relay opens one for every new client.
        """
        _, number = upstream(self, b"u")
        service = relayService(self, upstream=f"127.0.0.1:{number}")
        address = addressOf(service, 0)
        relay = service.ports()[0].factory.inner
        asker = client(self)
        with capturedLogs() as events:
            self.assertEqual((yield asker.ask(b"q", address)), b"u:q")
            for session in list(relay.sessions.values()):
                relay.close(session)
            if not self.pumped:
                # Twisted's lines of the session's own port, which the
                # daemon leaves out; a pumped session has no such port.
                yield waitUntilOnReactor(lambda: len(events) >= 2)
        self.assertEqual([e for e in events if not isTwistedPortLine(e)], [])


class ReplyTestsPython(PythonPath, ReplyTestsMixin, TestCase):
    """
    Replies in Python.
    """


class ReplyTestsC(CPath, ReplyTestsMixin, TestCase):
    """
    Replies through the C pump.
    """
