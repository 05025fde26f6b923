"""
Tests for L{multiport.daemon.dump}: the SIGUSR2 table of counters.
"""

from __future__ import annotations

import os
import signal

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from multiport.config.model import PortConfig, TLSConfig
from multiport.daemon.dump import StatsDumpService, statsTable
from multiport.handlers.interface import PortStatus
from multiport.ports.counters import PortCounters


def status(name: str, handler: str, tls: bool, listening: bool) -> PortStatus:
    """
    A port's status with some figures.
    """
    counters = PortCounters(current=1, accepted=5, closed=4, bytesReceived=100)
    counters.bytesSent = 2048
    counters.reject("max_connections")
    interface, port = name[4:].rsplit(":", 1)
    config = PortConfig(
        interface=interface,
        port=int(port),
        handler=handler,
        tls=TLSConfig() if tls else None,
        backlog=50,
        options=None,
    )
    return PortStatus(name, config, listening, counters.snapshot(), {})


class ImmediateReactor:
    """
    Runs what is handed to callFromThread at once.
    """

    def callFromThread(self, f, *args):
        f(*args)


class StatsTableTests(SynchronousTestCase):
    """
    statsTable lays out every port's figures.
    """

    def test_table(self):
        """
        One header and one row per port, numbers right-aligned.
        """
        table = statsTable(
            [
                status("tcp:127.0.0.1:7000", "echo", False, True),
                status("tcp:0.0.0.0:8443", "https", True, False),
            ]
        )
        lines = table.splitlines()
        self.assertEqual(len(lines), 3)
        self.assertEqual(
            lines[0].split(),
            [
                "port",
                "handler",
                "state",
                "current",
                "accepted",
                "closed",
                "rejected",
                "received",
                "sent",
                "tls",
                "errors",
                "errors",
            ],
        )
        self.assertEqual(
            lines[1].split(),
            [
                "tcp:127.0.0.1:7000",
                "echo",
                "listening",
                "1",
                "5",
                "4",
                "1",
                "100",
                "2048",
                "0",
                "0",
            ],
        )
        self.assertEqual(
            lines[2].split()[:3], ["tcp:0.0.0.0:8443", "https+tls", "stopped"]
        )
        self.assertEqual(len(lines[1]), len(lines[2]))


class SignalTests(SynchronousTestCase):
    """
    SIGUSR2 writes the table to the log while the service runs.
    """

    def test_dumpOnSignal(self):
        """
        A SIGUSR2 logs the table; after stopService the old handler is back.
        """
        before = signal.getsignal(signal.SIGUSR2)
        service = StatsDumpService(
            lambda: [status("tcp:127.0.0.1:7000", "echo", False, True)],
            ImmediateReactor(),
        )
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        with capturedLogs() as events:
            os.kill(os.getpid(), signal.SIGUSR2)
        [event] = [e for e in events if "table" in e]
        self.assertIn("tcp:127.0.0.1:7000", event["table"])
        self.assertTrue(event["log_format"].startswith("port counters:"))
        service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGUSR2), before)
