"""
Tests for L{multiport.daemon.service}: the service tree of ports.
"""

from __future__ import annotations

import errno
import gc
import socket

from twisted.application.internet import SSLServer, TCPServer
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from multiport.config.model import Config, TLSConfig
from multiport.daemon.service import PortsService
from multiport.daemon.startup import describeListenError, noCollections
from multiport.errors import StartupError
from multiport.handlers.interface import IDaemonView
from multiport.ports.factory import PortFactory
from multiport.ports.sockets import ListeningPort
from multiport.ports.tls import ensureSelfSigned
from tests.support import HANDLERS, busyPort, configFor
from tests.test_live import freePort


class RefusingReactor(MemoryReactorClock):
    """
    A memory reactor on which listening on one port number fails.
    """

    def __init__(self, port: int, code: int) -> None:
        super().__init__()
        self.refused = port
        self.code = code

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if port == self.refused:
            raise CannotListenError(interface, port, OSError(self.code, "refused"))
        return super().listenTCP(port, factory, backlog, interface)


def serviceFor(testCase, ports: str, reactor) -> PortsService:
    """
    A L{PortsService} for a C{--ports} value, its TLS ports self-signed.
    """
    stateDir = testCase.mktemp()
    config = configFor(ports, stateDir)
    loaded = ensureSelfSigned(config.stateDir)
    return PortsService(config, HANDLERS, {TLSConfig(): loaded}, reactor)


class ServiceTreeTests(SynchronousTestCase):
    """
    The service has exactly one TCPServer or SSLServer child per port.
    """

    def test_oneChildPerPort(self):
        """
        Plain ports become TCPServer children, TLS ports SSLServer children.
        """
        service = serviceFor(self, "8080,8443,7000=echo+tls", MemoryReactorClock())
        children = list(service)
        self.assertEqual(len(children), 3)
        self.assertIsInstance(children[0], TCPServer)
        self.assertNotIsInstance(children[0], SSLServer)
        self.assertIsInstance(children[1], SSLServer)
        self.assertIsInstance(children[2], SSLServer)

    def test_listensWithBacklogAndInterface(self):
        """
        Each port listens with its own backlog and interface.
        """
        memory = MemoryReactorClock()
        service = serviceFor(self, "127.0.0.1:8080=http,[::1]:7000=echo", memory)
        service.privilegedStartService()
        self.assertEqual(
            [
                (port, backlog, interface)
                for port, _, backlog, interface in memory.tcpServers
            ],
            [(8080, 511, "127.0.0.1"), (7000, 511, "::1")],
        )

    def test_tlsPortsListenWithTheirContext(self):
        """
        A TLS port listens through listenSSL with its certificate's context.
        """
        memory = MemoryReactorClock()
        service = serviceFor(self, "127.0.0.1:8443", memory)
        service.privilegedStartService()
        [(port, factory, context, backlog, interface)] = memory.sslServers
        self.assertEqual((port, interface), (8443, "127.0.0.1"))
        self.assertIsInstance(factory, PortFactory)
        self.assertIs(context, list(service)[0].contextFactory)

    def test_eachPortHasItsOwnFactory(self):
        """
        Two ports with the same handler get two factories.
        """
        service = serviceFor(
            self, "127.0.0.1:7000=echo,127.0.0.1:7001=echo", MemoryReactorClock()
        )
        first, second = service
        self.assertIsNot(first.factory, second.factory)
        self.assertIsNot(first.factory.wrappedFactory, second.factory.wrappedFactory)

    def test_namedOnceBound(self):
        """
        Children are named tcp:HOST:PORT, IPv6 hosts bracketed.
        """
        service = serviceFor(
            self, "127.0.0.1:8080=http,[::1]:7000=echo", MemoryReactorClock()
        )
        service.startService()
        self.assertEqual(
            sorted(service.namedServices), ["tcp:127.0.0.1:8080", "tcp:[::1]:7000"]
        )
        self.assertIs(service.getServiceNamed("tcp:[::1]:7000"), list(service)[1])

    def test_boundPorts(self):
        """
        boundPorts reports each listening port with its address.
        """
        service = serviceFor(self, "127.0.0.1:8080=http", MemoryReactorClock())
        self.assertEqual(service.boundPorts(), [])
        service.startService()
        [bound] = service.boundPorts()
        self.assertEqual(bound.name, "tcp:127.0.0.1:8080")
        self.assertEqual(bound.address.port, 8080)
        self.assertEqual(bound.config.handler, "http")

    def test_logsEachPort(self):
        """
        Starting and stopping log one line per port.
        """
        service = serviceFor(self, "127.0.0.1:8443=https", MemoryReactorClock())
        with capturedLogs() as events:
            service.startService()
            self.successResultOf(service.stopService())
        lines = [
            e["log_format"].format(**e)
            for e in events
            if e.get("log_namespace") == "multiport.daemon.service"
        ]
        self.assertEqual(
            lines,
            [
                "listening on tcp:127.0.0.1:8443: handler https, TLS self-signed, "
                "backlog 511",
                "stopped listening on tcp:127.0.0.1:8443",
            ],
        )

    def test_logsUDPPortWithoutBacklog(self):
        """
        A UDP port's line names its handler only: a UDP socket has no
        listen backlog and no TLS.
        """
        service = serviceFor(self, "127.0.0.1:0/udp=echo", MemoryReactorClock())
        with capturedLogs() as events:
            service.startService()
        self.addCleanup(service.stopService)
        lines = [
            e["log_format"].format(**e)
            for e in events
            if e.get("log_namespace") == "multiport.daemon.service"
        ]
        self.assertEqual(lines, ["listening on udp:127.0.0.1:1234: handler echo"])

    def test_stopStopsEveryPort(self):
        """
        After stopService no port reports as bound.
        """
        service = serviceFor(
            self, "127.0.0.1:7000=echo,127.0.0.1:7001=echo", MemoryReactorClock()
        )
        service.startService()
        self.successResultOf(service.stopService())
        self.assertEqual(service.boundPorts(), [])
        self.assertFalse(service.running)


class StartupFailureTests(SynchronousTestCase):
    """
    A port that can't bind stops the start, leaves nothing bound and says why.
    """

    def test_inUse(self):
        """
        An address in use is named with its port and reason.
        """
        service = serviceFor(
            self,
            "127.0.0.1:7000=echo,127.0.0.1:7001=echo",
            RefusingReactor(7001, errno.EADDRINUSE),
        )
        error = self.assertRaises(StartupError, service.privilegedStartService)
        self.assertEqual(
            str(error),
            "cannot listen on 127.0.0.1:7001: address already in use (another "
            "process, or another port here) [--ports item 2 '127.0.0.1:7001=echo']",
        )

    def test_permissionDenied(self):
        """
        Permission denied below 1024 says how to run as root or move the port.
        """
        service = serviceFor(self, "127.0.0.1:80", RefusingReactor(80, errno.EACCES))
        error = self.assertRaises(StartupError, service.privilegedStartService)
        self.assertIn("cannot listen on 127.0.0.1:80: permission denied", str(error))
        self.assertIn("port 80 is below 1024", str(error))
        self.assertIn("--uid", str(error))
        self.assertIn("1024 or more", str(error))

    def test_addressNotAvailable(self):
        """
        An address the machine does not have is named.
        """
        config = configFor("192.0.2.1:7000=echo", self.mktemp())
        error = CannotListenError(
            "192.0.2.1", 7000, OSError(errno.EADDRNOTAVAIL, "not available")
        )
        self.assertEqual(
            describeListenError(config.ports[0], error),
            "cannot listen on 192.0.2.1:7000: address 192.0.2.1 is not on this "
            "machine [--ports item 1 '192.0.2.1:7000=echo']",
        )

    def test_nothingLeftBound(self):
        """
        Ports bound before the failing one are closed at once.
        """
        busy = busyPort(self)
        service = serviceFor(self, f"127.0.0.1:0=echo,127.0.0.1:{busy}=echo", reactor)
        first = list(service)[0]
        with capturedLogs() as events:
            self.assertRaises(StartupError, service.privilegedStartService)
        bound, closed = [e["name"] for e in events if "name" in e]
        self.assertEqual(closed, bound)
        self.assertIn(
            f"closed {bound}: the start failed", [formatEvent(e) for e in events]
        )
        self.assertIsNone(first.boundAddress())
        self.assertNotIn(bound, service.namedServices)
        # The port the first child had is free again.
        probe = socket.socket()
        self.addCleanup(probe.close)
        probe.bind(("127.0.0.1", int(bound.rsplit(":", 1)[1])))


class RealPortTests(TestCase):
    """
    Ports on the real reactor.
    """

    def test_portZeroNamedWithItsNumber(self):
        """
        A port 0 is named with the number it got.
        """
        service = PortsService(
            configFor("127.0.0.1:0=echo", self.mktemp()), HANDLERS, {}, reactor
        )
        service.startService()
        self.addCleanup(service.stopService)
        [bound] = service.boundPorts()
        self.assertNotEqual(bound.address.port, 0)
        self.assertEqual(bound.name, f"tcp:127.0.0.1:{bound.address.port}")
        self.assertIs(service.getServiceNamed(bound.name), list(service)[0])

    def test_ipv6WildcardIsIPv6Only(self):
        """
        [::]:P and 0.0.0.0:P listen side by side (IPV6_V6ONLY is set).
        """
        free = freePort()
        config = configFor(f"[::]:{free}=echo,0.0.0.0:{free}=discard", self.mktemp())
        service = PortsService(config, HANDLERS, {}, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(len(service.boundPorts()), 2)
        v6 = list(service)[0]._port
        self.assertIsInstance(v6, ListeningPort)
        self.assertEqual(
            v6.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY), 1
        )

    def test_tlsWrapperInsideTLS(self):
        """
        On a real reactor a TLS port listens with TLS outermost and the
        port's wrapper inside it.
        """
        service = serviceFor(self, "127.0.0.1:0=echo+tls", reactor)
        service.startService()
        self.addCleanup(service.stopService)
        [child] = service
        self.assertIsInstance(child._port.factory, TLSMemoryBIOFactory)
        self.assertIs(child._port.factory.wrappedFactory, child.factory)


class ConfigTypeTests(SynchronousTestCase):
    """
    The service keeps the model it was built from.
    """

    def test_keepsConfig(self):
        """
        The service's config is the model passed in.
        """
        config = configFor("127.0.0.1:7000=echo", self.mktemp())
        service = PortsService(config, HANDLERS, {}, MemoryReactorClock())
        self.assertIsInstance(service.config, Config)
        self.assertIs(service.config, config)


class DaemonViewTests(SynchronousTestCase):
    """
    The service is the read-only view of the daemon handlers get.
    """

    def test_providesView(self):
        """
        PortsService provides IDaemonView, and every handler context has it.
        """
        service = serviceFor(self, "127.0.0.1:7000=echo", MemoryReactorClock())
        verifyObject(IDaemonView, service)
        self.assertIs(list(service)[0].factory.handlerContext.daemon, service)

    def test_portStatus(self):
        """
        portStatus lists every configured port, listening or not, with its
        counters and, for TLS ports, the certificate's expiry.
        """
        service = serviceFor(
            self, "127.0.0.1:7000=echo,127.0.0.1:7443=echo+tls", MemoryReactorClock()
        )
        before = service.portStatus()
        self.assertEqual([s.listening for s in before], [False, False])
        service.startService()
        plain, tls = service.portStatus()
        self.assertEqual((plain.name, plain.listening), ("tcp:127.0.0.1:7000", True))
        self.assertEqual(
            plain.counters["connections"],
            {"current": 0, "accepted": 0, "closed": 0, "rejected": 0},
        )
        self.assertIsNone(plain.certificateExpiry)
        expiry = service._certificates[TLSConfig()].notAfter.timestamp()
        self.assertEqual(tls.certificateExpiry, expiry)


class ListeningSinceTests(SynchronousTestCase):
    """
    A port stopped on its own no longer reports when it started listening.
    """

    def test_childStopped(self):
        """
        Stopping one port's service clears its listening_since.
        """
        service = serviceFor(self, "127.0.0.1:7000=echo", MemoryReactorClock())
        service.startService()
        [port] = service.ports()
        self.assertIsNotNone(port.factory.counters.listeningSince)
        port.stopService()
        [status] = service.portStatus()
        self.assertEqual(
            (status.listening, status.counters["listening_since"]), (False, None)
        )


class NoCollectionsTests(SynchronousTestCase):
    """
    Start-up runs without the cyclic garbage collector.
    """

    def test_offInside(self):
        """
        Off within the block, on again after, even when it raises.
        """
        self.assertTrue(gc.isenabled())
        with noCollections():
            self.assertFalse(gc.isenabled())
        self.assertTrue(gc.isenabled())
        with self.assertRaises(ValueError), noCollections():
            raise ValueError()
        self.assertTrue(gc.isenabled())

    def test_leftOff(self):
        """
        If it was off, it stays off.
        """
        gc.disable()
        self.addCleanup(gc.enable)
        with noCollections():
            pass
        self.assertFalse(gc.isenabled())

    def test_binding(self):
        """
        The ports bind with the collector off.
        """
        reactor = MemoryReactorClock()
        seen = []
        listen = reactor.listenTCP

        def listenTCP(*args, **kwargs):
            seen.append(gc.isenabled())
            return listen(*args, **kwargs)

        reactor.listenTCP = listenTCP
        config = configFor("127.0.0.1:7000=echo", self.mktemp())
        service = PortsService(config, HANDLERS, {}, reactor)
        service.privilegedStartService()
        self.assertEqual(seen, [False])
        self.assertTrue(gc.isenabled())
