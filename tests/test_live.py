"""
Tests for live changes: planning a new configuration against the running
ports, and applying it (bind first, all or nothing, drain what goes).
"""

from __future__ import annotations

import random
import signal
import socket
from pathlib import Path

from attrs import evolve
from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from multiport.config.model import Config, Defaults, TLSConfig
from multiport.daemon.plan import Plan, overlaps
from multiport.daemon.service import PortsService
from multiport.errors import ConfigError, ReconcileError
from multiport.ports.certificates import loadCertificates
from multiport.ports.policies import Policy
from multiport.ports.tls import ensureSelfSigned
from tests.support import HANDLERS, busyPort, configFor, waitUntilOnReactor


def _ephemeralLow() -> int:
    """
    The lowest port number the kernel gives outgoing connections.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def freePort(kind: int = socket.SOCK_STREAM) -> int:
    """
    A TCP port number (a UDP one for C{kind} C{SOCK_DGRAM}) nothing uses
    right now, on any IPv4 or IPv6 address.

    It is taken below the kernel's ephemeral range: a number from that
    range (what binding port 0 gives) can be taken at any moment by a
    concurrent test's outgoing connection, and then a test that binds it
    again (another address, a move) fails with "address in use".  The
    suite's load tests open thousands of connections a second, so that
    happened in CI.
    """
    low = _ephemeralLow()
    chooser = random.Random()
    for _ in range(200):
        number = chooser.randrange(10000, low)
        probes = [
            socket.socket(socket.AF_INET, kind),
            socket.socket(socket.AF_INET6, kind),
        ]
        try:
            probes[1].setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probes[0].bind(("0.0.0.0", number))
            probes[1].bind(("::", number))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return number
    raise RuntimeError(f"no free port from 10000 to {low} in 200 tries")


class PlanTests(SynchronousTestCase):
    """
    L{PortsService.plan} sorts the new configuration's ports into added,
    removed, changed and unchanged.
    """

    def setUp(self) -> None:
        self.stateDir = self.mktemp()
        self.service = PortsService(
            configFor("7001=echo,7002=discard,7003=echo,0=echo", self.stateDir),
            HANDLERS,
            {},
            MemoryReactorClock(),
        )

    def plan(self, ports: str) -> Plan:
        return self.service.plan(configFor(ports, self.stateDir), {})

    def names(self, servers) -> list[str]:
        return [s.config.name for s in servers]

    def test_sorted(self):
        """
        Same address and settings: unchanged; same address, new handler:
        changed; new address: added; gone: removed.
        """
        plan = self.plan("7001=echo,7002=echo,7004=echo,0=echo")
        self.assertEqual(
            self.names(plan.unchanged), ["tcp:0.0.0.0:7001", "tcp:0.0.0.0:0"]
        )
        self.assertEqual(
            [(s.config.name, c.handler) for s, c in plan.change],
            [("tcp:0.0.0.0:7002", "echo")],
        )
        self.assertEqual([c.name for c in plan.add], ["tcp:0.0.0.0:7004"])
        self.assertEqual(self.names(plan.remove), ["tcp:0.0.0.0:7003"])

    def test_whereIgnored(self):
        """
        A port that only moved in the file is unchanged.
        """
        plan = self.plan("7003=echo,0=echo,7002=discard,7001=echo")
        self.assertEqual(len(plan.unchanged), 4)
        self.assertEqual((plan.add, plan.remove, plan.change), ((), (), ()))

    def test_portZero(self):
        """
        Port 0 entries match running ones by their whole configuration.
        """
        plan = self.plan("7001=echo,7002=discard,7003=echo,0=discard")
        self.assertEqual([c.name for c in plan.add], ["tcp:0.0.0.0:0"])
        self.assertEqual(self.names(plan.remove), ["tcp:0.0.0.0:0"])

    def test_summary(self):
        """
        The summary names what each part touches.
        """
        self.assertEqual(
            self.plan("7001=echo,7002=echo,7004=echo").summary(),
            {
                "added": ["tcp:0.0.0.0:7004"],
                "removed": [None, None],
                "changed": [None],
                "unchanged": 1,
            },
        )

    def test_overlaps(self):
        """
        Same number and family, and the same address or a wildcard.
        """
        wild, one, two, six, other, zero, zero2 = (
            configFor(item, self.stateDir).ports[0]
            for item in (
                "0.0.0.0:80=echo",
                "127.0.0.1:80=echo",
                "127.0.0.2:80=echo",
                "[::]:80=echo",
                "127.0.0.1:81=echo",
                "0=echo",
                "0.0.0.0:0=echo",
            )
        )
        self.assertTrue(overlaps(wild, one))
        self.assertTrue(overlaps(one, wild))
        self.assertTrue(overlaps(one, one))
        self.assertFalse(overlaps(one, two))
        self.assertFalse(overlaps(wild, six))
        self.assertFalse(overlaps(one, other))
        self.assertFalse(overlaps(zero, zero2))


class Holder(Protocol):
    """
    A client that keeps what it receives and fires C{lost} when closed.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason=None) -> None:
        self.lost.callback(None)


class LiveTests(TestCase):
    """
    Live changes on the real reactor, on 127.0.0.1.
    """

    def start(self, ports: str) -> PortsService:
        self.stateDir = self.mktemp()
        config = configFor(ports, self.stateDir)
        self.certificates = {TLSConfig(): ensureSelfSigned(config.stateDir)}
        service = PortsService(config, HANDLERS, self.certificates, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def config(self, ports: str, **policy) -> Config:
        if not ports:
            return Config((), configFor("0=echo", self.stateDir).stateDir)
        config = configFor(ports, self.stateDir)
        if policy:
            config = Config(
                tuple(evolve(p, policy=Policy(**policy)) for p in config.ports),
                config.stateDir,
            )
        return config

    def apply(self, service: PortsService, config: Config) -> Plan:
        plan = service.plan(config, self.certificates)
        service.apply(plan, self.certificates)
        return plan

    @inlineCallbacks
    def connect(self, port: int):
        client = Holder()
        protocol = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: client)
        )
        self.addCleanup(lambda: protocol.transport.abortConnection())
        return client

    @inlineCallbacks
    def echoes(self, client: Holder, data: bytes):
        before = len(client.received)
        client.transport.write(data)
        yield waitUntilOnReactor(lambda: len(client.received) >= before + len(data))
        self.assertEqual(client.received[before:], data)

    @inlineCallbacks
    def test_addLeavesOthersAlone(self):
        """
        A port added while running listens; a connection to an existing port
        carries on, on the same listening socket.
        """
        a, b = freePort(), freePort()
        service = self.start(f"127.0.0.1:{a}=echo")
        listening = service.ports()[0]._port
        client = yield self.connect(a)
        plan = self.apply(
            service, self.config(f"127.0.0.1:{a}=echo,127.0.0.1:{b}=echo")
        )
        self.assertEqual(plan.summary()["added"], [f"tcp:127.0.0.1:{b}"])
        self.assertIs(service.ports()[0]._port, listening)
        yield self.echoes(client, b"still here")
        other = yield self.connect(b)
        yield self.echoes(other, b"new port")
        self.assertEqual(
            [p.name for p in service.boundPorts()],
            [f"tcp:127.0.0.1:{a}", f"tcp:127.0.0.1:{b}"],
        )
        self.assertIn(f"tcp:127.0.0.1:{b}", service.namedServices)

    @inlineCallbacks
    def test_removeDrains(self):
        """
        A removed port refuses new connections at once; its open ones go on
        until they close, its counters visible (draining) until then.
        """
        a, b = freePort(), freePort()
        service = self.start(f"127.0.0.1:{a}=echo,127.0.0.1:{b}=echo")
        client = yield self.connect(b)
        self.apply(service, self.config(f"127.0.0.1:{a}=echo"))
        yield self.assertFailure(self.connect(b), ConnectionRefusedError)
        yield self.echoes(client, b"draining")
        [status] = [s for s in service.portStatus() if s.draining]
        self.assertEqual(status.name, f"tcp:127.0.0.1:{b}")
        self.assertFalse(status.listening)
        self.assertEqual(status.counters["connections"]["current"], 1)
        client.transport.loseConnection()
        yield client.lost
        yield waitUntilOnReactor(lambda: not service.draining)
        self.assertEqual([s.name for s in service.portStatus()], [f"tcp:127.0.0.1:{a}"])

    @inlineCallbacks
    def test_drainTimeout(self):
        """
        Connections still open after the port's drain timeout are closed:
        served until then, closed by the daemon soon after it.
        """
        timeout = 0.5
        a = freePort()
        service = self.start(f"127.0.0.1:{a}=echo")
        self.apply(service, self.config(f"127.0.0.1:{a}=echo", drainTimeout=timeout))
        client = yield self.connect(a)
        with capturedLogs() as events:
            removed = reactor.seconds()
            self.apply(service, self.config(""))
            client.transport.write(b"draining")
            yield waitUntilOnReactor(
                lambda: client.received == b"draining" or client.lost.called
            )
            self.assertEqual(client.received, b"draining")
            self.assertFalse(client.lost.called, "closed before the drain timeout")
            # Far below the default drain timeout (30 s), far above this one.
            yield waitUntilOnReactor(
                lambda: client.lost.called,
                5,
                what=f"the drain timeout ({timeout} s) to close the connection",
            )
            elapsed = reactor.seconds() - removed
            yield waitUntilOnReactor(lambda: not service.draining)
        self.assertGreaterEqual(elapsed, timeout)
        [closed] = [e for e in events if e.get("reason") is not None]
        self.assertEqual(closed["reason"], "drain")

    @inlineCallbacks
    def test_changeInPlace(self):
        """
        A new handler at the same address: the socket stays, new
        connections get the new handler, open ones keep the old, counters
        go on.
        """
        a = freePort()
        service = self.start(f"127.0.0.1:{a}=echo")
        server = service.ports()[0]
        listening = server._port
        old = yield self.connect(a)
        yield self.echoes(old, b"echo")
        plan = self.apply(service, self.config(f"127.0.0.1:{a}=qotd"))
        self.assertEqual(plan.summary()["changed"], [f"tcp:127.0.0.1:{a}"])
        [now] = service.ports()
        self.assertIsNot(now, server)
        self.assertIs(now._port, listening)
        self.assertEqual(now.config.handler, "qotd")
        self.assertIs(service.namedServices[f"tcp:127.0.0.1:{a}"], now)
        yield self.echoes(old, b"still echo")
        new = yield self.connect(a)
        yield new.lost
        self.assertTrue(new.received)
        self.assertEqual(now.factory.counters.accepted, 2)

    @inlineCallbacks
    def test_plainToTLS(self):
        """
        TLS switched on at the same address keeps the socket; the service
        child becomes an SSLServer.
        """
        from twisted.application.internet import SSLServer
        from twisted.internet.endpoints import wrapClientTLS
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        a = freePort()
        service = self.start(f"127.0.0.1:{a}=echo")
        listening = service.ports()[0]._port
        self.apply(service, self.config(f"127.0.0.1:{a}=echo+tls"))
        [now] = service.ports()
        self.assertIsInstance(now, SSLServer)
        self.assertIs(now._port, listening)
        trust = Certificate.loadPEM(
            (service.config.stateDir / "selfsigned-cert.pem").read_bytes()
        )
        endpoint = wrapClientTLS(
            optionsForClientTLS("localhost", trust),
            TCP4ClientEndpoint(reactor, "127.0.0.1", a),
        )
        client = Holder()
        protocol = yield endpoint.connect(Factory.forProtocol(lambda: client))
        self.addCleanup(protocol.transport.abortConnection)
        yield self.echoes(client, b"over TLS now")

    @inlineCallbacks
    def test_bindFailureChangesNothing(self):
        """
        If one new port can't bind, the others this step bound are closed
        again, removed ones keep listening, and the configuration stays.
        """
        a, b = freePort(), freePort()
        busy = busyPort(self)
        service = self.start(f"127.0.0.1:{a}=echo")
        before = service.config
        config = self.config(f"127.0.0.1:{b}=echo,127.0.0.1:{busy}=echo")
        error = self.assertRaises(
            ReconcileError, service.apply, service.plan(config, {}), {}
        )
        self.assertTrue(error.conflict)
        self.assertIn(f"127.0.0.1:{busy}", error.message)
        self.assertEqual(service.config, before)
        yield self.assertFailure(self.connect(b), ConnectionRefusedError)
        client = yield self.connect(a)
        yield self.echoes(client, b"untouched")

    @inlineCallbacks
    def test_move(self):
        """
        Moving 0.0.0.0:P to 127.0.0.1:P closes the old socket first, then
        binds the new one.
        """
        a = freePort()
        service = self.start(f"0.0.0.0:{a}=echo")
        self.apply(service, self.config(f"127.0.0.1:{a}=echo"))
        self.assertEqual([p.name for p in service.boundPorts()], [f"tcp:127.0.0.1:{a}"])
        client = yield self.connect(a)
        yield self.echoes(client, b"moved")

    @inlineCallbacks
    def test_moveFails(self):
        """
        If the moved port can't bind, the old one is bound again.
        """
        a = freePort()
        service = self.start(f"0.0.0.0:{a}=echo")
        config = self.config(f"192.0.2.1:{a}=echo")
        self.assertRaises(ReconcileError, service.apply, service.plan(config, {}), {})
        self.assertEqual([p.name for p in service.boundPorts()], [f"tcp:0.0.0.0:{a}"])
        client = yield self.connect(a)
        yield self.echoes(client, b"back")

    @inlineCallbacks
    def test_stopDrains(self):
        """
        Stopping the service waits for open connections to close.
        """
        a = freePort()
        service = self.start(f"127.0.0.1:{a}=echo")
        client = yield self.connect(a)
        stopped = service.stopService()
        self.assertNoResult(stopped)
        yield self.echoes(client, b"finishing")
        client.transport.loseConnection()
        yield stopped

    @inlineCallbacks
    def test_hurryClosesAtOnce(self):
        """
        While stopping, hurry closes the open connections at once, whatever
        the drain timeout, and the stop completes.
        """
        a = freePort()
        service = self.start(f"127.0.0.1:{a}=echo")
        self.apply(service, self.config(f"127.0.0.1:{a}=echo", drainTimeout=600.0))
        client = yield self.connect(a)
        yield self.echoes(client, b"open")
        stopped = service.stopService()
        self.assertNoResult(stopped)
        with capturedLogs() as events:
            self.assertEqual(service.hurry(signal.SIGINT), 1)
        yield client.lost
        yield stopped
        self.assertIn(
            "SIGINT again: closing 1 open connection now, without waiting for the "
            "drain",
            [formatEvent(e) for e in events],
        )


class CertificateTests(TestCase):
    """
    A renewed certificate file is a change: new connections get it, on the
    same socket; an unreadable one changes nothing.
    """

    def setUp(self) -> None:
        import datetime

        from multiport.ports.tls import makeSelfSigned

        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir(parents=True)
        self.cert = self.folder / "cert.pem"
        self.key = self.folder / "key.pem"
        self.make = lambda: makeSelfSigned(
            datetime.datetime.now(datetime.UTC), "localhost"
        )
        self.writePair(*self.make())
        self.port = freePort()
        self.stateDir = self.folder / "state"
        self.service = PortsService(
            self.config(), HANDLERS, self.certificates(), reactor
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def writePair(self, cert: bytes, key: bytes) -> None:
        self.cert.write_bytes(cert)
        self.key.write_bytes(key)

    def config(self) -> Config:
        defaults = Defaults(tls=TLSConfig(cert=self.cert, key=self.key))
        return configFor(f"127.0.0.1:{self.port}=echo+tls", self.stateDir, defaults)

    def certificates(self):
        return loadCertificates(self.config().ports, self.stateDir)

    @inlineCallbacks
    def served(self) -> bytes:
        """
        The DER of the certificate a new connection is served.
        """
        from twisted.internet.endpoints import wrapClientTLS
        from twisted.internet.ssl import CertificateOptions

        client = Holder()
        endpoint = wrapClientTLS(
            CertificateOptions(verify=False),
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.port),
        )
        protocol = yield endpoint.connect(Factory.forProtocol(lambda: client))
        protocol.transport.write(b"x")
        yield waitUntilOnReactor(lambda: client.received == b"x")
        der = (
            protocol.transport.getPeerCertificate()
            .to_cryptography()
            .public_bytes(serialization.Encoding.DER)
        )
        protocol.transport.loseConnection()
        yield client.lost
        return der

    @inlineCallbacks
    def test_renewed(self):
        """
        Reloading after the files were replaced changes the port in place.
        """
        from cryptography import x509

        before = yield self.served()
        listening = self.service.ports()[0]._port
        cert, key = self.make()
        self.writePair(cert, key)
        plan = self.service.plan(self.config(), self.certificates())
        self.assertEqual(len(plan.change), 1)
        self.service.apply(plan, self.certificates())
        after = yield self.served()
        self.assertNotEqual(before, after)
        self.assertEqual(
            after,
            x509.load_pem_x509_certificate(cert).public_bytes(
                serialization.Encoding.DER
            ),
        )
        self.assertIs(self.service.ports()[0]._port, listening)
        self.assertEqual(
            self.service.plan(self.config(), self.certificates()).change, ()
        )

    @inlineCallbacks
    def test_missingOrHalfWritten(self):
        """
        A reload that meets a missing or half-written certificate file
        fails naming it, and the port keeps its certificate.
        """
        before = yield self.served()
        self.service.rebuild = self.config
        self.cert.unlink()
        error = self.failureResultOf(self.service.reload(), ConfigError).value
        self.assertIn(str(self.cert), str(error))
        cert, key = self.make()
        self.writePair(cert[: len(cert) // 2], key)
        error = self.failureResultOf(self.service.reload(), ConfigError).value
        self.assertIn(str(self.cert), str(error))
        after = yield self.served()
        self.assertEqual(before, after)


class DaemonLimitTests(SynchronousTestCase):
    """
    The daemon-wide limit's fair share follows the number of ports.
    """

    def test_followsPorts(self):
        from multiport.ports.admission import DaemonLimit

        stateDir = self.mktemp()
        limit = DaemonLimit(maximum=100, ports=1)
        service = PortsService(
            configFor("7001=echo", stateDir), HANDLERS, {}, MemoryReactorClock(), limit
        )
        service.startService()
        service.apply(
            service.plan(configFor("7001=echo,7002=echo,7003=echo", stateDir), {})
        )
        self.assertEqual(limit.ports, 3)
        service.apply(service.plan(configFor("7003=echo", stateDir), {}))
        self.assertEqual(limit.ports, 1)

    def test_pipePoolFromLimit(self):
        """
        The daemon's splice pipe pool is sized from its limit, takes its
        descriptors from it, and reaches every port's handler.
        """
        from multiport.config.build import buildConfig
        from multiport.config.portspec import parsePorts
        from multiport.ports.admission import DaemonLimit

        limit = DaemonLimit(maximum=800, ports=2)
        echo, relay = parsePorts("7001=echo,7002=relay")
        relay = evolve(relay, options={"upstream": "127.0.0.1:1"})
        service = PortsService(
            buildConfig([echo, relay], Defaults(), HANDLERS, Path(self.mktemp())),
            HANDLERS,
            {},
            MemoryReactorClock(),
            limit,
        )
        pool = service.pipes
        self.assertEqual((pool.maximum, pool.limit, limit.spare), (100, limit, pool))
        contexts = [port.factory.handlerContext for port in service.ports()]
        self.assertEqual([c.pipes for c in contexts], [pool, pool])
        self.assertIs(service.ports()[1].factory.wrappedFactory.pipes, pool)
        self.assertEqual([p.factory.descriptors for p in service.ports()], [1, 2])
