"""
Tests for UDP ports over real sockets on 127.0.0.1 and ::1: the
L{PortUDPServer} children, their wrapper (L{DatagramGate}) and the
built-in services over UDP.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from multiport.config.build import buildConfig
from multiport.config.model import Config, Defaults
from multiport.config.portspec import parsePorts
from multiport.daemon.service import PortsService
from multiport.errors import ConfigError, StartupError
from multiport.handlers.interface import HandlerContext
from multiport.handlers.registry import findHandlers
from multiport.ports.datagram import DatagramGate
from multiport.ports.datagramserver import PortUDPServer
from tests.support import HANDLERS, configFor, installPlugin, waitUntilOnReactor
from tests.test_live import freePort


class Client(DatagramProtocol):
    """
    A UDP client collecting what it gets.
    """

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.waiting: list[Deferred[bytes]] = []

    def datagramReceived(self, datagram, addr):
        self.received.append((datagram, addr))
        if self.waiting:
            self.waiting.pop(0).callback(datagram)

    def ask(self, datagram: bytes, addr, timeout: float = 10) -> Deferred[bytes]:
        """
        Send C{datagram}; the next datagram back.
        """
        answer: Deferred[bytes] = Deferred()
        self.waiting.append(answer)
        self.transport.write(datagram, addr)

        def forget(result):
            if answer in self.waiting:
                self.waiting.remove(answer)
            return result

        answer.addTimeout(timeout, reactor)
        answer.addErrback(forget)
        return answer


def startService(testCase, ports: str, config: Config | None = None) -> PortsService:
    """
    A started L{PortsService} for C{ports} on the real reactor, stopped at
    cleanup.
    """
    if config is None:
        config = configFor(ports, testCase.mktemp())
    service = PortsService(config, HANDLERS, {}, reactor)
    service.privilegedStartService()
    service.startService()
    testCase.addCleanup(service.stopService)
    return service


def addressOf(service: PortsService, index: int) -> tuple[str, int]:
    """
    The bound address of the service's C{index}th port.
    """
    port = service.ports()[index]
    host = port.boundAddress()
    return (port.config.interface, host.port)


def client(testCase, host: str = "127.0.0.1") -> Client:
    """
    A UDP client bound on C{host}, closed at cleanup.
    """
    protocol = Client()
    port = reactor.listenUDP(0, protocol, interface=host, maxPacketSize=65535)
    testCase.addCleanup(port.stopListening)
    return protocol


class BuiltinTests(TestCase):
    """
    Every built-in over UDP, on IPv4 and IPv6.
    """

    @inlineCallbacks
    def test_echo(self):
        """
        echo sends each datagram back as it came, on 127.0.0.1 and ::1.
        """
        service = startService(self, "127.0.0.1:0/udp=echo,[::1]:0/udp=echo")
        for index, host in enumerate(["127.0.0.1", "::1"]):
            answer = yield client(self, host).ask(b"hello", addressOf(service, index))
            self.assertEqual(answer, b"hello")
        self.assertTrue(service.ports()[0].name.startswith("udp:127.0.0.1:"))

    @inlineCallbacks
    def test_tcpAndUdpOnOneNumber(self):
        """
        A TCP and a UDP port can share a number.
        """
        # Below the ephemeral range: a number from it, free for UDP, may be
        # a concurrent test's TCP connection's.
        number = freePort()
        service = startService(
            self, f"127.0.0.1:{number}=echo,127.0.0.1:{number}/udp=echo"
        )
        self.assertEqual(
            [p.name for p in service.ports()],
            [f"tcp:127.0.0.1:{number}", f"udp:127.0.0.1:{number}"],
        )
        answer = yield client(self).ask(b"x", ("127.0.0.1", number))
        self.assertEqual(answer, b"x")

    @inlineCallbacks
    def test_daytime(self):
        """
        daytime answers any datagram with one line of the date.
        """
        service = startService(self, "[::1]:0/udp=daytime")
        answer = yield client(self, "::1").ask(b"", addressOf(service, 0))
        self.assertTrue(answer.endswith(b"-UTC\r\n"), answer)
        self.assertIn(time.strftime("%Y", time.gmtime()).encode(), answer)

    @inlineCallbacks
    def test_qotd(self):
        """
        qotd answers any datagram with the quote.
        """
        service = startService(self, "127.0.0.1:0/udp=qotd")
        answer = yield client(self).ask(b"?", addressOf(service, 0))
        self.assertIn(b"Alan Kay", answer)

    @inlineCallbacks
    def test_chargen(self):
        """
        chargen answers each datagram with one of 0 to 512 characters.
        """
        service = startService(self, "127.0.0.1:0/udp=chargen")
        asker = client(self)
        for _ in range(20):
            answer = yield asker.ask(b"", addressOf(service, 0))
            self.assertLessEqual(len(answer), 512)
            self.assertTrue(all(32 <= c < 127 or c in b"\r\n" for c in answer))

    @inlineCallbacks
    def test_discard(self):
        """
        discard answers nothing, and counts what it got; echo after it
        answers, so the discard datagram had its chance to come back.
        """
        service = startService(self, "127.0.0.1:0/udp=discard,127.0.0.1:0/udp=echo")
        asker = client(self)
        asker.transport.write(b"gone", addressOf(service, 0))
        yield asker.ask(b"back", addressOf(service, 1))
        yield waitUntilOnReactor(
            lambda: service.ports()[0].factory.counters.datagramsReceived == 1
        )
        self.assertEqual([d for d, _ in asker.received], [b"back"])

    @inlineCallbacks
    def test_counters(self):
        """
        A port counts datagrams and bytes both ways.
        """
        service = startService(self, "127.0.0.1:0/udp=echo")
        yield client(self).ask(b"12345", addressOf(service, 0))
        counters = service.ports()[0].factory.counters
        self.assertEqual(
            (
                counters.datagramsReceived,
                counters.bytesReceived,
                counters.datagramsSent,
                counters.bytesSent,
            ),
            (1, 5, 1, 5),
        )
        snapshot = service.portStatus()[0].counters
        self.assertEqual(snapshot["datagrams"]["received"], 1)


class ReflectionTests(TestCase):
    """
    A UDP port never answers source port 0, its own address or, for the
    small services, another small service's port.
    """

    def test_ownAddress(self):
        """
        A datagram claiming to come from the port itself is dropped.
        """
        service = startService(self, "127.0.0.1:0/udp=echo")
        gate = service.ports()[0].factory
        gate.datagramReceived(b"loop", addressOf(service, 0))
        self.assertEqual(gate.counters.dropped, {"reflection": 1})
        self.assertEqual(gate.counters.datagramsSent, 0)

    def test_sourcePortZero(self):
        """
        A datagram from source port 0 is dropped.
        """
        service = startService(self, "127.0.0.1:0/udp=echo")
        gate = service.ports()[0].factory
        gate.datagramReceived(b"x", ("127.0.0.1", 0))
        self.assertEqual(gate.counters.dropped, {"reflection": 1})

    def test_smallServicePorts(self):
        """
        echo never answers port 19 (chargen) or 7 (another echo).
        """
        service = startService(self, "127.0.0.1:0/udp=echo")
        gate = service.ports()[0].factory
        gate.datagramReceived(b"x", ("127.0.0.1", 19))
        gate.datagramReceived(b"x", ("127.0.0.1", 7))
        self.assertEqual(gate.counters.datagramsSent, 0)


class FuzzTests(SynchronousTestCase):
    """
    Any datagram at any built-in gets at most one answer within the RFC's
    size, and never an exception.
    """

    @settings(max_examples=200, deadline=None)
    @given(
        handler=st.sampled_from(["echo", "discard", "daytime", "qotd", "chargen"]),
        datagram=st.binary(max_size=2048),
        port=st.integers(min_value=0, max_value=65535),
    )
    def test_fuzz(self, handler, datagram, port):
        """
        One datagram in, at most one out, no larger than allowed.
        """
        (config,) = configFor(f"127.0.0.1:4000/udp={handler}", "/tmp/s").ports
        context = HandlerContext(reactor=reactor, clock=Clock(), port=config)
        inner = HANDLERS[handler].buildDatagramProtocol(context)
        gate = DatagramGate(inner, context)
        sent: list[tuple[bytes, tuple[str, int]]] = []

        class Socket:
            def write(self, data, addr):
                sent.append((data, addr))

            def getHost(self):
                from twisted.internet.address import IPv4Address

                return IPv4Address("UDP", "127.0.0.1", 4000)

        gate.transport = Socket()
        gate.startProtocol()
        gate.datagramReceived(datagram, ("127.0.0.1", port))
        self.assertLessEqual(len(sent), 1)
        self.assertEqual(gate.counters.protocolErrors, 0)
        for answer, addr in sent:
            self.assertNotEqual(addr[1], 0)
            limit = len(datagram) if handler == "echo" else 512
            self.assertLessEqual(len(answer), limit)
        if port in (0, 7, 9, 13, 17, 19, 4000) or handler == "discard":
            self.assertEqual(sent, [])


class ServerTests(SynchronousTestCase):
    """
    A UDP port is a L{PortUDPServer} child of the one service.
    """

    def test_child(self):
        """
        C{7/udp} makes a UDP server child beside the TCP one.
        """
        config = configFor("7=echo,7/udp=echo", self.mktemp())
        service = PortsService(config, HANDLERS, {}, reactor)
        children = list(service)
        self.assertNotIsInstance(children[0], PortUDPServer)
        self.assertIsInstance(children[1], PortUDPServer)


def readmeExample() -> str:
    """
    The game handler example of README.rst, as written there.
    """
    text = (Path(__file__).parent.parent / "README.rst").read_text()
    start = text.index("    # mygame/twisted/plugins/mygame_handler.py")
    end = text.index("Then ``twistd -n multiport --ports 27015/udp=mygame``")
    return "\n".join(line[4:] for line in text[start:end].splitlines())


class ThirdPartyTests(TestCase):
    """
    README's game handler, installed as a separate package, serves UDP.
    """

    @inlineCallbacks
    def test_readmeGameHandler(self):
        """
        The example is found, says it serves UDP, and answers over UDP.
        """
        installPlugin(self, "mygame_handler", readmeExample())
        handlers = findHandlers()
        self.assertEqual(handlers["mygame"].protocols, ("udp",))
        config = buildConfig(
            parsePorts("127.0.0.1:0/udp=mygame"),
            Defaults(),
            handlers,
            Path(self.mktemp()),
        )
        service = PortsService(config, handlers, {}, reactor)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        asker = client(self)
        address = addressOf(service, 0)
        self.assertEqual((yield asker.ask(b"PING 7", address)), b"PONG 7")
        self.assertEqual((yield asker.ask(b"JOIN ann", address)), b"WELCOME ann #1")
        error = self.assertRaises(
            ConfigError,
            buildConfig,
            parsePorts("7000=mygame"),
            Defaults(),
            handlers,
            Path("/tmp"),
        )
        self.assertIn("does not serve TCP", str(error))


class BindTests(TestCase):
    """
    How a UDP port binds.
    """

    def test_bothFamilies(self):
        """
        C{0.0.0.0:P/udp} and C{[::]:P/udp} are two ports (IPV6_V6ONLY).
        """
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            number = probe.getsockname()[1]
        service = startService(
            self, f"0.0.0.0:{number}/udp=echo,[::]:{number}/udp=echo"
        )
        self.assertEqual(
            [p.boundAddress().port for p in service.ports()], [number, number]
        )

    def test_inUse(self):
        """
        A UDP address in use stops the start with one clear error, and
        leaves nothing bound.
        """
        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        number = taken.getsockname()[1]
        config = configFor(
            f"127.0.0.1:0/udp=echo,127.0.0.1:{number}/udp=echo", "/tmp/s"
        )
        service = PortsService(config, HANDLERS, {}, reactor)
        error = self.assertRaises(StartupError, service.privilegedStartService)
        self.assertIn(f"127.0.0.1:{number}", str(error))
        self.assertIn("in use", str(error))
        self.assertIsNone(service.ports()[0].boundAddress())


#: A plugin claiming UDP without the datagram interface.
BAD_UDP_PLUGIN = """
from twisted.plugin import IPlugin
from zope.interface import implementer
from multiport.handlers import IHandler

@implementer(IPlugin, IHandler)
class Bad:
    name = "badudp"
    description = "claims UDP"
    impliesTLS = False
    protocols = ("udp",)
    def parseOptions(self, options, relativeTo):
        return None
    def buildFactory(self, context):
        raise NotImplementedError

bad = Bad()
"""


class RegistryTests(TestCase):
    """
    The registry checks what a handler says it serves.
    """

    def test_udpWithoutInterface(self):
        """
        A plugin that says it serves UDP without providing
        L{IDatagramHandler} is ignored.
        """
        installPlugin(self, "badudp_handler", BAD_UDP_PLUGIN)
        self.assertNotIn("badudp", findHandlers())
        self.flushLoggedErrors()
