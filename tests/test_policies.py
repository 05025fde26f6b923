"""
Tests for L{multiport.ports.policies} and L{multiport.ports.admission}: limits,
rates, access rules and timeouts.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import (
    MemoryReactorClock,
    StringTransportWithDisconnection,
)
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from multiport.config.build import buildConfig
from multiport.config.model import ConfigError, Defaults, PortConfig
from multiport.config.portspec import parsePorts
from multiport.config.tomlfile import parseConfig
from multiport.daemon.service import PortsService
from multiport.handlers.interface import HandlerContext
from multiport.handlers.simple import Echo
from multiport.ports.admission import Admission, DaemonLimit, TokenBucket, clientGroup
from multiport.ports.counters import PortCounters
from multiport.ports.factory import PortFactory
from multiport.ports.policies import (
    DEFAULT_DRAIN_TIMEOUT,
    Policy,
    Rate,
    drainTimeoutOf,
    parsePolicy,
)
from tests.support import HANDLERS, waitUntilOnReactor


def v4(host: str, port: int = 40000) -> IPv4Address:
    return IPv4Address("TCP", host, port)


def v6(host: str, port: int = 40000) -> IPv6Address:
    return IPv6Address("TCP", host, port)


class ParseTests(SynchronousTestCase):
    """
    parsePolicy reads the policy keys and names bad values by path.
    """

    def test_everyKey(self):
        """
        Every key becomes its field.
        """
        policy = parsePolicy(
            {
                "max_connections": 100,
                "max_connections_per_ip": 5,
                "rate": {"per_second": 10, "burst": 20},
                "rate_per_ip": {"per_second": 0.5},
                "idle_timeout": 30,
                "max_duration": 3600.5,
                "allow": ["10.0.0.0/8", "::1"],
                "deny": ["10.1.2.3"],
            },
            "port[1]",
        )
        self.assertEqual(
            policy,
            Policy(
                maxConnections=100,
                maxConnectionsPerIP=5,
                rate=Rate(10.0, 20),
                ratePerIP=Rate(0.5, 1),
                idleTimeout=30.0,
                maxDuration=3600.5,
                allow=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1")),
                deny=(ipaddress.ip_network("10.1.2.3/32"),),
            ),
        )

    def assertBad(self, table, where, message):
        error = self.assertRaises(ConfigError, parsePolicy, table, "port[1]")
        self.assertEqual((error.where, error.message), (where, message))

    def test_badLimit(self):
        """
        A limit that is not a whole number of at least 1 is named.
        """
        self.assertBad(
            {"max_connections": 0},
            "port[1].max_connections",
            "expected a whole number of at least 1, got integer 0",
        )
        self.assertBad(
            {"max_connections_per_ip": "5"},
            "port[1].max_connections_per_ip",
            "expected a whole number of at least 1, got string '5'",
        )

    def test_badTimeout(self):
        """
        A timeout that is not a positive number of seconds is named.
        """
        self.assertBad(
            {"idle_timeout": -1},
            "port[1].idle_timeout",
            "expected a number of seconds above 0, got integer -1",
        )
        self.assertBad(
            {"max_duration": True},
            "port[1].max_duration",
            "expected a number of seconds above 0, got boolean True",
        )

    def test_badRate(self):
        """
        A rate must be a table with per_second and optionally burst.
        """
        self.assertBad(
            {"rate": 5},
            "port[1].rate",
            "expected a table { per_second = N, burst = M }, got integer 5",
        )
        self.assertBad({"rate": {}}, "port[1].rate", "missing key 'per_second'")
        self.assertBad(
            {"rate": {"per_second": 1, "bursts": 2}},
            "port[1].rate.bursts",
            "unknown key (known: burst, per_second)",
        )

    def test_rateUnit(self):
        """
        A rate's per_second is named in connections a second, not seconds.
        """
        self.assertBad(
            {"rate": {"per_second": 0}},
            "port[1].rate.per_second",
            "expected a number of connections a second above 0, got integer 0",
        )

    def test_hostBitsRefused(self):
        """
        A network with host bits set (10.0.0.1/8) is refused, saying what
        to write instead; the same for IPv6.
        """
        self.assertBad(
            {"allow": ["10.0.0.1/8"]},
            "port[1].allow[0]",
            "'10.0.0.1/8' has host bits set: write '10.0.0.0/8' for the network, "
            "or '10.0.0.1/32' for the one address",
        )
        self.assertBad(
            {"deny": ["::1", "2001:db8::1/32"]},
            "port[1].deny[1]",
            "'2001:db8::1/32' has host bits set: write '2001:db8::/32' for the "
            "network, or '2001:db8::1/128' for the one address",
        )

    def test_networksAccepted(self):
        """
        Networks written without host bits, and single addresses, are kept.
        """
        policy = parsePolicy(
            {"allow": ["10.0.0.0/8", "192.0.2.7", "2001:DB8::/32"]}, "port[1]"
        )
        self.assertEqual(
            [str(n) for n in policy.allow],
            ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"],
        )

    def test_badNetwork(self):
        """
        A network that doesn't parse is named with its index.
        """
        self.assertBad(
            {"deny": ["10.0.0.0/8", "not-a-net"]},
            "port[1].deny[1]",
            "'not-a-net' is not a network: 'not-a-net' does not appear to be an "
            "IPv4 or IPv6 network",
        )

    def test_portBeatsDefaults(self):
        """
        A port's own policy keys beat [defaults], key by key.
        """
        file = parseConfig(
            {
                "defaults": {"max_connections": 10, "idle_timeout": 5},
                "port": [{"port": 7000, "handler": "echo", "max_connections": 3}],
            },
            Path("."),
            "f.toml",
        )
        config = buildConfig(
            file.ports, file.defaults.over(Defaults()), HANDLERS, Path(".")
        )
        policy = config.ports[0].policy
        self.assertEqual((policy.maxConnections, policy.idleTimeout), (3, 5.0))


class DrainTimeoutTests(SynchronousTestCase):
    """
    drain_timeout: seconds a port's open connections get to finish when it
    is removed or the daemon stops; unlike the other timeouts it may be 0.
    """

    def assertBad(self, value, message):
        error = self.assertRaises(
            ConfigError, parsePolicy, {"drain_timeout": value}, "port[2]"
        )
        self.assertEqual(
            (error.where, error.message), ("port[2].drain_timeout", message)
        )

    def test_parsed(self):
        """
        A number of seconds becomes the drainTimeout field, as a float.
        """
        self.assertEqual(
            parsePolicy({"drain_timeout": 5}, "port[1]"), Policy(drainTimeout=5.0)
        )
        self.assertEqual(
            parsePolicy({"drain_timeout": 2.5}, "port[1]"), Policy(drainTimeout=2.5)
        )

    def test_zero(self):
        """
        0 is accepted: the connections are closed at once.
        """
        policy = parsePolicy({"drain_timeout": 0}, "port[1]")
        self.assertEqual(policy, Policy(drainTimeout=0.0))
        self.assertEqual(drainTimeoutOf(policy), 0.0)

    def test_bad(self):
        """
        Negative numbers, non-numbers and infinities are named by key path.
        """
        prefix = "expected a number of seconds, 0 or more, got"
        self.assertBad(-1, f"{prefix} integer -1")
        self.assertBad(-0.5, f"{prefix} number -0.5")
        self.assertBad("30", f"{prefix} string '30'")
        self.assertBad(True, f"{prefix} boolean True")
        self.assertBad(float("inf"), f"{prefix} number inf")
        self.assertBad(float("nan"), f"{prefix} number nan")

    def test_default(self):
        """
        A policy without drain_timeout gets 30 seconds.
        """
        self.assertEqual(DEFAULT_DRAIN_TIMEOUT, 30.0)
        self.assertEqual(drainTimeoutOf(Policy()), DEFAULT_DRAIN_TIMEOUT)
        self.assertEqual(drainTimeoutOf(Policy(drainTimeout=7.0)), 7.0)

    def test_zeroBeatsDefaults(self):
        """
        A port's drain_timeout, 0 included, beats [defaults]; a port without
        one takes the [defaults] value.
        """
        file = parseConfig(
            {
                "defaults": {"drain_timeout": 10},
                "port": [
                    {"port": 7000, "handler": "echo", "drain_timeout": 0},
                    {"port": 7001, "handler": "echo"},
                ],
            },
            Path("."),
            "f.toml",
        )
        config = buildConfig(
            file.ports, file.defaults.over(Defaults()), HANDLERS, Path(".")
        )
        self.assertEqual([drainTimeoutOf(p.policy) for p in config.ports], [0.0, 10.0])


class TokenBucketTests(SynchronousTestCase):
    """
    The token bucket allows a burst, then the rate.
    """

    def test_burstThenRate(self):
        """
        Burst tokens at once, then one per 1/rate seconds.
        """
        clock = Clock()
        bucket = TokenBucket(Rate(2.0, 3), clock)
        self.assertEqual([bucket.take() for _ in range(4)], [True, True, True, False])
        clock.advance(0.5)
        self.assertEqual([bucket.take(), bucket.take()], [True, False])
        clock.advance(10)
        self.assertTrue(bucket.full())


class AdmissionTests(SynchronousTestCase):
    """
    Admission turns connections away for the reasons the policy gives.
    """

    def admission(self, **policy) -> Admission:
        return Admission(Policy(**policy), Clock())

    def test_nothingSet(self):
        """
        Without a policy everyone is let in.
        """
        self.assertIsNone(self.admission().admit(v4("192.0.2.1"), 10_000))

    def test_denyWins(self):
        """
        deny wins over allow; an address not allowed is turned away.
        """
        admission = self.admission(
            allow=(ipaddress.ip_network("10.0.0.0/8"),),
            deny=(ipaddress.ip_network("10.0.0.5/32"),),
        )
        self.assertIsNone(admission.admit(v4("10.1.1.1"), 0))
        self.assertEqual(admission.admit(v4("10.0.0.5"), 0), "access")
        self.assertEqual(admission.admit(v4("192.0.2.1"), 0), "access")

    def test_mappedIPv4(self):
        """
        An IPv4-mapped IPv6 client is matched as IPv4.
        """
        admission = self.admission(deny=(ipaddress.ip_network("192.0.2.0/24"),))
        self.assertEqual(admission.admit(v6("::ffff:192.0.2.9"), 0), "access")

    def test_maxConnections(self):
        """
        At the port's maximum, new connections are turned away.
        """
        admission = self.admission(maxConnections=2)
        self.assertIsNone(admission.admit(v4("192.0.2.1"), 1))
        self.assertEqual(admission.admit(v4("192.0.2.1"), 2), "max_connections")

    def test_perAddress(self):
        """
        Each address gets its own count, freed on release.
        """
        admission = self.admission(maxConnectionsPerIP=2)
        a, b = v4("192.0.2.1"), v4("192.0.2.2")
        self.assertEqual(
            [admission.admit(x, 0) for x in (a, a, a, b)],
            [None, None, "max_connections_per_ip", None],
        )
        admission.release(a)
        self.assertIsNone(admission.admit(a, 0))

    def test_ipv6GroupedBy64(self):
        """
        IPv6 clients in one /64 share a count.
        """
        admission = self.admission(maxConnectionsPerIP=1)
        self.assertIsNone(admission.admit(v6("2001:db8::1"), 0))
        self.assertEqual(
            admission.admit(v6("2001:db8::2"), 0), "max_connections_per_ip"
        )
        self.assertIsNone(admission.admit(v6("2001:db8:0:1::1"), 0))
        self.assertEqual(
            clientGroup(ipaddress.ip_address("2001:db8::ffff")),
            ipaddress.ip_network("2001:db8::/64"),
        )

    def test_rate(self):
        """
        Over the port's rate, connections are turned away.
        """
        admission = self.admission(rate=Rate(1.0, 2))
        results = [admission.admit(v4("192.0.2.1"), 0) for _ in range(3)]
        self.assertEqual(results, [None, None, "rate"])

    def test_ratePerAddress(self):
        """
        Each address has its own bucket.
        """
        admission = self.admission(ratePerIP=Rate(1.0, 1))
        a, b = v4("192.0.2.1"), v4("192.0.2.2")
        self.assertEqual(
            [admission.admit(x, 0) for x in (a, a, b)], [None, "rate", None]
        )

    def test_daemonLimit(self):
        """
        The daemon-wide limit counts every admitted connection until
        released.
        """
        limit = DaemonLimit(maximum=1)
        admission = Admission(Policy(), Clock(), limit)
        self.assertEqual(limit.ports, 1)
        self.assertIsNone(admission.admit(v4("192.0.2.1"), 0))
        self.assertEqual(admission.admit(v4("192.0.2.1"), 1), "max_connections")
        admission.release(v4("192.0.2.1"))
        self.assertEqual(limit.current, 0)

    def test_fairShare(self):
        """
        A port below its fair share is let in until the daemon is full; one
        above it may only borrow until a quarter of the maximum is left.
        """
        limit = DaemonLimit(maximum=100, ports=4, current=70)
        self.assertTrue(limit.admits(portDescriptors=24))
        self.assertTrue(limit.admits(portDescriptors=25 + 40))
        limit.current = 75
        self.assertFalse(limit.admits(portDescriptors=75))
        self.assertTrue(limit.admits(portDescriptors=0))
        limit.current = 100
        self.assertFalse(limit.admits(portDescriptors=0))

    def test_descriptorCost(self):
        """
        A connection takes the descriptors its handler declares from the
        daemon limit and gives them all back when it ends.
        """
        limit = DaemonLimit(maximum=10)
        admission = Admission(Policy(), Clock(), limit)
        client = v4("192.0.2.1")
        self.assertEqual(
            [admission.admit(client, n, cost=2) for n in range(6)],
            [None] * 5 + ["max_connections"],
        )
        self.assertEqual((limit.current, admission.descriptors), (10, 10))
        for _ in range(5):
            admission.release(client, cost=2)
        self.assertEqual((limit.current, admission.descriptors), (0, 0))

    def test_fairShareInDescriptors(self):
        """
        A port's fair share is counted in descriptors: a relay port (two a
        connection) flooding a two-port daemon holds half as many
        connections as its share and what it may borrow allow one-socket
        connections, and the other port still gets the rest.
        """
        limit = DaemonLimit(maximum=100, ports=2)
        relay = Admission(Policy(), Clock(), limit)
        echo = Admission(Policy(), Clock(), limit)
        client = v4("192.0.2.1")
        admitted = 0
        while relay.admit(client, admitted, cost=2) is None:
            admitted += 1
        self.assertEqual((admitted, relay.descriptors), (37, 74))
        while echo.admit(client, echo.descriptors) is None:
            pass
        self.assertEqual((echo.descriptors, limit.current), (26, 100))

    def test_lend(self):
        """
        Descriptors lent for pipes come only from what ports may borrow:
        never from the quarter kept for ports below their share.
        """
        limit = DaemonLimit(maximum=100, current=73)
        self.assertTrue(limit.lend(2))
        self.assertFalse(limit.lend(2))
        self.assertEqual(limit.current, 75)
        limit.giveBack(2)
        self.assertEqual(limit.current, 73)

    def test_fromFileLimit(self):
        """
        The default limit keeps a reserve below the file-descriptor limit.
        """
        import resource

        limit = DaemonLimit.fromFileLimit(listening=10)
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.assertEqual(limit.maximum, soft - 10 - 64)


def wrapped(policy: Policy, clock: Clock) -> PortFactory:
    """
    A port wrapper around echo with C{policy}, on C{clock}.
    """
    config = PortConfig("127.0.0.1", 7000, "echo", None, 50, None, policy=policy)
    context = HandlerContext(reactor=clock, clock=clock, port=config)
    return PortFactory(Factory.forProtocol(Echo), PortCounters(), context)


class DescriptorCostTests(SynchronousTestCase):
    """
    The port wrapper reserves, per connection, the descriptors its handler
    declares, and each connection gives back what it took.
    """

    def test_reservedPerConnection(self):
        """
        A handler declaring two descriptors a connection gets half as many
        connections from the daemon limit; each one gives two back.
        """
        clock = Clock()
        config = PortConfig("127.0.0.1", 7000, "relay", None, 50, None)
        context = HandlerContext(reactor=clock, clock=clock, port=config)
        limit = DaemonLimit(maximum=10)
        factory = PortFactory(
            Factory.forProtocol(Echo), PortCounters(), context, limit, descriptors=2
        )
        built = []
        for port in range(6):
            protocol = factory.buildProtocol(v4("192.0.2.1", 40000 + port))
            if protocol is not None:
                protocol.makeConnection(StringTransportWithDisconnection())
                protocol.transport.protocol = protocol
                built.append(protocol)
        self.assertEqual((len(built), limit.current), (5, 10))
        self.assertEqual(factory.counters.rejected, {"max_connections": 1})
        built[0].transport.loseConnection()
        self.assertEqual(limit.current, 8)

    def test_reconfigureKeepsWhatConnectionsTook(self):
        """
        After a live change to a handler costing one descriptor, the open
        connections of the old one still give back their two.
        """
        clock = Clock()
        config = PortConfig("127.0.0.1", 7000, "relay", None, 50, None)
        context = HandlerContext(reactor=clock, clock=clock, port=config)
        limit = DaemonLimit(maximum=10)
        factory = PortFactory(
            Factory.forProtocol(Echo), PortCounters(), context, limit, descriptors=2
        )
        old = factory.buildProtocol(v4("192.0.2.1"))
        old.makeConnection(StringTransportWithDisconnection())
        old.transport.protocol = old
        factory.reconfigure(Factory.forProtocol(Echo), context, descriptors=1)
        new = factory.buildProtocol(v4("192.0.2.1", 40001))
        new.makeConnection(StringTransportWithDisconnection())
        new.transport.protocol = new
        self.assertEqual((limit.current, factory.admission.descriptors), (3, 3))
        old.transport.loseConnection()
        self.assertEqual((limit.current, factory.admission.descriptors), (1, 1))


class TimeoutTests(SynchronousTestCase):
    """
    idle_timeout and max_duration close connections on the injected clock.
    """

    def connect(self, factory: PortFactory):
        protocol = factory.buildProtocol(v4("192.0.2.1"))
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        transport.abortConnection = transport.loseConnection
        protocol.makeConnection(transport)
        return protocol, transport

    def test_idle(self):
        """
        A connection with no bytes either way for idle_timeout is closed,
        reason timeout; traffic keeps it open.
        """
        clock = Clock()
        factory = wrapped(Policy(idleTimeout=8.0), clock)
        protocol, transport = self.connect(factory)
        for _ in range(10):
            clock.advance(3)
            protocol.dataReceived(b"x")
        self.assertTrue(transport.connected)
        with capturedLogs() as events:
            # Time passes in steps, as on a real reactor.
            clock.pump([1.0] * 8)
            self.assertTrue(transport.connected)
            clock.pump([1.0] * 2)
        self.assertFalse(transport.connected)
        self.assertEqual(protocol.closeReason, "timeout")
        [line] = [e["line"] for e in events if "line" in e]
        self.assertIn("closed timeout", line)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_maxDuration(self):
        """
        A connection is closed at max_duration whatever its traffic.
        """
        clock = Clock()
        factory = wrapped(Policy(maxDuration=60.0), clock)
        protocol, transport = self.connect(factory)
        clock.advance(59)
        protocol.dataReceived(b"busy")
        self.assertTrue(transport.connected)
        clock.advance(1)
        self.assertFalse(transport.connected)
        self.assertEqual(protocol.closeReason, "timeout")

    def test_timersCancelled(self):
        """
        A connection that ends leaves no timer behind.
        """
        clock = Clock()
        factory = wrapped(Policy(idleTimeout=8.0, maxDuration=60.0), clock)
        protocol, transport = self.connect(factory)
        # Both timers run while the connection is open (the idle one checks
        # every quarter of idle_timeout), so their absence afterwards is the
        # close's doing.
        self.assertEqual(
            sorted(call.getTime() for call in clock.getDelayedCalls()), [2.0, 60.0]
        )
        transport.loseConnection()
        self.assertEqual(clock.getDelayedCalls(), [])


@inlineCallbacks
def receive(client: socket.socket, expected: int):
    """
    Read from C{client} without blocking the reactor: C{expected} bytes, or
    everything until the server closes (C{b""} read).
    """
    client.setblocking(False)
    chunks: list[bytes] = []
    closed = []

    def ready() -> bool:
        try:
            data = client.recv(65536)
        except BlockingIOError:
            return False
        except ConnectionResetError:
            closed.append(True)
            return True
        if not data:
            closed.append(True)
            return True
        chunks.append(data)
        return sum(map(len, chunks)) >= expected

    yield waitUntilOnReactor(ready)
    return b"".join(chunks)


class RealConnectionTests(TestCase):
    """
    Policies against real clients on 127.0.0.1.
    """

    def start(self, ports: str, **policy) -> PortsService:
        config = buildConfig(
            parsePorts(ports),
            Defaults(policy=Policy(**policy)),
            HANDLERS,
            Path(self.mktemp()),
        )
        from multiport.config.model import TLSConfig
        from multiport.ports.tls import ensureSelfSigned

        certificates = {}
        if any(p.tls for p in config.ports):
            certificates[TLSConfig()] = ensureSelfSigned(config.stateDir)
        service = PortsService(config, HANDLERS, certificates, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    @inlineCallbacks
    def test_maxConnectionsExact(self):
        """
        With max_connections 3 and ten clients at once, exactly three get
        in; when they leave, others can.
        """
        service = self.start("127.0.0.1:0=echo", maxConnections=3)
        [bound] = service.boundPorts()
        counters = bound.counters
        clients = [
            socket.create_connection(("127.0.0.1", bound.address.port))
            for _ in range(10)
        ]
        self.addCleanup(lambda: [c.close() for c in clients])
        yield waitUntilOnReactor(
            lambda: counters.accepted + sum(counters.rejected.values()) == 10
        )
        self.assertEqual(
            (counters.accepted, counters.rejected), (3, {"max_connections": 7})
        )
        for client in clients:
            client.close()
        yield waitUntilOnReactor(lambda: counters.current == 0)
        again = socket.create_connection(("127.0.0.1", bound.address.port))
        self.addCleanup(again.close)
        again.sendall(b"hi")
        echoed = yield receive(again, 2)
        self.assertEqual(echoed, b"hi")

    @inlineCallbacks
    def test_deniedBeforeTLS(self):
        """
        A denied client on a TLS port is closed before any TLS: no byte
        reaches the handler, nothing counts as a handshake failure.
        """
        service = self.start(
            "127.0.0.1:0=echo+tls", deny=(ipaddress.ip_network("127.0.0.0/8"),)
        )
        [bound] = service.boundPorts()
        counters = bound.counters
        with capturedLogs() as events:
            client = socket.create_connection(("127.0.0.1", bound.address.port))
            self.addCleanup(client.close)
            client.sendall(b"\x16\x03\x01 not really a hello")
            received = yield receive(client, 1)
            self.assertEqual(received, b"")
            yield waitUntilOnReactor(lambda: counters.rejected == {"access": 1})
        self.assertEqual(
            (counters.accepted, counters.tlsHandshakeFailures, counters.bytesReceived),
            (0, 0, 0),
        )
        [line] = [e["line"] for e in events if "line" in e]
        self.assertIn("closed rejected (access)", line)


class HeaderTimeoutTests(SynchronousTestCase):
    """
    The http handler closes clients whose headers take too long
    (slowloris), and idles out between requests like nginx.
    """

    def site(self, policy: Policy):
        from multiport.handlers.weboptions import parseWebOptions

        clock = MemoryReactorClock()
        config = PortConfig(
            "127.0.0.1",
            8080,
            "http",
            None,
            50,
            parseWebOptions({}, Path(".")),
            policy=policy,
        )
        context = HandlerContext(reactor=clock, clock=clock, port=config)
        factory = PortFactory(
            HANDLERS["http"].buildFactory(context), PortCounters(), context
        )
        protocol = factory.buildProtocol(v4("192.0.2.1"))
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        transport.abortConnection = transport.loseConnection
        protocol.makeConnection(transport)
        return clock, protocol, transport

    def test_slowHeaders(self):
        """
        Headers still incomplete after header_timeout close the connection,
        reason timeout.
        """
        clock, protocol, transport = self.site(Policy(headerTimeout=5.0))
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n")
        clock.advance(4.9)
        protocol.dataReceived(b"X-Slow: 1\r\n")
        self.assertTrue(transport.connected)
        clock.advance(0.1)
        self.assertFalse(transport.connected)
        self.assertEqual(protocol.closeReason, "timeout")
        self.assertEqual(protocol.timeoutKind, "header_timeout")

    def test_completeHeadersInTime(self):
        """
        A request whose headers arrive in time is served and the deadline
        is gone.
        """
        clock, protocol, transport = self.site(Policy(headerTimeout=5.0))
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertIn(b"200 OK", transport.value())
        clock.advance(10)
        self.assertTrue(transport.connected)

    def test_defaults(self):
        """
        Without settings, headers get 20 s and an idle keep-alive
        connection 75 s.
        """
        clock, protocol, transport = self.site(Policy())
        protocol.dataReceived(b"GET / HTTP/1.1\r\n")
        clock.advance(19.9)
        self.assertTrue(transport.connected)
        clock.advance(0.1)
        self.assertFalse(transport.connected)
        clock, protocol, transport = self.site(Policy())
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        clock.advance(74.9)
        self.assertTrue(transport.connected)
        clock.advance(0.2)
        self.assertFalse(transport.connected)


class ProxyClient(Protocol):
    """
    Sends a PROXY header, then (optionally) starts TLS, then a payload; fires
    C{done} with what came back when the connection closes.
    """

    def __init__(self, header: bytes, payload: bytes, tls=None, expected=None):
        self.header, self.payload, self.tls = header, payload, tls
        self.expected = expected
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.header)
        if self.tls is not None:
            self.transport.startTLS(self.tls)
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.expected is not None and len(self.received) >= self.expected:
            self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        self.done.callback(self.received)


V2_IPV4 = (
    b"\r\n\r\n\x00\r\nQUIT\n"
    + b"\x21\x11\x00\x0c"
    + bytes([203, 0, 113, 9, 10, 0, 0, 1])
    + (6666).to_bytes(2, "big")
    + (443).to_bytes(2, "big")
)


class ProxyProtocolPortTests(TestCase):
    """
    Ports with proxy_protocol see, limit and log the real client address.
    """

    def start(self, ports: str, **policy) -> PortsService:
        return RealConnectionTests.start(self, ports, **policy)

    @inlineCallbacks
    def connect(self, service, client):
        port = service.boundPorts()[0].address.port
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: client)
        )
        received = yield client.done
        return received

    @inlineCallbacks
    def test_v1RealAddress(self):
        """
        After a v1 header the handler serves and the log names the client.
        """
        service = self.start(
            "127.0.0.1:0=echo",
            proxyProtocol="v1",
            proxyProtocolFrom=(ipaddress.ip_network("127.0.0.0/8"),),
        )
        counters = service.boundPorts()[0].counters
        with capturedLogs() as events:
            received = yield self.connect(
                service,
                ProxyClient(
                    b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 7000\r\n",
                    b"hello",
                    expected=5,
                ),
            )
            yield waitUntilOnReactor(lambda: counters.closed == 1)
        self.assertEqual(received, b"hello")
        self.assertEqual(counters.bytesReceived, 5)
        [line] = [e["line"] for e in events if "line" in e]
        self.assertIn(" echo 203.0.113.7:5555 closed clean", line)

    @inlineCallbacks
    def test_rulesUseRealAddress(self):
        """
        deny applies to the address in the header, not the load balancer's.
        """
        service = self.start(
            "127.0.0.1:0=echo",
            proxyProtocol="any",
            proxyProtocolFrom=(ipaddress.ip_network("127.0.0.0/8"),),
            deny=(ipaddress.ip_network("203.0.113.0/24"),),
        )
        counters = service.boundPorts()[0].counters
        received = yield self.connect(service, ProxyClient(V2_IPV4, b"hello"))
        self.assertEqual(received, b"")
        self.assertEqual((counters.accepted, counters.rejected), (0, {"access": 1}))

    @inlineCallbacks
    def test_v2ThenTLS(self):
        """
        On a TLS port the header comes before the handshake; the handler
        behind TLS sees the real client.
        """
        service = self.start(
            "127.0.0.1:0=echo+tls",
            proxyProtocol="v2",
            proxyProtocolFrom=(ipaddress.ip_network("127.0.0.1/32"),),
        )
        counters = service.boundPorts()[0].counters
        trust = Certificate.loadPEM(
            (service.config.stateDir / "selfsigned-cert.pem").read_bytes()
        )
        with capturedLogs() as events:
            received = yield self.connect(
                service,
                ProxyClient(
                    V2_IPV4, b"secret", optionsForClientTLS("localhost", trust), 6
                ),
            )
            yield waitUntilOnReactor(lambda: counters.closed == 1)
        self.assertEqual(received, b"secret")
        [line] = [e["line"] for e in events if "line" in e]
        self.assertIn(" echo 203.0.113.9:6666 closed", line)

    @inlineCallbacks
    def test_untrustedSender(self):
        """
        A sender outside proxy_protocol_from is turned away (reason
        proxy_protocol) before any header is read.
        """
        service = self.start(
            "127.0.0.1:0=echo",
            proxyProtocol="v1",
            proxyProtocolFrom=(ipaddress.ip_network("192.0.2.0/24"),),
        )
        counters = service.boundPorts()[0].counters
        # The client sends nothing: only a refusal at connection time closes
        # it before the header timeout (10 s), and counts proxy_protocol
        # rather than timeout.
        client = ProxyClient(b"", b"")
        port = service.boundPorts()[0].address.port
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: client)
        )
        yield waitUntilOnReactor(
            lambda: client.done.called,
            5,
            what="the untrusted sender to be closed before sending a header",
        )
        self.assertEqual(client.received, b"")
        self.assertEqual(
            (counters.accepted, counters.rejected), (0, {"proxy_protocol": 1})
        )

    @inlineCallbacks
    def test_malformedHeader(self):
        """
        A malformed header closes the connection, counted as proxy_protocol.
        """
        service = self.start(
            "127.0.0.1:0=echo",
            proxyProtocol="v1",
            proxyProtocolFrom=(ipaddress.ip_network("127.0.0.0/8"),),
        )
        counters = service.boundPorts()[0].counters
        received = yield self.connect(
            service, ProxyClient(b"GET / HTTP/1.0\r\n\r\n", b"")
        )
        self.assertEqual(received, b"")
        yield waitUntilOnReactor(lambda: counters.rejected == {"proxy_protocol": 1})
        self.assertEqual(counters.accepted, 0)


class ProxyConfigTests(SynchronousTestCase):
    """
    proxy_protocol needs proxy_protocol_from.
    """

    def test_fromRequired(self):
        """
        proxy_protocol without proxy_protocol_from is an error naming it.
        """
        file = parseConfig(
            {"port": [{"port": 7000, "handler": "echo", "proxy_protocol": "v1"}]},
            Path("."),
            "f.toml",
        )
        error = self.assertRaises(
            ConfigError, buildConfig, file.ports, Defaults(), HANDLERS, Path(".")
        )
        self.assertEqual(error.where, "f.toml: port[1].proxy_protocol_from")
        self.assertIn("required with proxy_protocol", error.message)

    def test_fromInDefaults(self):
        """
        proxy_protocol_from may come from [defaults].
        """
        file = parseConfig(
            {
                "defaults": {"proxy_protocol_from": ["10.0.0.0/8"]},
                "port": [{"port": 7000, "handler": "echo", "proxy_protocol": "any"}],
            },
            Path("."),
            "f.toml",
        )
        config = buildConfig(
            file.ports, file.defaults.over(Defaults()), HANDLERS, Path(".")
        )
        self.assertEqual(config.ports[0].policy.proxyProtocol, "any")

    def test_badVersion(self):
        """
        proxy_protocol takes v1, v2 or any.
        """
        error = self.assertRaises(
            ConfigError, parsePolicy, {"proxy_protocol": "v3"}, "port[1]"
        )
        self.assertEqual(error.where, "port[1].proxy_protocol")


class ReviewRegressionTests(SynchronousTestCase):
    """
    Regressions from review: bounded tables, contained handler errors,
    finite numbers.
    """

    def test_bucketTableBounded(self):
        """
        Many new client groups whose buckets never refill keep the per-IP
        table bounded.
        """
        from multiport.ports import admission

        self.patch(admission, "MAX_BUCKETS", 100)
        self.patch(admission, "MIN_PRUNE", 10)
        admission = Admission(Policy(ratePerIP=Rate(0.001, 1)), Clock())
        admission._pruneAt = 10
        for index in range(1000):
            admission.admit(v4(str(ipaddress.ip_address(0x0A000000 + index))), 0)
        self.assertLessEqual(len(admission._buckets), 100)

    def test_buildProtocolRaises(self):
        """
        A handler factory that raises releases what admission took, counts
        a protocol error, and the connection is refused.
        """

        class Broken(Factory):
            def buildProtocol(self, addr):
                raise RuntimeError("broken")

        clock = Clock()
        config = PortConfig(
            "127.0.0.1",
            7000,
            "echo",
            None,
            50,
            None,
            policy=Policy(maxConnectionsPerIP=1),
        )
        context = HandlerContext(reactor=clock, clock=clock, port=config)
        limit = DaemonLimit(maximum=10)
        factory = PortFactory(Broken(), PortCounters(), context, limit)
        for _ in range(3):
            self.assertIsNone(factory.buildProtocol(v4("192.0.2.7")))
        self.assertEqual(
            (
                limit.current,
                factory.admission.perAddress,
                factory.counters.protocolErrors,
            ),
            (0, {}, 3),
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)

    def test_infiniteRefused(self):
        """
        An infinite rate or timeout is a configuration error, not a crash.
        """
        error = self.assertRaises(
            ConfigError, parsePolicy, {"rate": {"per_second": float("inf")}}, "p"
        )
        self.assertEqual(error.where, "p.rate.per_second")
        self.assertRaises(ConfigError, parsePolicy, {"idle_timeout": float("inf")}, "p")

    def test_redirectOddTarget(self):
        """
        An absolute request target that doesn't parse redirects to /.
        """
        from twisted.web.test.requesthelper import DummyRequest

        from multiport.handlers.webresources import RedirectToHTTPS

        request = DummyRequest([b""])
        request.uri = b"http://[x/"
        self.assertEqual(
            RedirectToHTTPS("https://example.com").location(request),
            b"https://example.com/",
        )
