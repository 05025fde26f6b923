"""
Signals as operators expect them (nginx's table): SIGTERM or SIGINT drains,
a second one stops at once; SIGUSR1 reopens the log file.

The daemon tests send real signals to a real C{twistd multiport}.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from multiport.signals import HurryOnSecondSignal
from tests.support import Daemon
from tests.test_livedaemon import connect, echoes

#: The drain timeout of the daemons here: far longer than a test may wait,
#: so a prompt exit can only come from the second signal.
LONG_DRAIN = 120
#: How long a daemon told to stop at once may take to exit.
PROMPTLY = 15.0


class FakeReactor:
    """
    What L{HurryOnSecondSignal} asks of a reactor: calls from the signal
    handler run at once, system event triggers are recorded.
    """

    def __init__(self) -> None:
        self.triggers: list[tuple[str, str, Any]] = []

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)

    def addSystemEventTrigger(self, phase: str, event: str, f: Any) -> None:
        self.triggers.append((phase, event, f))


class HurryOnSecondSignalTests(SynchronousTestCase):
    """
    The service takes SIGTERM and SIGINT over once stopping, and gives them
    back after the shutdown.
    """

    def setUp(self) -> None:
        self.calls: list[int] = []
        self.reactor = FakeReactor()
        self.service = HurryOnSecondSignal(self.calls.append, self.reactor)
        before = {n: signal.getsignal(n) for n in (signal.SIGTERM, signal.SIGINT)}
        self.addCleanup(lambda: [signal.signal(n, h) for n, h in before.items()])

    def test_notWhileRunning(self):
        """
        Starting changes no handler: the reactor's first SIGTERM stops it.
        """
        before = signal.getsignal(signal.SIGTERM)
        self.service.startService()
        self.assertIs(signal.getsignal(signal.SIGTERM), before)

    def test_secondSignal(self):
        """
        Once stopping, a real SIGTERM (then SIGINT) calls hurry with its
        number, on the reactor's thread.
        """
        self.service.startService()
        self.service.stopService()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        self.assertEqual(self.calls, [signal.SIGTERM, signal.SIGINT])

    def test_restoredAfterShutdown(self):
        """
        After the reactor's shutdown the handlers are the ones before.
        """
        before = signal.getsignal(signal.SIGINT)
        self.service.startService()
        self.service.stopService()
        self.assertIsNot(signal.getsignal(signal.SIGINT), before)
        [(phase, event, restore)] = self.reactor.triggers
        self.assertEqual((phase, event), ("after", "shutdown"))
        restore()
        self.assertIs(signal.getsignal(signal.SIGINT), before)


class SecondSignalDaemonTests(SynchronousTestCase):
    """
    A real daemon draining a connection for a long drain timeout stops at
    once on a second SIGTERM or SIGINT, without a traceback.
    """

    def daemon(self, *args: str) -> Daemon:
        folder = Path(self.mktemp()).absolute()
        folder.mkdir(parents=True)
        daemon = Daemon(
            [
                "--no-status",
                "--state-dir",
                str(folder / "state"),
                "--drain-timeout",
                str(LONG_DRAIN),
                "--ports",
                "127.0.0.1:0=echo",
                *args,
            ],
            str(folder),
        )
        self.addCleanup(daemon.stop)
        return daemon

    def stopTwice(self, daemon: Daemon, first: int, second: int) -> float:
        """
        With a connection open, send C{first}, wait for the drain, send
        C{second}; how long the daemon took to exit after it.
        """
        [(host, port)] = {a for a in daemon.listening(1).values()}
        client = connect(port)
        self.addCleanup(client.close)
        self.assertTrue(echoes(client, b"open"))
        daemon.process.send_signal(first)
        daemon.waitFor(r"draining 1 open connections?$")
        self.assertIsNone(daemon.process.poll())
        sent = time.monotonic()
        daemon.process.send_signal(second)
        daemon.process.wait(timeout=PROMPTLY)
        took = time.monotonic() - sent
        daemon.stop()
        self.assertTrue(closedByServer(client))
        return took

    def test_secondSIGTERM(self):
        """
        SIGTERM drains; the second SIGTERM closes the connection and the
        daemon exits well before the drain timeout, logging why.
        """
        daemon = self.daemon()
        took = self.stopTwice(daemon, signal.SIGTERM, signal.SIGTERM)
        self.assertLess(took, PROMPTLY)
        output = "".join(daemon.lines)
        self.assertIn(
            "SIGTERM again: closing 1 open connection now, without waiting for "
            "the drain",
            output,
        )
        self.assertIn(" closed drain after ", output)
        self.assertNotIn("Traceback", output)
        self.assertNotIn("ReactorNotRunning", output)
        self.assertIn("Server Shut Down", output)

    def test_SIGINTAfterSIGTERM(self):
        """
        SIGINT (Ctrl-C) while draining after a SIGTERM stops at once too.
        """
        daemon = self.daemon()
        took = self.stopTwice(daemon, signal.SIGTERM, signal.SIGINT)
        self.assertLess(took, PROMPTLY)
        output = "".join(daemon.lines)
        self.assertIn("SIGINT again: closing 1 open connection now", output)
        self.assertNotIn("Traceback", output)

    def test_workers(self):
        """
        With --workers 2 the second SIGTERM reaches the workers, which close
        their connections at once; the daemon exits promptly.
        """
        daemon = self.daemon("--workers", "2")
        [(host, port)] = {a for a in daemon.listening(1).values()}
        daemon.waitFor(r"worker \d \(pid \d+\) serving 1 ports?$", 2)
        clients = [connect(port) for _ in range(4)]
        for client in clients:
            self.addCleanup(client.close)
            self.assertTrue(echoes(client, b"open"))
        daemon.process.send_signal(signal.SIGTERM)
        daemon.waitFor(r"worker \d: draining \d open connections?$")
        self.assertIsNone(daemon.process.poll())
        daemon.process.send_signal(signal.SIGTERM)
        daemon.process.wait(timeout=PROMPTLY)
        daemon.stop()
        output = "".join(daemon.lines)
        self.assertIn("SIGTERM again: the workers close their connections now", output)
        self.assertEqual(output.count(" closed drain after "), 4)
        self.assertNotIn("Traceback", output)
        for client in clients:
            self.assertTrue(closedByServer(client))


def closedByServer(client: socket.socket) -> bool:
    """
    Whether the daemon closed C{client} (aborted: a reset, or an end of
    file), waiting at most L{PROMPTLY}.
    """
    client.settimeout(PROMPTLY)
    try:
        return client.recv(10) == b""
    except ConnectionResetError:
        return True
