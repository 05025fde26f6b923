"""
UDP ports changed while running: added, changed (the socket kept) and
removed through the admin control and a reload.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase

from multiport.config.build import buildConfig
from multiport.config.model import Defaults
from multiport.config.portspec import parsePorts
from multiport.daemon.service import PortsService
from multiport.errors import ConfigError
from tests.support import HANDLERS
from tests.test_udpports import client


def liveService(testCase, ports: str, rebuild=None) -> PortsService:
    """
    A started service for C{ports}, able to reload with C{rebuild}.
    """
    config = buildConfig(
        parsePorts(ports), Defaults(), HANDLERS, Path(testCase.mktemp())
    )
    service = PortsService(config, HANDLERS, {}, reactor, rebuild=rebuild)
    service.startService()
    testCase.addCleanup(service.stopService)
    return service


class LiveTests(TestCase):
    """
    Live changes of UDP ports.
    """

    @inlineCallbacks
    def test_addChangeRemove(self):
        """
        A UDP port added through the control answers; changed from echo to
        qotd it keeps its socket and counters; removed it closes.
        """
        service = liveService(self, "127.0.0.1:0=echo")
        ref = yield service.addPort(
            {"port": 0, "interface": "127.0.0.1", "protocol": "udp", "handler": "echo"}
        )
        self.assertTrue(ref.name.startswith("udp:127.0.0.1:"))
        address = ("127.0.0.1", ref.port)
        asker = client(self)
        self.assertEqual((yield asker.ask(b"hi", address)), b"hi")
        [before] = [p for p in service.ports() if p.name == ref.name]
        socketBefore = before._port
        with capturedLogs() as events:
            yield service.changePort(ref.name, {"handler": "qotd"})
        self.assertIn(
            f"changed {ref.name}: handler qotd",
            [e["log_format"].format(**e) for e in events if "log_format" in e],
        )
        [after] = [p for p in service.ports() if p.name == ref.name]
        self.assertIs(after._port, socketBefore)
        answer = yield asker.ask(b"?", address)
        self.assertIn(b"Alan Kay", answer)
        self.assertEqual(after.factory.counters.datagramsReceived, 2)
        yield service.removePort(ref.name)
        self.assertEqual([p.config.protocol for p in service.ports()], ["tcp"])

    @inlineCallbacks
    def test_changeProtocolRefused(self):
        """
        A change can't turn a UDP port into a TCP one.
        """
        service = liveService(self, "127.0.0.1:0/udp=echo")
        name = service.ports()[0].name
        error = yield self.assertFailure(
            service.changePort(name, {"protocol": "tcp"}), ConfigError
        )
        self.assertIn("not this port's protocol", str(error))

    @inlineCallbacks
    def test_reload(self):
        """
        A reload adds a UDP port beside a TCP port of the same number, and
        a second reload removes it.
        """
        wanted = ["127.0.0.1:0=echo"]

        def rebuild():
            return buildConfig(
                parsePorts(",".join(wanted)), Defaults(), HANDLERS, Path("/tmp/s")
            )

        service = liveService(self, wanted[0], rebuild)
        wanted.append("127.0.0.1:0/udp=echo")
        summary = yield service.reload()
        [added] = summary["added"]
        self.assertTrue(added.startswith("udp:127.0.0.1:"))
        port = [p for p in service.ports() if p.name == added][0]
        address = ("127.0.0.1", port.boundAddress().port)
        self.assertEqual((yield client(self).ask(b"r", address)), b"r")
        wanted.pop()
        summary = yield service.reload()
        self.assertEqual(summary["removed"], [added])
